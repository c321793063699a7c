"""Rules that turn what a record says into canonical features.

Two rule families, both general (no per-record cases):
- ``features_from_config``: config keys (log dumps, env settings, code defaults, JSON keys) -> features;
- ``features_from_prose``: regexes over README / JSON prose, skipping negative-result sections and
  negated mentions ("no TTT", "EMA replacing SWA", "removed SmearGate"), which give False instead.
Each rule returns ``{feature: (value, rule_name)}``.
"""
from __future__ import annotations

import re

from scripts.causal.core.schema import INTERVENTION_FEATURES

_TRUE = {"1", "true", "yes", "on", "enabled"}
_FALSE = {"0", "false", "no", "off", "disabled", "none", ""}


def _bool(v: str | None) -> bool | None:
    if v is None:
        return None
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    f = _float(s)
    return None if f is None else f != 0


def _float(v) -> float | None:
    try:
        return float(str(v).strip().replace("_", ""))
    except (TypeError, ValueError):
        return None


def _int(v) -> int | None:
    f = _float(v)
    return int(f) if f is not None and f == int(f) else None


ACTIVATIONS = {"relu2": "relu2", "relu_sq": "relu2", "relu^2": "relu2", "squared_relu": "relu2", "relusq": "relu2",
               "leaky_relu2": "leaky_relu2", "leaky_relu_sq": "leaky_relu2", "leakyrelu2": "leaky_relu2",
               "gelu": "gelu", "silu": "silu", "swish": "silu", "swiglu": "swiglu", "geglu": "swiglu"}
COMPRESSORS = ("zstd", "lzma", "brotli", "zlib")


def normalize_compression(v: str) -> str:
    s = str(v).lower()
    for c in COMPRESSORS:
        if c in s:
            return c
    return "xz" if "xz" in s and False else "other"


