"""Typing of mined ablation rows: which canonical feature changed, from what to what, on which metric.

``type_row`` turns a raw ``AblationRow`` (change text, delta, source) into a typed one. The order of the
rules (each documented below) decides the row's ``kind`` (``core.schema.ABLATION_KINDS``):

1. no delta, or |delta| > ``MAX_ABS_DELTA`` -> ``no_delta`` (a difference that large compares setups,
   not one change);
2. an overall claim (record bar, threshold, "net", "each seed beats") -> ``headline``;
3. the canonical features the text names (``map_change``; table rows also read their heading):
   none -> ``record_vs_base`` when it compares with a PR / SOTA / baseline, ``sweep_unmapped`` for a
   knob setting (``LR = 0.02``, a sweep table), ``fragment`` for a cut sentence, else ``unmapped``;
   several -> ``multi_feature`` (or ``record_vs_base`` when it is a comparison with another submission);
   one -> ``ablation``, unless it only resizes a present boolean feature (``BigramHash 2048->3072``:
   ``sweep_unmapped``) or a numeric feature's direction cannot be read (``no_direction``).

Direction: boolean features use the negation words ("no X", "without X", "remove X": -1). Numeric features
read ``from -> to`` from the text ("11L vs 9L", "QK_GAIN_INIT 4 -> 5", a table's reference row) and,
when only the new value is given ("MLP 3x"), take the naive baseline's value as ``from`` (said in ``note``).
"""
from __future__ import annotations

import dataclasses
import re

from scripts.causal.core.schema import BASELINE_FEATURES, AblationRow
from scripts.causal.extract.knobs import OTHER_LR, knob_setting, record_aliases
from scripts.causal.extract.values import NUM as _NUM
from scripts.causal.extract.values import numeric_from_to

MAX_ABS_DELTA = 0.1

# Keywords for features the shared prose rules (features_from_prose) do not cover: numeric / categorical knobs.
_EXTRA_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("activation", r"leaky|relu|gelu|silu|swiglu|activation"),
    ("num_layers", r"\b\d{1,2}\s?l\b|\b\d{1,2}[\s-]layers?\b|\b\d{1,2}(?:st|nd|rd|th) layer\b|\bnum[_ ]layers\b|\bdepth\b(?![\s-]*recur)|"
                   r"\b(?:more|fewer|extra|deeper|shallower)\s+layers?\b"),
    ("model_dim", r"model[\s_-]?dim|\bwidth\b|\bd_?model\b|\bdim\s?\d{3}"),
    ("mlp_mult", r"mlp[\s_-]?(?:mult|\dx|x\d|ratio|expansion)|\d(?:\.\d)?x mlp"),
    ("vocab_size", r"vocab|tokeni[sz]er|sp\d{3,5}"),
    ("train_seq_len", r"seq(?:uence)?[\s_-]?len|context length|seq\d{3,4}"),
    ("logit_softcap", r"soft[\s_-]?cap"),
    ("qk_gain", r"qk[\s_-]?gain|qk[\s_-]?norm"),
    ("quant_bits", r"\bint\d\b|\d[\s-]?bit|quant(?:i[sz]ation)? bits"),
    ("gptq", r"gptq"),
    ("compression", r"zstd|lzma|brotli|zlib|compress"),
    ("warmdown_iters", r"warm[\s_-]?down"),
    ("tied_embeddings", r"tied|untied|tie[\s_-]embed"),
    # an eval stride ("stride 16 eval", "Stride (chunk=256)"); a data loader's stride ("coprime-stride data loader")
    # is none
    ("sliding_window_eval", r"\bstride\b(?![\s-]*(?:data|loader|sampl\w*|shard\w*|batch\w*)\b)"),
    ("swa", r"\bswa_"),
)
_EMBED_WIDTH = re.compile(r"\b(?:int|fp)\d{1,2}\b[^.,;\n]{0,12}\bembed\w*|"
                          r"\bembed\w*[^.,;\n]{0,12}\b(?:int|fp)\d{1,2}\b|\bembed\w*[\s_-]bits\b", re.I)
