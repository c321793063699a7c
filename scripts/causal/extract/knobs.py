"""Knob settings in an ablation row's words: ``KEY=VALUE`` with a trainer's env name, or "knob a -> b".

The vocabulary is the trainer's own: every ``train_gpt.Hyperparameters`` field (its env name is the field in upper
case: ``MATRIX_LR=0.02``) and every numeric canonical feature, plus the plain-English names records use for them
(``PROSE_NAMES``: "weight decay" -> ``muon_wd``, "BigramHash buckets" -> ``bigram_buckets``, "warmdown" ->
``warmdown_iters``). A key outside the vocabulary ("Outer Layers = 2", "SWA_start_frac=0.4") is no knob: such a
row stays unmapped rather than being guessed onto a near name.

``knob_setting(text, reference)`` returns ``(knob, from, to)``: ``to`` from the row, ``from`` from an explicit
"a -> b" / "b vs a" / "from a to b" ("raised the warmdown from 3000 to 3500", "reducing momentum to 0.80" has none), else from
the same key in the reference row's label; None when the row sets no knob of the vocabulary. XSA's layer scope
between two stated ones ("last 4 -> all 11 layers") is ``xsa_last_n``. ``trainer_default_reference`` gives a "+ KEY=v"
row of a stack that starts from the trainer's defaults its old value; ``knobs_set_in`` names the knobs a note sets.
"""
from __future__ import annotations

import dataclasses
import functools
import re

from scripts.causal.core.schema import BASELINE_FEATURES

__all__ = ["NOT_A_CHANGE", "OTHER_LR", "PROSE_NAMES", "knob_setting", "knob_names", "knobs_set_in", "record_aliases",
           "trainer_default_reference"]

_NUM = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
#: Plain-English names of knobs (lower case, as a regex) -> the trainer field or canonical feature.
PROSE_NAMES: tuple[tuple[str, str], ...] = (
    (r"matrix[\s_]?lr", "matrix_lr"), (r"scalar[\s_]?lr", "scalar_lr"), (r"(?:tied[\s_])?embed(?:ding)?[\s_]?lr",
                                                                           "tied_embed_lr"),
    (r"muon[\s_]?momentum|momentum", "muon_momentum"), (r"(?:muon[\s_]?)?(?:weight[\s_]?decay|wd)", "muon_wd"),
    (r"warm[\s_-]?down(?:[\s_]iters)?", "warmdown_iters"), (r"warm[\s_-]?up(?:[\s_]steps)?", "warmup_steps"),
    (r"bigram(?:[\s_]?hash)?(?:[\s_]?(?:buckets|vocab(?:[\s_]size)?))?|buckets", "bigram_buckets"),
    (r"qk[\s_]?gain(?:[\s_]init)?", "qk_gain"), (r"(?:logit[\s_]?)?soft[\s_-]?cap", "logit_softcap"),
    (r"(?:eval[\s_]?)?stride", "eval_stride"), (r"mtp[\s_]?heads", "mtp_heads"),
    (r"(?:num[\s_]?)?layers", "num_layers"), (r"mlp[\s_]?(?:mult|ratio|expansion)?", "mlp_mult"),
    (r"model[\s_]?dim|d[\s_]?model", "model_dim"), (r"(?:train[\s_]?)?seq(?:uence)?[\s_]?len(?:gth)?", "train_seq_len"),
    (r"grad(?:ient)?[\s_]?clip(?:[\s_]norm)?", "grad_clip_norm"), (r"ema[\s_]?decay", "ema_decay"),
    (r"(?:train(?:ing)?[\s_]?)?batch(?:[\s_]?(?:tokens|size))?", "train_batch_tokens"), (r"ttt[\s_]?lr", "ttt_lr"),
    (r"ttt[\s_]?epochs", "ttt_epochs"),
    (r"(?:ttt[\s_]?)?lora[\s_]?rank", "ttt_lora_rank"),
    (r"ttt[\s_]?chunk(?:[\s_]?(?:size|tokens))?", "ttt_chunk_tokens"), (r"rope[\s_]?base", "rope_base"),
    (r"(?:muon[\s_]?)?(?:ns|newton[\s_-]?schulz)[\s_]?(?:backend[\s_]?)?(?:steps?|iter(?:ation)?s)(?:[\s_]count)?",
     "muon_backend_steps"),
)