def features_from_config(cfg: dict[str, str]) -> dict[str, tuple[object, str]]:
    """Map config keys (lower-case names, string values) to features. Keys absent -> feature absent."""
    out: dict[str, tuple[object, str]] = {}

    def put(feat: str, value, key: str) -> None:
        if value is not None and feat not in out:
            out[feat] = (value, key)

    def first(*keys: str) -> tuple[str | None, str | None]:
        for k in keys:
            if k in cfg and str(cfg[k]).strip() != "":
                return k, cfg[k]
        return None, None

    for feat, keys, conv in (
        ("num_layers", ("num_layers", "n_layers", "n_layer"), _int),
        ("model_dim", ("model_dim", "d_model", "n_embd"), _int),
        ("vocab_size", ("vocab_size",), _int),
        ("train_seq_len", ("train_seq_len", "seq_len"), _int),
        ("tied_embeddings", ("tie_embeddings", "tied_embeddings"), _bool),
        ("qk_gain", ("qk_gain_init", "qk_gain"), _float),
        ("logit_softcap", ("logit_softcap",), _float),
        ("ln_scale", ("ln_scale",), _bool),
        ("caseops", ("caseops_enabled", "caseops"), _bool),
        ("muoneq_r", ("muon_row_normalize", "muoneq_r"), _bool),
        ("swa", ("swa_enabled", "swa"), _bool),
        ("fp16_embed", ("fp16_embed_export", "fp16_embed"), _bool),
        ("orthogonal_init", ("ortho_init", "orthogonal_init"), _bool),
        ("varlen_attention", ("varlen_attention", "varlen_attn", "use_varlen"), _bool),
    ):
        k, v = first(*keys)
        if k:
            put(feat, conv(v), f"config:{k}")

    k, v = first("mlp_hidden", "mlp_hidden_dim", "hidden_dim")
    dim = _float(cfg.get("model_dim")) or 512.0
    if k and (_float(v) or 0) > 0:
        put("mlp_mult", round(_float(v) / dim, 4), f"config:{k}/model_dim")
    k, v = first("mlp_mult")
    if k:
        put("mlp_mult", _float(v), f"config:{k}")

    k, v = first("activation", "mlp_activation", "act", "mlp_act")
    if k:
        put("activation", ACTIVATIONS.get(str(v).lower(), "other"), f"config:{k}")
    k, v = first("leaky_relu_slope", "leaky_slope", "negative_slope")
    if k and (_float(v) or 0) > 0:
        put("activation", "leaky_relu2", f"config:{k}")

    for feat, keys in (
        ("smeargate", ("smear_gate_enabled", "use_smeargate", "smeargate", "smear_gate", "smear_enabled", "smear")),
        ("depth_recurrence", ("training_depth_recurrence", "depth_recurrence", "recurrence_enabled")),
        ("value_embeddings", ("ve_enabled", "value_embeddings", "value_embed")),
        ("attention_gate", ("gated_attn_enabled", "attn_out_gate_enabled", "sparse_attn_gate_enabled",
                            "gated_attn", "gate_attn_out", "attn_gate")),
        ("ttt", ("ttt_enabled", "phased_ttt_enabled")),
        ("ngram_cache", ("ngram_tilt_enabled", "ngram_enabled", "ngram_cache")),
        ("parallel_residuals", ("parallel_residual",)),
        ("unet_skips", ("skip_gates_enabled", "unet_skips", "use_skips")),
        ("sliding_window_eval", ("sliding_window_enabled",)),
    ):
        vals = [(k2, _bool(cfg[k2])) for k2 in keys if k2 in cfg and _bool(cfg[k2]) is not None]
        if any(b for _, b in vals):
            put(feat, True, "config:" + next(k2 for k2, b in vals if b))
        elif vals and feat != "unet_skips":
            put(feat, False, "config:" + vals[0][0])

    k, v = first("bigram_vocab_size", "bigram_hash_buckets", "bigram_buckets", "bigram_hash")
    if k:
        put("bigram_hash", bool(_float(v) or _bool(v)), f"config:{k}")
    k, v = first("xsa_last_n", "xsa_layers")
    if k:
        put("xsa", (_float(v) or 0) > 0, f"config:{k}")
    k, v = first("rope_dims", "partial_rope_dims", "rope_partial_dims")
    if k:
        heads = _float(cfg.get("num_heads")) or 8
        head_dim = dim / heads
        n = _float(v) or 0
        put("partial_rope", 0 < n < head_dim, f"config:{k}")
    k, v = first("num_loops", "recur_layers_str", "recur_layers", "loop_layers", "num_recurrences")
    if k:
        n = _float(v)
        if n is None:
            on = bool(str(v).strip()) and str(v).strip().lower() not in _FALSE
        else:  # "1 loop" is the plain stack unless a loop range is configured
            on = n > 1 or (n == 1 and any(x in cfg for x in ("loop_start", "loop_end")))
        put("depth_recurrence", on, f"config:{k}")
    k, v = first("parallel_residual_start", "parallel_start_layer")
    if k:
        n = _float(v)
        layers = _float(cfg.get("num_layers")) or 99
        put("parallel_residuals", n is not None and 0 <= n < layers, f"config:{k}")

    k, v = first("muon_wd", "muon_weight_decay")
    if k:
        put("muon_weight_decay", (_float(v) or 0) > 0, f"config:{k}")
    if any(key.startswith("muon_") for key in cfg):
        put("muon", True, "config:muon_*")

    k, v = first("ema_enabled", "use_ema", "ema")
    if k and _bool(v) is False:
        put("ema", False, f"config:{k}")
    k, v = first("ema_decay")
    if k:
        put("ema", (_float(v) or 0) > 0, f"config:{k}")

    k, v = first("qat_enabled", "qat", "use_qat", "qat_int6")
    if k and _bool(v):
        put("qat", True, f"config:{k}")
    k2, v2 = first("late_qat_threshold", "qat_start_frac")
    if k2 and (_float(v2) or 0) > 0:
        put("qat", True, f"config:{k2}")
    if k:
        put("qat", _bool(v), f"config:{k}")

    k, v = first("matrix_bits", "weight_bits", "quant_bits")
    if k:
        put("quant_bits", _float(v), f"config:{k}")
    k, v = first("quantized_model_path", "quant_model_path")
    mb = re.search(r"\bint([2-8])\b", str(v or "").replace(".", " ").replace("_", " "))
    if k and mb:
        put("quant_bits", float(mb.group(1)), f"config:{k}")
    k, v = first("gptq_enabled", "use_gptq")
    if k:
        put("gptq", "full" if _bool(v) else "none", f"config:{k}")
    k, v = first("gptq_calibration_batches", "gptq_calib_batches")
    if k and (_float(v) or 0) > 0:
        put("gptq", "full", f"config:{k}")

    k, v = first("compressor", "compression")
    if k:
        put("compression", normalize_compression(v), f"config:{k}")
    k, v = first("use_zstd")
    if k and _bool(v):
        put("compression", "zstd", f"config:{k}")

    k, v = first("eval_stride", "sliding_window_stride", "stride")
    if k:
        n = _float(v) or 0
        seq = _float(cfg.get("eval_seq_len")) or _float(cfg.get("train_seq_len")) or 1024
        put("sliding_window_eval", 0 < n < seq, f"config:{k}")

    k, v = first("ttt_lora_rank", "lora_rank")
    if k and out.get("ttt", (None,))[0] is not False:
        put("lora_ttt", (_float(v) or 0) > 0 and out.get("ttt", (True,))[0] is True, f"config:{k}")

    k, v = first("warmdown_frac", "warmdown_fraction")
    if k and (_float(v) or 0) > 0:
        out["warmdown_iters"] = (None, f"config:{k} (fraction-based schedule)")
    k, v = first("warmdown_iters", "warmdown_steps")
    if k and "warmdown_iters" not in out:
        put("warmdown_iters", _int(v), f"config:{k}")
    return {f: val for f, val in out.items() if f in INTERVENTION_FEATURES}