# the model or stack a change was measured on ("on that same int6 model", "on the PR #1874 base", "On looped:")
ON_STACK = re.compile(r"\b(?:on|to)\s+(?:the|that|this|our|its|a)\s+(?:same\s+)?[\w#.\-]*(?:\s+[\w#.\-]+){0,3}?\s*"
                      r"\b(?:model|stack|base|baseline|config(?:uration)?|architecture|setup)\b|"
                      r"^\W*on\s+[^:.\n]{1,30}:", re.I)   # "On looped: +0.0017 worse": a label of the stack
_WHERE_LAYERS = re.compile(r"\b(?:the\s+)?(?:last|first|top|bottom|final|middle|deepest)\s+\d{1,2}"
                           r"(?:\s+of\s+(?:the\s+)?\d{1,2})?\s+(?:layers?|blocks?)\b", re.I)
# "XSA applied to all blocks", "XSA-all": a scope of a feature the stack may already have on some layers
_SCOPE_ALL = re.compile(r"\b(?:all|every)\s+(?:(?:the|\d{1,2})\s+)?(?:layers?|blocks?)\b|\b[a-z]+[-_]all\b", re.I)
_EXTRA_RES = [(f, re.compile(p, re.I)) for f, p in _EXTRA_KEYWORDS]
_NEGATE = re.compile(r"^\s*(?:-\s|no\b|without\b|w/o\b|remov|disabl|drop)|\b(?:off|disabled|removed)\W*$", re.I)
_LABEL = re.compile(r"^\s*(?:no|without)\b[^:.]{0,25}:", re.I)  # "No EMA: EMA still hurts by ..." labels a bullet

_HEADLINE = re.compile(r"threshold\W+\d|record bar|(?<!-)\bnet\b(?! ?effect of)|each (?:individual )?seed|mean improvement|"
                       r"^(?:improvement|results?)\s*(?:[:(]|$)|overall|\bsubmission\b|total\b", re.I)
# a comparison with another submission: strong phrases make the row a record-level comparison whatever it
# names; a weak "vs baseline" keeps a one-feature row an ablation measured against that base
_VS_STRONG = re.compile(r"over (?:the )?(?:then |current |merged |naive |previous )?(?:sota|baseline|leaderboard|pr\b|\[?pr ?#|"
                        r"best|record|entry)|\bvs\.?\s*\[?pr\s*#|"
                        r"\bbeats?\b|changes from|this (?:run|pr|submission)|\(this pr\)|"
                        r"^\W*(?:\[?pr ?)?#\d+\W*(?:\(this pr\))?\W*$|^\W*(?:this|ours?)\W*$|^\W*delta\b|"
                        r"leaderboard|\bsota\b|whole record|where this sits|delta vs|this vs base|summary row", re.I)
_VS_BASE = re.compile(r"\bvs\.?\s*(?:\[?pr|#|merged|current|the\b|naive|baseline|sota|leaderboard)|naive baseline|"
                      + _VS_STRONG.pattern, re.I)
# a row labelled by a metric ("bpb", "bpb (sliding window)") compares the table's columns, not one change
_METRIC_LABEL = re.compile(r"^\W*(?:val[_ ]?)?(?:bpb|bpp|loss|score|val_bpb|val_loss|nats?)\W*(?:\([^)]*\))?\W*$", re.I)
_SETTING = re.compile(r"^\W*[\w ]{1,30}?\s*[=:]\s*[\d.]+\s*%?\W*$|\d+\s*%")
_KNOB_FIRST = re.compile(r"^\W*(?:lower|higher|reduc\w*|increas\w*|tuned?)?\s*(?:learning[\s_-]?rates?|lr\b|"
                         r"momentum|batch|grad)", re.I)
_KNOB = re.compile(r"\b(?:lr|learning[\s_-]?rate|matrix_lr|scalar_lr|momentum|batch(?:[\s_-]?size)?|wd|weight[\s_-]?"
                   r"decay|beta\d?|grad(?:ient)?[\s_-]?clip|lambda|chunk|group[\s_-]?size|rlw|ns|steps?|"
                   r"start|decay|temperature|frac\w*|ratio|alpha|eps|freeze|epochs?|rank)\b\s*(?:=|:|\d)", re.I)
_UP = re.compile(r"\b(?:rais\w*|increas\w*|longer|more|larger|bigger|wider|deeper|higher|extra|add(?:ed|ing)? "
                 r"(?:a |an |one |two )?(?:layer|block)s?)\b", re.I)