@functools.lru_cache(maxsize=1)
def knob_names() -> frozenset[str]:
    """Every trainer field and numeric canonical feature (lower case)."""
    import train_gpt as tg

    numeric = {f for f, v in BASELINE_FEATURES.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return frozenset({f.name for f in dataclasses.fields(tg.Hyperparameters)} | numeric)


def _knob(name: str, aliases: dict[str, str] | None = None) -> str | None:
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    if key in knob_names():
        return key
    if aliases and key in aliases:
        return aliases[key]
    for rx, knob in PROSE_NAMES:
        if re.fullmatch(rx, name.strip().lower()):
            return knob
    return None


def _tail_knob(phrase: str, aliases: dict[str, str] | None = None) -> str | None:
    """The knob the longest tail of ``phrase``'s words names ("raised the warmdown" -> ``warmdown_iters``), else None."""
    words = phrase.split()
    return next((k for k in (_knob(" ".join(words[i:]), aliases) for i in range(len(words))) if k), None)


# the whole phrase before "=" must name the knob ("Outer Layers = 2" is not "layers")
_KEY_VALUE = re.compile(rf"(?<![\w.])([A-Za-z][A-Za-z0-9_]*(?: [A-Za-z][A-Za-z0-9_]*){{0,3}})\s*=\s*({_NUM})(?![\w.])")
_ARROW = re.compile(rf"([A-Za-z][A-Za-z0-9_ ]{{0,30}}?)\s*[:=]?\s*(?:from\s+)?({_NUM})\s*[a-zA-Z]{{0,2}}\s*"
                    rf"(?:->|→|=>|\bto\b)\s*({_NUM})(?![\w.])")


_VERSUS = re.compile(rf"([A-Za-z][A-Za-z0-9_ ]{{0,30}}?)\s*[:=]?\s*({_NUM})\s*[a-zA-Z]{{0,2}}\s+"
                     rf"(?:vs\.?|versus|instead of|over|against)\s+({_NUM})(?![\w.])", re.I)
_VERB_TO = re.compile(rf"\b(?:reduc|lower|rais|increas|decreas|chang|set|mov|bump|drop|cut)\w*\s+(?:the\s+)?"
                      rf"([A-Za-z][A-Za-z0-9_ ]{{0,30}}?)\s+(?:from\s+({_NUM})\s+)?to\s+({_NUM})(?![\w.])", re.I)


# "vs PR #1394's default 0.99", "instead of the baseline's 0.04": the value the setting replaced
_DEFAULT_REF = re.compile(rf"\b(?:vs\.?|versus|instead of|from)\s+[^()=;]{{0,40}}?\b(?:default|baseline|base)\b"
                          rf"(?:\s+(?:value|of|setting|is|was|=|:))*\s*({_NUM})(?![\w.])", re.I)


def _num(s: str) -> float:
    v = float(s)
    return int(v) if v.is_integer() and "." not in s and "e" not in s.lower() else v


#: trainer fields whose value changes no trained model (a seed sweep is noise, not an ablation)
NOT_A_CHANGE = frozenset({"seed", "run_id", "val_loss_every", "train_log_every", "data_path", "tokenizer_path"})
OTHER_LR = re.compile(r"\b(?:ttt|test[\s-]time|adam\w*|embed\w*|scalar|head|lora|tied)\b", re.I)


def record_aliases(text: str) -> dict[str, str]:
    """Record-level names: a bare "LR" ("| LR | val_bpb |", "LR=0.002, 65k batch") is the record's one learning
    rate when its README sets exactly one ``*_LR`` knob of the trainer (``MATRIX_LR=0.008`` in its run command);
    with two or more (``MATRIX_LR`` and ``TTT_LR``) "LR" stays no knob. A row whose words or heading name another
    optimiser or stage (``OTHER_LR``: "TTT LR sweep", "Adam") does not use the alias (``row_types.type_row``)."""
    from scripts.causal.extract.records import env_assignments

    keys = {k for k in env_assignments(text) if k.endswith("_lr")} & knob_names()
    return {"lr": next(iter(keys))} if len(keys) == 1 else {}


def knob_setting(text: str, reference: str | None = None, *,
                 aliases: dict[str, str] | None = None) -> tuple[str, object, object] | None:
    """(knob, from, to) of a row that sets one knob of the vocabulary; None otherwise (see the module docstring).
    ``aliases``: the record's own names for knobs (``record_aliases``).

    A batch size under 1024 counts sequences, not tokens: it is no setting of ``train_batch_tokens``. A seed, a run
    name or a logging cadence (``NOT_A_CHANGE``) is a field of the trainer but no change of the model: no setting.
    A field that switches an on/off feature set to another value than 0 or 1 is no setting either; set to 0 or 1
    with no old value stated, it was the other one."""
    out = _knob_setting(text, reference, aliases)
    if out and out[0] == "train_batch_tokens" and any(v is not None and v < 1024 for v in out[1:]):
        return None
    if out and _switch(out[0]) and any(v not in (None, 0, 1) for v in out[1:]):
        return None   # "Phased-TTT = 48": a switch of a feature (TTT on/off) holds no 48; the 48 is another knob's
    if out and out[1] is None and _switch(out[0]) and out[2] in (0, 1):
        out = (out[0], 1 - out[2], out[2])   # "MUON_ROW_NORMALIZE=0": a switch set to off was on (else no change)
    return None if out and out[0] in NOT_A_CHANGE else out



# XSA's scope in layers: "XSA on the last 4 -> all 11 layers", "on all 11 layers instead of the last 4"
_XSA = re.compile(r"\bXSA\b|exclusive[\s-]self[\s-]attention", re.I)
_SCOPE = re.compile(r"\b(?:last|final|all)\s+(\d{1,2})\b(?:\s+(?:layers|blocks))?", re.I)
_SCOPE_TO = re.compile(r"^\s*(?:->|→|=>|to)\s*(?:on\s+)?(?:the\s+)?$", re.I)
_SCOPE_OVER = re.compile(r"^\s*(?:layers\s+)?[(,]?\s*(?:instead\s+of|rather\s+than|vs\.?|versus)\s+(?:on\s+)?"
                         r"(?:the\s+)?$", re.I)


def _xsa_scope(text: str) -> tuple[str, object, object] | None:
    """``xsa_last_n`` (from, to) of a row that moves XSA's layer scope between two stated ones, joined by an arrow
    or "to" (first is from) or by "instead of" / "vs" (first is to)."""
    if not _XSA.search(text):
        return None
    found = list(_SCOPE.finditer(text))
    if len(found) != 2:
        return None
    a, b = found
    between = text[a.end():b.start()]
    if _SCOPE_TO.match(between):
        return "xsa_last_n", int(a.group(1)), int(b.group(1))
    if _SCOPE_OVER.match(between):
        return "xsa_last_n", int(b.group(1)), int(a.group(1))
    return None


def _knob_setting(text: str, reference: str | None, aliases: dict[str, str] | None
                  ) -> tuple[str, object, object] | None:
    text = re.sub(r"[*`\\]", "", text or "")
    # "LR floor (MIN_LR): 0.0 -> 0.1": the env name in parentheses names the knob; "TTT epochs per chunk": the unit
    text = re.sub(r"\s*\(([A-Z][A-Z0-9_]{2,})\)", r" \1", text)
    text = re.sub(r"\s+per\s+(?:chunk|step|token|layer|doc(?:ument)?|sequence|block|head)s?\b", "", text, flags=re.I)
    scope = _xsa_scope(text)
    if scope is not None:
        return scope
    for m in _ARROW.finditer(text):
        knob = _tail_knob(m.group(1), aliases)
        if knob:
            return knob, _num(m.group(2)), _num(m.group(3))
    for m in _VERSUS.finditer(text):  # "MATRIX_LR 0.02 vs 0.04": the second value is the reference
        knob = _tail_knob(m.group(1), aliases)
        if knob:
            return knob, _num(m.group(3)), _num(m.group(2))
    for m in _VERB_TO.finditer(text):  # "reducing momentum to 0.80", "raised the warmdown from 3000 to 3500"
        knob = _knob(m.group(1), aliases)
        if knob:
            return knob, _num(m.group(2)) if m.group(2) else None, _num(m.group(3))
    pairs = [(_knob(k, aliases), v) for k, v in _KEY_VALUE.findall(text)]
    known = [(k, v) for k, v in pairs if k]
    if len(pairs) != 1 or len(known) != 1:  # several settings at once, or a key outside the vocabulary
        return None
    knob, to = known[0]
    frm = None
    default = _DEFAULT_REF.search(text)  # "Muon momentum = 0.97 (vs PR #1394's default 0.99)"
    if default:
        return knob, _num(default.group(1)), _num(to)
    was = re.search(rf"=\s*{re.escape(to)}\s*\(\s*(?:from|was|previously)\s+({_NUM})\s*\)", text, re.I)
    if was:   # "TRAIN_BATCH_TOKENS=65536 (from 98304)"
        return knob, _num(was.group(1)), _num(to)
    other = re.search(rf"\b(?:instead of|rather than)\s+(?:the\s+)?(?![0-4]\.\d{{3}})({_NUM})(?![\w.])",
                      re.sub(r"\([^)]*\)", " ", text), re.I)
    if other:   # "XSA_LAST_N=11 (all layers) instead of 4"
        return knob, _num(other.group(1)), _num(to)
    ref = re.sub(r"[*`\\]", "", reference or "")
    for k, v in _KEY_VALUE.findall(ref):
        if _knob(k, aliases) == knob:
            frm = _num(v)
    if frm is not None and _rest(text) != _rest(ref):  # "512d 10L mlp=2" vs "640d 10L mlp=3": more than one knob
        return None
    return knob, frm, _num(to)


def _switch(knob: str) -> bool:
    """A knob that is itself an on/off canonical feature or a boolean trainer field (``ttt``, ``ema``), not a
    numeric knob (``bigram_buckets`` sets the size of an on/off feature and is numeric)."""
    import train_gpt as tg

    field = next((f for f in dataclasses.fields(tg.Hyperparameters) if f.name == knob), None)
    return isinstance(BASELINE_FEATURES.get(knob), bool) or (field is not None and field.type in (bool, "bool"))


def _rest(label: str) -> str:
    """A label without its KEY=VALUE settings, parentheticals and punctuation: what else it names."""
    label = re.sub(r"\([^)]*\)", " ", _KEY_VALUE.sub(" ", label))
    return " ".join(re.sub(r"[^\w]+", " ", label.lower()).split())


_NAMED_VALUE = re.compile(rf"([A-Za-z][A-Za-z_ ]{{0,30}}?)\s*[=:]?\s*({_NUM})(?![\w.])")


def knobs_set_in(text: str) -> list[str]:
    """The knobs of the vocabulary that ``text`` gives a value ("momentum 0.99 run", "warmdown 3500",
    "MATRIX_LR=0.02"): a table's note that says its row ran at other settings."""
    out = []
    for m in _NAMED_VALUE.finditer(re.sub(r"[*`\\]", "", text or "")):
        knob = _tail_knob(m.group(1))
        if knob and knob not in out:
            out.append(knob)
    return out


_NAIVE = re.compile(r"^\W*(?:the\s+)?(?:naive\s+|upstream\s+|original\s+|default\s+)?(?:baseline|defaults)\b"
                    r"(?:\s+(?:defaults|config(?:uration)?))?\W*(?:\([^)]*\))?\W*$", re.I)


def trainer_default_reference(labels: list[str], k: int) -> str | None:
    """In a "+ X" stack that starts from the trainer's own defaults ("baseline defaults", "naive baseline"), the
    reference of row ``k`` that sets one trainer field ("+ NUM_LAYERS=11") and that no row above it set: "KEY=<the
    trainer's default>" (the trainers' defaults are upstream's baseline). None otherwise."""
    import train_gpt as tg

    if not labels or not _NAIVE.match(labels[0]) or not labels[k].lstrip().startswith("+"):
        return None
    pairs = _KEY_VALUE.findall(labels[k])
    if len(pairs) != 1:
        return None
    key = pairs[0][0]
    field = key.strip().lower()
    if field not in {f.name for f in dataclasses.fields(tg.Hyperparameters)} or field in NOT_A_CHANGE \
            or any(re.search(rf"\b{re.escape(key)}\s*=", lbl, re.I) for lbl in labels[1:k]):
        return None
    value = getattr(tg.Hyperparameters(), field)
    return f"{key}={value}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None