#: Flags that training scripts with a full ``Hyperparameters:`` dump expose as a config key when present;
#: a full dump (>= FULL_DUMP_MIN_KEYS keys) without any such key means the script lacks the feature.
KEYED_FLAGS = ("smeargate", "bigram_hash", "value_embeddings", "xsa", "partial_rope", "ln_scale", "depth_recurrence",
               "parallel_residuals", "ema", "swa", "qat", "ttt", "lora_ttt", "ngram_cache", "attention_gate",
               "caseops")
FULL_DUMP_MIN_KEYS = 40


def features_from_code(code: str) -> dict[str, tuple[object, str]]:
    """Features visible in a training script's structure (modules that are built and called)."""
    out: dict[str, tuple[object, str]] = {}
    if not code:
        return out
    if re.search(r"class SmearGate\b", code) and re.search(r"self\.smear\w*\s*\(|smear_gate\s*\(", code):
        out["smeargate"] = (True, "code:SmearGate module applied in forward")
    if re.search(r"flash_attn_varlen_func|cu_seqlens|warmup_cu_buckets", code):
        out["varlen_attention"] = (True, "code:variable-length attention (cu_seqlens)")
    if re.search(r"nn\.init\.orthogonal_\(", code):
        out["orthogonal_init"] = (True, "code:nn.init.orthogonal_")
    if re.search(r"skip_weights", code):
        out["unet_skips"] = (True, "code:skip_weights")
    if re.search(r"leaky_relu\([^\n]*\)\s*\.square\(\)|leaky_relu\(.{0,120}?\n?.{0,60}?\.square\(\)", code):
        out["activation"] = ("leaky_relu2", "code:leaky_relu(...).square()")
    elif re.search(r"relu\([^\n]*\)\s*\.square\(\)|relu\(x\)\s*\*\*\s*2|relu\(x\)\.pow\(2\)", code):
        out["activation"] = ("relu2", "code:relu(...).square()")
    return out


# ---------------------------------------------------------------------------------------------
# Prose
# ---------------------------------------------------------------------------------------------