_DOWN = re.compile(r"\b(?:lower\w*|reduc\w*|decreas\w*|shorter|fewer|less|smaller|narrower|shallower|"
                   r"remov\w* (?:a |one |two )?(?:layer|block)s?)\b", re.I)
_KEY_VALUE_TEXT = re.compile(r"[A-Za-z][\w]*\s*=\s*-?[\d.]+")
# the score a row is measured on ("post-TTT", "pre-quant") names no change: stripped before features are read
_METRIC_WORDS = re.compile(r"\b(?:post|pre)[\s_-]?(?:ttt|quant\w*|ema)\b|\bbp[bp]\b", re.I)
NUMERIC_FEATURES = tuple(f for f, v in BASELINE_FEATURES.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool))
CATEGORICAL_FEATURES = tuple(f for f, v in BASELINE_FEATURES.items() if isinstance(v, str))


def map_change(change: str) -> tuple[list[str], int]:
    """Canonical features named by an ablation's free-text ``change`` and its sign (+1 add, -1 remove)."""
    from scripts.causal.extract.features import features_from_prose

    change = _WHERE_LAYERS.sub(" ", change)  # "XSA on the last 4 layers" says where XSA goes, not a depth
    change = ON_STACK.sub(" ", change)       # "on that same int6 model" says what was measured, not a change
    feats: list[str] = [k for k in features_from_prose(change)]
    for f, rx in _EXTRA_RES:
        if f not in feats and rx.search(change):
            feats.append(f)
    for specific, general in (("lora_ttt", "ttt"), ("muoneq_r", "muon"), ("fp16_embed", "tied_embeddings")):
        if specific in feats and general in feats and not re.search(r"\buntie|\btying\b", change, re.I):
            feats.remove(general)   # the specific one names the change ("fp16 tied embedding" is fp16_embed)
    if "quant_bits" in feats and _EMBED_WIDTH.search(change):  # "int7 vs int8 embeddings": the embedding's width,
        feats.remove("quant_bits")                              # not the model's quant_bits
    return feats, (-1 if _NEGATE.search(change) and not _LABEL.match(change) else 1)


def metric_of(text: str) -> str:
    """The score a row's text / heading / column names (``ABLATION_METRICS``), else ``unknown``."""
    t = text.lower()
    if re.search(r"pre[\s_-]?quant|prequant|\bfp32\b|\bbf16\b|pre[\s_-]?ema|before quant", t):
        return "pre_quant"
    if re.search(r"post[\s_-]?ttt|\bttt\b|test[\s-]time",
                 re.sub(r"\b(?:no|pre|non|without|before)[\s_-]?ttt\b", " ", t)):   # "sliding no-TTT": before TTT
        return "post_ttt"
    if re.search(r"sliding|stride", t):
        return "sliding"
    if re.search(r"post[\s_-]?quant|int[4-8]|roundtrip|quantized|\bgptq\b|compressed", t):
        return "post_quant"
    return "unknown"


def seeds_of(text: str) -> int | None:
    """Seeds a row states: "3-seed mean", "(5 seeds)", "same seed" (1); None when not stated."""
    m = re.search(r"(\d{1,2})[\s-]?seeds?\b", text, re.I)
    if m:
        return int(m.group(1))
    if re.search(r"same seed|single seed|one seed|1 seed", text, re.I):
        return 1
    return None


_HEADING_VALUE = re.compile(rf"^\W*([A-Za-z][\w -]*?)\s*\(\s*({_NUM})\s*\)\W*$")
# the compared setting; a score ("vs 1.2963", "vs 1.38 bpb") is no setting
_VS_OTHER = re.compile(rf"\b(?:vs\.?|versus|instead of|compared (?:to|with))\s+(?:the\s+)?(?![0-4]\.\d{{3}})({_NUM})"
                       rf"(?![\w.])(?!\s*(?:bp[bp]|nats?|loss)\b)", re.I)


