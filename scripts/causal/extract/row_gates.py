"""Right or silent: the checks a typed one-change row (``kind == "ablation"``) must pass to stay one.

A wrong mapping is worse than none, so a row keeps the ``ablation`` class only when nothing in its own words says
it is something else. Each rule demotes the row to the class a reader would give it (``core.schema.ABLATION_KINDS``)
and says why in ``note``:

- ``quoted_estimate``: the figure is another submission's or a projection ("PR #493 (ablated at -0.003)",
  "reported as", "estimated", "should give", "expected");
- ``penalty``: a quantization / export row that states a penalty or gap of one model (pre-quant -> round trip)
  rather than two export schemes; a bit-width row must name both widths ("int8 -> int6", "int5 vs int6");
- ``restated``: a prose row that repeats a change the record's own table measures, with another figure (the table
  row is the measurement; the prose figure is a summary or comes from elsewhere).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from scripts.causal.core.schema import AblationRow

__all__ = ["gate_row", "gate_record"]

_QUOTED = re.compile(r"\bPR\s*#?\s*\d{2,5}\b|\bpull/\d+|\breported\b|\baccording to\b|\bestimat\w*|\bexpected\b|"
                     r"\bshould\b|\bwould\b|\bprojected?\b|\bused in\b|\bablated at\b|\bper (?:the )?(?:paper|pr)\b",
                     re.I)
_PENALTY = re.compile(r"penalt|quant\w*[\s-]*(?:gap|loss|cost|degrad\w*|error|hit)|\bgap\b|quality loss|"
                      r"\bvs\.?\s*(?:pre[\s-]?quant|fp16|bf16|fp32|float)|\bpre[\s-]?quant\b|round[\s-]?trip", re.I)
_EXPORT = {"quant_bits", "gptq", "qat", "compression", "fp16_embed"}
_TWO_WIDTHS = re.compile(r"\b(?:int|fp)(\d{1,2})\b.{0,40}?(?:->|→|=>|\bto\b|\bvs\.?|\bover\b|\binstead of\b).{0,20}?"
                         r"\b(?:int|fp)(\d{1,2})\b", re.I)
RESTATE_TOL = 1.5e-4


def _demote(row: AblationRow, kind: str, note: str) -> AblationRow:
    return dataclasses.replace(row, kind=kind, note=f"{note} (typed {row.features} before)")


def gate_row(row: AblationRow) -> AblationRow:
    """``row`` unchanged unless it is an ``ablation`` that one of the module's rules demotes."""
    if row.kind != "ablation":
        return row
    text = f"{row.change} {row.context}"
    if _QUOTED.search(text):
        return _demote(row, "quoted_estimate", "another submission's figure or a projection, not measured here")
    feat = row.features[0] if row.features else None
    if feat in _EXPORT and _PENALTY.search(f"{text} {row.source}"):
        return _demote(row, "penalty", "a quantization / export penalty of one model, not two export schemes")
    if feat == "quant_bits" and not _TWO_WIDTHS.search(text):
        return _demote(row, "penalty", "a bit-width row that names one width only: a penalty, not int A -> int B")
    return row


def gate_record(rows: Sequence[AblationRow]) -> tuple[AblationRow, ...]:
    """``gate_row`` on each row, then the record-level rule: prose restating a table-measured change."""
    rows = [gate_row(r) for r in rows]
    measured = {(r.features, r.direction): r.delta_bpb for r in rows
                if r.kind == "ablation" and r.source_kind == "table" and r.delta_bpb is not None}
    out = []
    for r in rows:
        key = (r.features, r.direction)
        if (r.kind == "ablation" and r.source_kind == "prose" and key in measured and r.delta_bpb is not None
                and abs(r.delta_bpb - measured[key]) > RESTATE_TOL):
            r = _demote(r, "restated", f"restates a change the record's table measures at {measured[key]:+.4f}")
        out.append(r)
    return tuple(out)