# (feature, value, regex) -- value None means "the regex's first group, converted"
_BOOL_PATTERNS: list[tuple[str, str]] = [
    ("smeargate", r"smear[\s_-]?gate|\bsmear\b"),
    ("bigram_hash", r"bigram[\s_-]?hash|hash(?:ed)?[\s_-]?bigram|bigram\s*\(\d+|bigram\d{3,}|bigram embed|"
                    r"hash(?:ed)?[\s_-]?embed"),
    ("value_embeddings", r"value[\s_-]?embed|\bVE\d*\b|value[\s_-]residual"),
    ("xsa", r"\bxsa\b|\bxsa\d|exclusive self[\s-]?attention"),
    ("partial_rope", r"partial[\s_-]?rope|rope[\s_-]?\d{1,2}\b|rope_dims|rope \(\d+/\d+\)|rope on \d+"),
    ("ln_scale", r"ln[\s_-]?scale|layer[\s-]?wise ln|layerwise ln"),
    ("unet_skips", r"u[\s-]?net|skip connections|encoder[/-]decoder skip|skip[\s_-]?gates?|skip weights"),
    ("depth_recurrence", r"depth[\s-]?recur\w*|(?:layer|block|mini|progressive|\d[\s-]?layer)[\s-]+recurren\w*|"
                         r"recurren\w*\s+(?:on|of|over)\s+(?:layers?|blocks?|the stack)|recur(?:rence)?[\s_-]?layers|"
                         r"loop(?:ed|ing)?\s+(?:layers?|blocks?)|layer[\s_-]?loop\w*|\bloop\d{2}|universal transformer|"
                         r"\blooped\b|layers?\s+\d+\s*[-–,]\s*\d+\s+(?:looped|repeated|run twice|recur\w*)|"
                         r"weight[\s-]shared (?:blocks|layers)"),
    ("parallel_residuals", r"parallel[\s_-]?resid|two[\s-]lane|gpt-j style|parallel attention/mlp|par[\s_-]?resid"),
    ("muon", r"\bmuon\b|neomuon|parallel muon|muoneq"),
    ("muon_weight_decay", r"muon[\s_-]?wd|muon weight decay|weight decay|\bwd[\s=]?0?\.\d+|\bwd\d+"),
    ("muoneq_r", r"muon[\s-]?eq[\s-]?r|row[\s-]normali[sz]ed muon|muon_row_normalize"),
    ("ema", r"\bema\b"),
    ("swa", r"\bswa\b|stochastic weight averag"),
    ("qat", r"\bqat\b|quantization[\s-]aware|\bste\b|straight[\s-]through"),
    ("sliding_window_eval", r"sliding[\s_-]?(?:window)?[\s_-]?eval|sliding window|stride[\s=]?\d+"),
    ("ttt", r"\bttt\b|test[\s-]time training|legal ttt|score[\s-]first"),
    ("lora_ttt", r"lora[\s-]?ttt|ttt[^.\n]{0,40}lora|lora[^.\n]{0,30}test[\s-]time"),
    ("ngram_cache", r"n[\s-]?gram (?:cache|tilt|mixer|mixing|statistics)|ngram[\s_-]?(?:cache|tilt)"),
    ("fp16_embed", r"fp16[^.\n]{0,25}embed|embed\w*[^.\n]{0,25}(?:fp16|float16)"),
    ("orthogonal_init", r"ortho(?:gonal)?[\s_-]?init"),
    ("attention_gate", r"gated[\s_-]?attn|gated attention|attn[\s_-]?out[\s_-]?gate|attention[\s-]output[\s-]gate|"
                       r"sparse[\s_-]?attn[\s_-]?gate|attention gate|sparsegate"),
    ("caseops", r"case[\s_-]?ops"),
    ("varlen_attention", r"var[\s_-]?len|variable[\s-]length (?:\w+ )?attention|cu_seqlens"),
]
_BOOL_RES = [(f, re.compile(p, re.I)) for f, p in _BOOL_PATTERNS]

_NEG_BEFORE = re.compile(
    r"(?:\bno\b|\bnot\b|\bwithout\b|\bremov\w*|\bdrop\w*|\bdisabl\w*|\binstead of\b|\breplac\w*|\bw/o\b|"
    r"\bexcept\b|\bincompatible with\b|\bdoesn't\b|\bdid not\b|\bdidn't\b|\bnever\b|\babandon\w*|\bturn(?:ed)? off\b)[^.;:\n|]{0,40}$", re.I)