def heading_setting(heading: str, text: str, aliases: dict[str, str] | None = None
                    ) -> tuple[str, object, object] | None:
    """(knob, from, to) of a row under a heading that states one setting, "BigramHash(10240)", when the row
    compares it with one other value and names no change itself ("reduces collisions vs 4096 buckets"): the knob
    as ``knobs.knob_setting`` reads "BigramHash 10240 vs 4096". None for anything else."""
    m, others = _HEADING_VALUE.match(heading or ""), _VS_OTHER.findall(text)
    if not m or len(others) != 1:
        return None
    setting = knob_setting(f"{m.group(1)} {m.group(2)} vs {others[0]}", aliases=aliases)
    if setting is None or setting[1] == setting[2]:
        return None
    from scripts.causal.screen.registry import FIELD_FEATURE

    knob, frm, to = setting
    return (FIELD_FEATURE[knob] if FIELD_FEATURE.get(knob) in NUMERIC_FEATURES else knob), frm, to


_ITEMS = re.compile(r"\s+(?:and|plus|&)\s+|\s\+\s|;\s*|,\s+")
_RUN_ID = re.compile(r"^\W*[A-Za-z]{1,3}[-_]?\d{1,3}[a-z]?\b\s*\+?\s*")
_NOT_SETTING = re.compile(r"\bseeds?\b|\bsteps?\b|\bh100\b|\bgpus?\b|\bmin(?:utes)?\b|\bms\b|\bmb\b|\bbytes\b|"
                          r"\bsame\b|\bruns?\b", re.I)


def changes_named(label: str) -> list[str]:
    """The items of a row label that each name a change: "+ EMA 0.997 + warmdown 1200 -> 2400" and "Muon WD 0.04
    -> 0.085 and embedding WD 0.085" name two; "QK_GAIN_INIT 4.0 -> 5.0, seed 42" names one (a seed, a step
    count or a GPU is no change). Parentheses and a leading run id ("E3 +") are left out."""
    text = _RUN_ID.sub("", re.sub(r"\([^)]*\)", " ", label or "")).strip().lstrip("+").strip()
    out = []
    for item in _ITEMS.split(text):
        item = item.strip(" +")
        if not item or _NOT_SETTING.search(item):
            continue
        if knob_setting(item) or map_change(item)[0] or re.search(r"[A-Za-z]{2,}\W*\d|\d\W*[A-Za-z]{2,}", item):
            out.append(item)
    return out


_KNOB_WORD = re.compile(r"\b(?:lrs?|learning[\s_-]?rates?|momentum|batch\w*|wd|weight[\s_-]?decay|betas?\d?|clip\w*|"
                        r"lambda|chunks?|ranks?|epochs?|steps?|decay|temperature|frac\w*|ratio|alpha|eps|freeze|"
                        r"schedules?|warmup|sizes?|width|depth|init\w*|layers?)\b", re.I)
_NOT_TECHNIQUE = re.compile(r"[:,;]|\b(?:seeds?|notes?|results?|ablations?|sweeps?|comparisons?|findings?|summary|"
                            r"details?|overview|what|why|how|tried|failed|negative|experiments?|single|other|key)\b",
                            re.I)


def technique_heading(heading: str) -> str | None:
    """The one on/off or categorical feature a section heading names as its subject ("### SmearGate", "### 9.
    LeakyReLU(0.5)²", "### Score-first TTT"), else None: a heading of a list or a study ("Notes", "Single
    comparisons (seed 42)"), one naming a knob or a score, one with a setting of a numeric feature, or one of
    more than four words names no single technique."""
    h = re.sub(r"^\W*\d+[.)]\s*", "", heading or "")
    core = re.sub(r"\([^)]*\)", " ", h)
    if not core.strip() or _NOT_TECHNIQUE.search(h) or len(core.split()) > 4 or _KNOB_WORD.search(core) \
            or _METRIC_WORDS.search(core) or re.search(r"->|→|\bvs\b|\+", h):
        return None
    feats = map_change(h)[0]
    if len(feats) != 1 or feats[0] in NUMERIC_FEATURES:
        return None
    if feats[0] not in CATEGORICAL_FEATURES and re.search(r"\(\s*\d", h):   # "BigramHash(10240)": a setting
        return None
    return feats[0]


def _one(feats: list[str]) -> str | None:
    return feats[0] if len(feats) == 1 else None


def _is_fragment(text: str) -> bool:
    t = text.strip()
    return len(t.split()) < 2 or bool(re.match(r"^[a-z,;)]", t))


