"""Numeric values of a feature in a row's words: ``numeric_from_to`` reads ``(from, to)`` of a change ("11L vs 9L",
"MLP 4× → 4.5×", "warmdown 3000 -> 3500", "11 layers instead of 10", a reference row's label). Scores ("1.1230 vs
1.1270") are no settings. Used by ``row_types``."""
from __future__ import annotations

import re

__all__ = ["NUM", "numeric_from_to"]

NUM = r"\d+(?:\.\d+)?"
_ARROW = re.compile(rf"({NUM})\s*[a-zA-Z]{{0,3}}\s*(?:->|→|=>|to)\s*({NUM})")
_BARE_OTHER = re.compile(r"\b(?:instead of|vs\.?|versus|compared (?:to|with))\s+(\d+(?:\.\d+)?)[x×]?(?![\w.%])",
                         re.I)
_PLUS_LAYERS = re.compile(r"\+\s*(\d{1,2})\s+layers?\b", re.I)
_MORE_LAYERS = re.compile(r"\b\d{1,2}\s+(?:extra|more|additional)\s+layers?\b", re.I)
_SCORE = re.compile(r"(?<![\d.])(?:[1-4]\.\d{3,8}|0\.\d{4,8})(?!\d)")   # a bpb / loss value or a delta
_VS = re.compile(rf"({NUM})\s*([a-zA-Z]{{0,4}})\s+vs\.?\s+({NUM})\s*\2\b", re.I)

# numeric features: a value pattern each (group 1 = the value)
_VALUE_RES: dict[str, re.Pattern] = {
    "num_layers": re.compile(r"\b(\d{1,2})\s?(?:l\b|-?layers?\b)|layers?\s*[=:]?\s*(\d{1,2})\b", re.I),
    "mlp_mult": re.compile(r"mlp\s*(?:mult\w*)?\s*[=:]?\s*(\d(?:\.\d+)?)\s*x?|(\d(?:\.\d+)?)\s*x\s*mlp", re.I),
    "model_dim": re.compile(r"(?:model[\s_-]?dim|d_?model|dim|width)\s*[=:]?\s*(\d{3,4})|(\d{3,4})\s*(?:d\b|-?dim)", re.I),
    "vocab_size": re.compile(r"\bsp\s?(\d{3,5})\b|vocab\w*\s*[=:]?\s*(\d{3,5})|(\d{3,5})\s*(?:vocab|bpe)", re.I),
    "train_seq_len": re.compile(r"seq\w*\s*[=:]?\s*(\d{3,5})|(\d{3,5})\s*(?:ctx|context)", re.I),
    "qk_gain": re.compile(r"qk[\s_-]?gain\w*\s*[=:]?\s*(\d+(?:\.\d+)?)", re.I),
    "logit_softcap": re.compile(r"soft[\s_-]?cap\w*\s*[=:]?\s*(\d+(?:\.\d+)?)", re.I),
    "warmdown_iters": re.compile(r"warm[\s_-]?down\w*\s*[=:]?\s*(\d{3,5})", re.I),
    "quant_bits": re.compile(r"\bint(\d)\b|\b(\d)[\s-]?bit", re.I),
}


def _values(feature: str, text: str) -> list[float]:
    rx = _VALUE_RES.get(feature)
    if rx is None:
        return []
    out = []
    for m in rx.finditer(text):
        g = next((x for x in m.groups() if x), None)
        if g is not None:
            out.append(float(g))
    return out


def numeric_from_to(feature: str, text: str, reference: str | None = None) -> tuple[float | None, float | None, str]:
    """``(from, to, how)`` of a numeric feature's change read from ``text`` (and a reference row's label). Scores
    ("1.1230 vs 1.1270") are no settings and are left out."""
    text = _SCORE.sub(" ", text).replace("×", "x")   # "MLP 4× → 4.5×"
    if feature == "num_layers":   # "2 more layers": a count added; "+ 2 layers (13L)" too, when the new count is given
        text = _MORE_LAYERS.sub(" ", text)
        plus, rest = _PLUS_LAYERS.search(text), _PLUS_LAYERS.sub(" ", text)
        stated, ref = _values(feature, rest), _values(feature, reference) if reference else []
        if plus and not stated and ref and int(plus.group(1)) < ref[0]:
            return ref[0], ref[0] + int(plus.group(1)), "reference row plus the layers added"   # "+ 2 layers" on 11L
        text = rest if stated else text
    reference = reference.replace("×", "x") if reference else reference
    m = _ARROW.search(text)
    if m and _values(feature, text):
        return float(m.group(1)), float(m.group(2)), "arrow"
    m = _VS.search(text)
    if m:
        return float(m.group(3)), float(m.group(1)), "vs"
    vals = _values(feature, text)
    if len(vals) >= 2 and re.search(r"\bvs\.?\b|instead of|over|compared", text, re.I):
        return vals[1], vals[0], "vs"
    if vals and reference:
        ref = _values(feature, reference)
        if ref:
            return ref[0], vals[0], "reference row"
    other = _BARE_OTHER.findall(text)
    if len(vals) == 1 and len(other) == 1:   # "11 layers instead of 10": the unit said once
        return float(other[0]), vals[0], "vs"
    if vals:
        return None, vals[0], "value only"
    return None, None, "none"