_NEG_AFTER = re.compile(r"^[^.;\n|]{0,30}?\b(?:removed|disabled|dropped|hurt|did not help|didn't help|"
                        r"was dead code|is dead code|not used|unused|off\b|=\s*0(?![.\d])|=\s*false)", re.I)
_NEG_SECTION = re.compile(
    r"negative|didn.?t work|did not work|not work|fail|discard|tried|abandon|dead end|what didn|dropped|"
    r"ablation|removed|lessons|future|todo|not included|rejected|unsuccessful|open question|comparison|"
    r"prior|previous|related|credits?|acknowledg|attribution|lineage|history|changelog|reference", re.I)


def positive_text(readme: str) -> str:
    """README text without sections whose heading marks negative results, ablations or credits."""
    keep: list[str] = []
    skip_level = None
    for line in (readme or "").splitlines():
        m = re.match(r"^(#{1,6})\s+(.*)", line)
        if m:
            level = len(m.group(1))
            if skip_level is not None and level <= skip_level:
                skip_level = None
            if skip_level is None and _NEG_SECTION.search(m.group(2)):
                skip_level = level
                continue
        if skip_level is None:
            keep.append(line)
    return "\n".join(keep)


_DEAD = re.compile(r"^[^.;\n]{0,120}?(?:dead code|\bno-op\b|never (?:ran|run|activated|triggered|fired|applied|executed)|"
                   r"constant[\s-]folded|was not (?:actually )?(?:active|applied|used|enabled)|"
                   r"(?:did not|didn't) actually (?:run|apply|activate))", re.I)
_SWA_IS_EMA = re.compile(r"exponential moving average|(?:actually|really|is|it's) an? EMA\b", re.I)


def _sentence(text: str, start: int, end: int) -> str:
    left = max(text.rfind(". ", 0, start), text.rfind("\n\n", 0, start), text.rfind("\n-", 0, start))
    right_candidates = [i for i in (text.find(". ", end), text.find("\n\n", end), text.find("\n-", end)) if i >= 0]
    right = min(right_candidates) if right_candidates else len(text)
    return text[left + 1: right]


def _mention_polarity(text: str, start: int, end: int) -> bool:
    before = text[max(0, start - 60): start]
    after = text[end: end + 40]
    return not (_NEG_BEFORE.search(before) or _NEG_AFTER.search(after))


_ENV_ASSIGN = re.compile(r"\b[A-Z][A-Z0-9_]{2,}=\S*")  # env settings are config, read by features_from_config


def normalize_prose(text: str) -> str:
    """Table rows become ``cell: cell`` lines, ``×`` becomes ``x``, markdown emphasis is dropped."""
    lines = []
    for line in (text or "").splitlines():
        s = line.strip()
        if s.startswith("|"):
            if re.match(r"^\|?[\s:|-]+$", s):
                continue
            s = ": ".join(c.strip() for c in s.strip("|").split("|"))
        lines.append(_ENV_ASSIGN.sub(" ", s.replace("\\_", "_")))
    return re.sub(r"[*`]+", "", "\n".join(lines)).replace("×", "x").replace("\\_", "_")


def features_from_prose(text: str) -> dict[str, tuple[object, str]]:
    """Features stated in free text; a feature mentioned only negatively gives False."""
    out: dict[str, tuple[object, str]] = {}
    if not text:
        return out
    text = normalize_prose(text)
    swa_is_ema = None
    head = "\n".join(text.splitlines()[:8])
    for feat, rx in _BOOL_RES:
        pos = neg = dead = None
        for m in rx.finditer(text):
            sentence = _sentence(text, m.start(), m.end())
            if _DEAD.search(text[m.end(): m.end() + 160].split("\n\n")[0]):
                dead = dead or m.group(0)
                continue
            if feat == "swa" and _SWA_IS_EMA.search(sentence):
                swa_is_ema = swa_is_ema or m.group(0)
                continue
            if _mention_polarity(text, m.start(), m.end()):
                pos = pos or m.group(0)
            else:
                neg = neg or m.group(0)
        head_neg = [m for m in rx.finditer(head) if not _mention_polarity(head, m.start(), m.end())]
        head_pos = [m for m in rx.finditer(head) if _mention_polarity(head, m.start(), m.end())]
        if dead:
            out[feat] = (False, f"prose(dead code):'{dead.strip()}'")
        elif head_neg and not head_pos:  # "No TTT" in the headline block is the author's summary
            out[feat] = (False, f"prose(negated in headline):'{head_neg[0].group(0).strip()}'")
        elif pos:
            out[feat] = (True, f"prose:'{pos.strip()}'")
        elif neg:
            out[feat] = (False, f"prose(negated):'{neg.strip()}'")
    if swa_is_ema:  # the author says their "SWA" is an EMA: that clarification wins over the name
        out["swa"] = (False, f"prose:'{swa_is_ema}' described as an EMA")
        if out.get("ema", (False,))[0] is not True:
            out["ema"] = (True, f"prose:'{swa_is_ema}' described as an EMA")
    if out.get("lora_ttt", (False,))[0] is True:
        out.setdefault("ttt", (True, "prose:lora ttt"))
        if out["ttt"][0] is False:
            out["ttt"] = (True, "prose:lora ttt")
    _numeric_prose(text, out)
    return out