def type_row(row: AblationRow, *, record_id: str | None = None, base: str | None = None,
             n_seeds: int | None = None, heading: str = "", aliases: dict[str, str] | None = None) -> AblationRow:
    """The typed twin of ``row`` (see the module docstring for the rules; ``aliases``: the record's own names for
    knobs, ``knobs.record_aliases``). Pure."""
    text = f"{row.change} {row.context}".strip()
    context = f"{text} {heading}"
    src = row.source.lower()
    source_kind = "table" if "table" in src else "log" if src.startswith("log") else "prose"
    seeds = seeds_of(context)
    if seeds is None:
        seeds = row.n_seeds if row.n_seeds is not None else (
            n_seeds if source_kind == "table" and _VS_BASE.search(text) else None)
    common = dict(record_id=record_id, base=base, source_kind=source_kind, n_seeds=seeds,
                  metric=metric_of(f"{context} {row.source}"))

    def out(kind: str, note: str, **kw) -> AblationRow:
        return dataclasses.replace(row, kind=kind, note=note, **{**common, **kw})

    if row.delta_bpb is None:
        return out("no_delta", "no bpb delta (nats without a bpb ratio)")
    if abs(row.delta_bpb) > MAX_ABS_DELTA:
        return out("no_delta", f"|delta| > {MAX_ABS_DELTA}: compares different setups")
    if _METRIC_LABEL.match(text) or re.search(r"this vs base|summary row", src):
        return out("record_vs_base", "a score row of a this-vs-base table: the whole record against its base")
    if _VS_STRONG.search(text) and not map_change(text)[0]:
        return out("record_vs_base", "the record against its base or another submission")
    if re.search(r"threshold\W+\d|record bar", text, re.I):
        return out("headline", "an overall claim of the record against the record bar, not an ablation")
    if _HEADLINE.search(text) and not re.search(r"^\s*\+", text):
        return out("headline", "an overall claim of the record, not an ablation")
    if len(_KEY_VALUE_TEXT.findall(row.change)) >= 2:  # "Trimmed GPTQ (reserve=4s, calib=16)": several settings
        return out("multi_feature", "sets several knobs at once (KEY=VALUE twice or more)")
    if aliases and OTHER_LR.search(f"{heading} {row.change} {row.reference or ''}"):
        aliases = None   # "| LR |" under "TTT sweep": not the record's training LR
    # "TTT (+ EMA decay 0.997 -> 0.998: Pre-TTT bpb -> Post-TTT bpb)": one row scored two ways; its label's setting
    # is the row's stack, not the change
    staged = re.search(r"\((?:metric pair|mean row|column pair)\)", row.source) is not None
    setting = None if staged else knob_setting(row.change, row.reference, aliases=aliases)
    if setting is not None and len(changes_named(row.change)) > 1:
        return out("multi_feature", f"sets {setting[0]} and changes something else in the same row "
                                    f"({'; '.join(changes_named(row.change))})", features=(setting[0],))
    if setting is not None:
        knob, frm, to = setting
        from scripts.causal.screen.registry import FIELD_FEATURE

        if FIELD_FEATURE.get(knob) in NUMERIC_FEATURES:  # a field that sets a numeric canonical feature
            knob = FIELD_FEATURE[knob]                   # (qk_gain_init -> qk_gain): typed with the canonical name
        if frm is not None and frm != to:
            return out("ablation", f"a setting of {knob}: {frm} -> {to}", features=(knob,), from_value=frm,
                       to_value=to, direction=1 if to > frm else -1)
        # "Sliding window evaluation (stride=64)": the words name the feature the setting belongs to; a bare
        # "+ bigram=8192" names none, and "reducing momentum to 0.80 ... STE" names another: no claim
        named_feats = map_change(_KEY_VALUE_TEXT.sub(" ", row.change))[0]
        if not named_feats or any(f not in (knob, FIELD_FEATURE.get(knob)) for f in named_feats):
            return out("sweep_unmapped", f"sets {knob} to {to}, but the row does not say from what", features=(knob,))
        text = _KEY_VALUE_TEXT.sub(" ", text)
    elif _KEY_VALUE_TEXT.search(row.change) and not map_change(_KEY_VALUE_TEXT.sub(" ", row.change))[0]:
        key = re.sub(r"\s*=.*$", "", _KEY_VALUE_TEXT.search(row.change).group(0))
        words = key.replace("_", " ")   # "EMA" names EMA; "SWA_start_frac" a knob of SWA
        if not (row.change.lstrip().startswith("+") and BASELINE_FEATURES.get(_one(map_change(key)[0])) is False
                and not _KNOB_WORD.search(words) and not re.search(r"\b(?:start|end|every|freq\w*)\b", words, re.I)):
            return out("sweep_unmapped", "sets a knob outside the trainer's vocabulary (KEY=VALUE with an unknown key)")
        text = text.replace("=", " ")   # "+ EMA=0.997": adds EMA (at its setting), read as "+ EMA 0.997"
    if _KNOB_FIRST.search(text):
        return out("sweep_unmapped", "a knob with no canonical feature (no registry mapping)")
    if staged:   # "sliding window eval (Int6 roundtrip -> ...)": the parenthesis names the two scores and the row
        text = text.split(" (", 1)[0]   # scored, not a change
    named = text
    feats, sign = map_change(_METRIC_WORDS.sub(" ", named))
    feats, sign, part = _refine(feats, sign, named, row.change)
    if part:   # "Untying the MLPs of the looped layers": the change is to a part of the feature, not the feature
        return out("unmapped", f"changes a part of {feats[0]} ('{part}'), not {feats[0]} itself", features=tuple(feats))
    from_heading = False
    if not feats and heading:
        feats, _ = map_change(heading)
        from_heading = len(feats) == 1
        if len(feats) != 1:
            feats = []
    vs_base = _VS_BASE.search(text) is not None
    if feats and _VS_STRONG.search(text):
        return out("record_vs_base", f"the record against another submission; names {feats}", features=tuple(feats))
    if from_heading:
        setting = heading_setting(heading, text, aliases)
        if setting is not None:
            knob, frm, to = setting
            return out("ablation", f"the heading sets {knob} to {to}; the row compares it with {frm}",
                       features=(knob,), from_value=frm, to_value=to, direction=1 if to > frm else -1)
        # (a row that varies the technique, "Gaussian noise instead of uniform", "on the embedding as well", is
        # not the technique)
        if source_kind == "prose" and technique_heading(heading) == feats[0] and not _VARIANT.search(row.change):
            from scripts.causal.extract.features import features_from_prose

            note = (f"a section on one technique ('{heading}'): the row, which names no change itself, measures "
                    f"{feats[0]} on the record's stack")
            if feats[0] in CATEGORICAL_FEATURES:
                level = features_from_prose(heading).get(feats[0], (None,))[0]
                if level is not None:
                    return out("ablation", note, features=tuple(feats), from_value=None, to_value=level, direction=1)
            elif BASELINE_FEATURES.get(feats[0]) is False:
                on = map_change(text)[1] > 0   # "Row normalization before Newton-Schulz off": the row removes it
                return out("ablation", note, features=tuple(feats), from_value=not on, to_value=on,
                           direction=1 if on else -1)
        return out("unmapped", f"the row names no change itself (its table heading names {feats[0]})",
                   features=tuple(feats))
    if not feats:
        if _SETTING.search(text):
            return out("sweep_unmapped", "a knob setting with no canonical feature (no registry mapping)")
        if vs_base:
            return out("record_vs_base", "the record against its base or another submission")
        if _KNOB.search(context) or re.search(r"sweep", heading, re.I):
            return out("sweep_unmapped", "a knob with no canonical feature (no registry mapping)")
        if _is_fragment(text):
            return out("fragment", "a sentence fragment that names no change")
        return out("unmapped", "names no canonical feature")
    if len(feats) > 1:
        if vs_base:
            return out("record_vs_base", f"the record against its base; changes {feats}", features=tuple(feats))
        return out("multi_feature", f"several features changed together: {feats}", features=tuple(feats))
    feat = feats[0]
    note = f"measured against {'the base named in the text' if vs_base else 'the row it follows'}"
    if feat in NUMERIC_FEATURES:
        frm, to, how = numeric_from_to(feat, text, row.reference)
        if to is None:
            up, down = _UP.search(text), _DOWN.search(text)
            if bool(up) != bool(down):
                return out("ablation", f"{note}; direction from '{(up or down).group(0)}', no values given",
                           features=(feat,), direction=1 if up else -1)
            return out("no_direction", f"{feat} changed but the text gives no value or direction", features=(feat,))
        if frm is None:
            frm = float(BASELINE_FEATURES[feat])
            how = "from assumed: the naive baseline's value"
        if frm == to:
            return out("no_direction", f"{feat} {frm:g} -> {to:g}: no change", features=(feat,))
        return out("ablation", f"{note}; {how}", features=(feat,), from_value=frm, to_value=to,
                   direction=1 if to > frm else -1)
    from scripts.causal.extract.features import features_from_prose

    levels = _levels(feat, re.split(r"\s*(?:->|→|=>)\s*", row.change, maxsplit=1))   # "relu² → leaky": from, to
    if levels is not None:
        return out("ablation", f"{note}; level '{levels[0]}' -> '{levels[1]}'", features=(feat,),
                   from_value=levels[0], to_value=levels[1], direction=1)
    sides = _AB_SPLIT.split(re.sub(r"\([^)]*\)", " ", text), maxsplit=1)
    if len(sides) == 2 and re.match(r"\W*\d", sides[1]) and BASELINE_FEATURES.get(feat) is False:
        return out("sweep_unmapped", f"sets how {feat} applies ('... instead of {sides[1].split()[0]}'), not whether",
                   features=(feat,))   # "Parallel residuals from layer 5 instead of 7"
    if len(sides) == 2:   # "A vs B": which side names the feature, and which side switches it off
        names_it = [feat in map_change(side)[0] for side in sides]
        levels = _levels(feat, sides[::-1])   # "LeakyReLU² instead of relu²": B is the from
        if levels is not None:
            return out("ablation", f"{note}; level '{levels[0]}' -> '{levels[1]}' (A vs B)", features=(feat,),
                       from_value=levels[0], to_value=levels[1], direction=1)
        if all(names_it) and not any(_OFF_WORDS.search(side) for side in sides):
            return out("unmapped", f"two variants of {feat} ('{_clean_ab(sides[0])}' vs '{_clean_ab(sides[1])}'), "
                                   "not with against without", features=(feat,))
        off = [bool(_OFF_WORDS.search(side)) for side in sides]
        if off[0] != off[1]:
            on = not off[0]
            return out("ablation", f"{note}; '{'on' if on else 'off'}' against '{'off' if on else 'on'}'",
                       features=(feat,), from_value=not on, to_value=on, direction=1 if on else -1)
    val = next((v for v in (features_from_prose(t).get(feat, (None,))[0] for t in (row.change, text)) if v is not None),
               None)   # the change's own words first: "..., dropped" after the figure is the author's decision
    if val is None and heading:
        val = features_from_prose(heading).get(feat, (None,))[0]
    if feat in CATEGORICAL_FEATURES:
        if re.search(rf"({_NUM})(?:\s+[\w-]+){{0,4}}\s*(?:->|→|\bto\b)\s*({_NUM})", text):
            # "GPTQ calibration: 64 seqs -> 128": a number of the feature's recipe, not its level
            return out("sweep_unmapped", f"a numeric knob of {feat}, not its level", features=(feat,))
        return out("ablation", note, features=(feat,), to_value=val, from_value=None, direction=1)
    sizes = re.search(rf"({_NUM})\s*(?:->|→|to)\s*({_NUM})", text)
    if sizes and sign > 0 and val is not False:
        return out("sweep_unmapped", f"resizes {feat} ({sizes.group(0)}), does not add or remove it",
                   features=(feat,))
    if _KNOB.search(re.sub(r"\([^)]*\)", "", text)) or _KNOB_NAME.search(row.change):
        return out("sweep_unmapped", f"a knob of {feat} with no registry mapping", features=(feat,))
    if _WAS.search(text) and sign > 0 and val is not False:   # "+ loop layers 3-5 (was 4-5)": the stack had it
        return out("sweep_unmapped", f"changes how {feat} is set ('{_WAS.search(text).group(0)}'), not whether",
                   features=(feat,))
    if BASELINE_FEATURES.get(feat) is True and sign > 0 and val is not False:
        return out("unmapped", f"a variant of {feat}, which the baseline already has", features=(feat,))
    if _LABEL.match(text):
        return out("ablation", f"{note}; a 'No {feat}:' label, the sentence gives the effect of {feat} itself",
                   features=(feat,), from_value=False, to_value=True, direction=1)
    if val is False or sign < 0:
        return out("ablation", f"{note}; removes {feat}", features=(feat,), from_value=True, to_value=False,
                   direction=-1)
    if _SCOPE_ALL.search(text):
        return out("sweep_unmapped", f"sets where {feat} applies (all layers), not whether: its previous scope is "
                                     "not stated", features=(feat,))
    return out("ablation", note, features=(feat,), from_value=False, to_value=True, direction=1)


# "the MLPs of the looped layers" (not "the addition of the ...", "the effect of the ...")
_PART_OF = re.compile(r"\b(?:the\s+)?(?!(?:addition|use|usage|removal|introduction|inclusion|effect|impact|benefit|"
                      r"cost|gain|adoption|enabling|disabling|swap|rest|end|start|top)\b)[a-z]\w+\s+(?:of|in|inside)\s+"
                      r"the\s+\w+", re.I)
_VARIANT = re.compile(r"\b(?:instead of|rather than|as well|too|also|variant|replac\w*|in place of)\b", re.I)
_WAS = re.compile(r"\(\s*(?:was|previously|formerly|from|before:?|replac\w*|instead of)\s+[^)]{1,30}\)", re.I)
# a knob of a feature named by its label ("EMA decay", "Muon WD", "XSA scale"): a setting, not the feature
_KNOB_NAME = re.compile(r"\b(?:decay|rate|lr|momentum|beta\d?|frac\w*|rank|dim|size|temperature|init\w*|start|scale|"
                        r"threshold|lambda|alpha|wd)\W*$", re.I)
_AB_SPLIT = re.compile(r"\s+(?:vs\.?|versus|instead of|compared (?:to|with)|against)\s+", re.I)
_OFF_WORDS = re.compile(r"\b(?:off|no|without|w/o|disabled?|none|removed)\b", re.I)