def _first(rx: str, text: str, flags=re.I):
    for m in re.finditer(rx, text, flags):
        if _mention_polarity(text, m.start(), m.end()):
            return m
    return None


def _numeric_prose(text: str, out: dict) -> None:
    m = _first(r"\b(\d{1,2})\s*(?:L\b|-?layers?\b|x\s*\d{3,4}\b|\s*transformer (?:blocks|layers))|"
               r"\b(?:num[_ ])?layers\s*[:=]\s*(\d{1,2})\b", text)
    if m and 2 <= int(m.group(1) or m.group(2)) <= 40:
        out["num_layers"] = (int(m.group(1) or m.group(2)), f"prose:'{m.group(0)}'")
    m = _first(r"\b(\d{1,2})\s*(?:unique|physical|shared)\s*(?:transformer\s*)?(?:blocks|layers)\b", text)
    if m:  # recurrent stacks: the feature counts unique blocks, not virtual depth
        out["num_layers"] = (int(m.group(1)), f"prose:'{m.group(0)}'")
    m = _first(r"\buntied\s+(?:input/output\s+|token\s+)?(?:embeddings|embedding|head)|\bseparate (?:lm|output) head", text)
    if m:
        out["tied_embeddings"] = (False, f"prose:'{m.group(0)}'")
    elif _first(r"\btied (?:input/output |token )?embeddings?\b", text):
        out["tied_embeddings"] = (True, "prose:'tied embeddings'")
    m = _first(r"\b\d{1,2}\s*x\s*(\d{3,4})\b|\b(\d{3,4})\s*(?:d\b|-?dim\b|model[_ ]dim)|model[_ ]dim\s*[=:]?\s*(\d{3,4})",
               text)
    if m:
        out["model_dim"] = (int(next(g for g in m.groups() if g)), f"prose:'{m.group(0)}'")
    m = _first(r"\bmlp\s*(?:mult(?:iplier)?|expansion|ratio)?\s*[=:]?\s*(\d(?:\.\d+)?)\s*x(?![\d])|"
               r"\b(\d(?:\.\d+)?)\s*x\s*(?:wider\s*)?mlp|mlp[_ ]mult\s*[=:]?\s*(\d(?:\.\d+)?)|"
               r"mlp[^.\n]{0,12}?(\d(?:\.\d+)?)\s*x\s*expansion", text)
    if m:
        out["mlp_mult"] = (float(next(g for g in m.groups() if g)), f"prose:'{m.group(0)}'")
    m = _first(r"\bsp[\s-]?(\d{3,5})\b|\b(\d{3,5})[\s-]?(?:vocab|bpe|token vocab)|\bvocab(?:ulary)?(?:[_ ]size)?\s*[=:]?\s*"
               r"(\d{3,5})", text)
    if m:
        v = int(next(g for g in m.groups() if g))
        if v in (256, 260, 512, 1024, 2048, 4096, 8192, 16384, 32768):
            out["vocab_size"] = (v, f"prose:'{m.group(0)}'")
    if _first(r"byte[\s-]level|\bbyte\d{3}\b|no tokenizer", text) and "vocab_size" not in out:
        out["vocab_size"] = (256, "prose:byte-level")
    m = _first(r"(?:train[_ ])?seq(?:uence)?[_ ]?(?:len(?:gth)?)?\s*[=:]?\s*(\d{3,5})\b|\b(\d{3,5}|\dk)\s*seq(?:uence)? len",
               text)
    if m:
        g = next(g for g in m.groups() if g)
        v = int(g[:-1]) * 1024 if g.endswith("k") else int(g)
        if 128 <= v <= 65536:
            out["train_seq_len"] = (v, f"prose:'{m.group(0)}'")
    m = _first(r"qk[\s_-]?gain(?:[\s_-]?init)?\s*[=:]?\s*(\d+(?:\.\d+)?)", text)
    if m:
        out["qk_gain"] = (float(m.group(1)), f"prose:'{m.group(0)}'")
    m = _first(r"(?:logit[\s_-]?)?softcap\s*[=:]?\s*(\d+(?:\.\d+)?)", text)
    if m and float(m.group(1)) >= 1:
        out["logit_softcap"] = (float(m.group(1)), f"prose:'{m.group(0)}'")
    frac = _first(r"warmdown[\s_-]?(?:frac(?:tion)?)?\s*[=:]?\s*0\.\d+|warmdown over the (?:last|final) \d+\s*%|"
                  r"cosine (?:lr |learning[\s-]rate )?(?:schedule|decay)", text)
    if frac:
        out["warmdown_iters"] = (None, f"prose:'{frac.group(0)}' (fraction-based or cosine schedule)")
    m = _first(r"warmdown[\s_-]?(?:iters)?\s*[=:]?\s*(\d{3,5})\b", text)
    if m:
        out["warmdown_iters"] = (int(m.group(1)), f"prose:'{m.group(0)}'")
    m = _first(r"leaky[\s_-]?relu|relu\s*[²2]|relu\^2|squared relu|\bswiglu\b|\bgelu\b|\bsilu\b|\bgeglu\b", text)
    if m:
        s = m.group(0).lower()
        act = ("leaky_relu2" if "leaky" in s else "swiglu" if ("swiglu" in s or "geglu" in s) else "gelu" if "gelu" in s
               else "silu" if "silu" in s else "relu2")
        out["activation"] = (act, f"prose:'{m.group(0)}'")
    bits = None
    m = _first(r"ternary|1\.58[\s-]?bit", text)
    if m:
        bits = (1.58, m)
    elif _first(r"\bbinary (?:weights|quant|u-net)|1[\s-]bit|xnor", text):
        bits = (1.0, _first(r"\bbinary (?:weights|quant|u-net)|1[\s-]bit|xnor", text))
    else:
        counts: dict[int, int] = {}
        first_m = {}
        for mm in re.finditer(r"\bint([2-8])\b|\b([2-8])[\s-]bit\b", text, re.I):
            if not _mention_polarity(text, mm.start(), mm.end()):
                continue
            b = int(mm.group(1) or mm.group(2))
            counts[b] = counts.get(b, 0) + 1
            first_m.setdefault(b, mm)
        if counts:
            b = max(counts, key=lambda k: (counts[k], -k))
            bits = (float(b), first_m[b])
    if bits:
        out["quant_bits"] = (bits[0], f"prose:'{bits[1].group(0)}'")
    m = _first(r"gptq[\s_-]?lite|clip[\s-]search|per[\s-]row clip", text)
    m2 = _first(r"(?:full|hessian)[\s-]?(?:hessian[\s-]?)?gptq|gptq(?![\s_-]?lite)", text)
    if m2:
        out["gptq"] = ("full", f"prose:'{m2.group(0)}'")
    elif m:
        out["gptq"] = ("lite", f"prose:'{m.group(0)}'")
    m = _first(r"\b(zstd|zstandard|lzma|brotli|zlib|xz|lrzip)\b", text)
    if m:
        s = m.group(1).lower()
        out["compression"] = ({"zstandard": "zstd", "xz": "lzma"}.get(s, s if s in COMPRESSORS else "other"),
                              f"prose:'{m.group(0)}'")