def _clean_ab(side: str) -> str:
    return " ".join(side.split())[:40]


def _levels(feat: str, sides: list[str]) -> tuple[str, str] | None:
    """(from, to) levels of a categorical feature that ``sides`` (from side, to side) each name, when they differ."""
    from scripts.causal.extract.features import features_from_prose

    if feat not in CATEGORICAL_FEATURES or len(sides) != 2:
        return None
    a, b = (features_from_prose(side).get(feat, (None,))[0] for side in sides)
    return (a, b) if isinstance(a, str) and isinstance(b, str) and a != b else None


def _refine(feats: list[str], sign: int, text: str, change: str) -> tuple[list[str], int, str | None]:
    """``map_change``'s reading of a row, refined: a width in parentheses ("(VE dim 128)", "(full 512-dim input)") is
    the named part's, not ``model_dim``; the sign comes from the change's own words when they name the same
    features; and the words of a change to a part of the one feature ("the MLPs of the looped layers"), or None."""
    if len(feats) > 1 and "model_dim" in feats:
        outside = map_change(_METRIC_WORDS.sub(" ", re.sub(r"\((?!also differs)[^)]*\)", " ", text)))[0]
        if outside and "model_dim" not in outside and set(outside) <= set(feats):
            feats = [f for f in feats if f != "model_dim"]
    own, own_sign = map_change(_METRIC_WORDS.sub(" ", change))
    if own == feats:
        sign = own_sign
    part = _PART_OF.search(change)
    if len(feats) == 1 and part and not map_change(change[:part.start()])[0]:
        return feats, sign, part.group(0).strip()
    return feats, sign, None


def heading_of(source: str) -> str:
    """The table heading or prose section inside a row's ``source`` ("README table 'Ablations' (...)" -> "Ablations")."""
    m = re.search(r"(?:table|section) '([^']*)'", source or "")
    return m.group(1) if m else ""


def type_rows(rows, *, record_id: str | None = None, base: str | None = None,
              n_seeds: int | None = None, text: str = "") -> tuple[AblationRow, ...]:
    """``type_row`` over a record's rows (raw dicts or ``AblationRow``), heading read from each source, then the
    right-or-silent checks of ``extract.row_gates`` (``text``: the record's README, for its record-level rules)."""
    from scripts.causal.extract.row_gates import gate_record

    aliases = record_aliases(text)
    out = []
    for r in rows:
        row = r if isinstance(r, AblationRow) else AblationRow.from_dict(r)
        out.append(type_row(row, record_id=record_id, base=base, n_seeds=n_seeds, heading=heading_of(row.source),
                            aliases=aliases))
    return gate_record(out, text=text)
