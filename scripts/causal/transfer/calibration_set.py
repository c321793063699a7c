"""The transfer calibration set: leaderboard ablation rows that a registry intervention can express.

Each typed ablation row of the intervention matrix (``dag.effects.pool_ablations``) is an H100 measurement of one
named change. A row joins the set when a registry intervention makes the same change:

- the intervention's ``feature`` is the row's feature;
- categorical levels must match (a row that moves to ``relu2`` is not evidence about ``leaky_relu2``); a row
  without a stated level is matched on its text, as the ranking does (``dag.evidence``);
- a numeric change must go the same way (a 9L -> 8L row says nothing checkable about a +2 layers entry, so it
  is listed, not sign-flipped); a row over another stretch of the knob is kept and marked ``in_range=False``;
- several entries of one feature: the one whose value equals the row's new value, else the first registered.

The row's H100 delta becomes the effect of the intervention's direction (``h100_delta`` < 0 = better). Rows
that cannot be expressed are returned with the reason, so the report can say what the set leaves out.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scripts.causal.core.schema import CalibrationItem, CandidateIntervention
from scripts.causal.dag.effects import pool_ablations
from scripts.causal.dag.evidence import _overlaps, _row_matches, _short, numeric_direction

__all__ = ["build_calibration_set", "registry_classes"]


def registry_classes() -> dict[str, str]:
    """Intervention name -> transfer class, for every non-calibration registry entry."""
    from scripts.causal.screen import registry as reg

    return {iv.name: iv.transfer for iv in reg.list_interventions() if iv.transfer is not None}


def _pick(cands: Sequence[CandidateIntervention], row: Mapping) -> tuple[CandidateIntervention | None, str]:
    """The registry entry that expresses ``row``, or None with the reason."""
    matching = [c for c in cands if _row_matches(c, row)]
    if not matching:
        levels = sorted({str(c.value) for c in cands})
        return None, f"no registry entry for {row.get('to_value')!r} (entries of this feature: {levels})"
    numeric = [c for c in matching if numeric_direction(c) is not None]
    if numeric:
        way = int(row.get("direction") or 1)
        same_way = [c for c in numeric if numeric_direction(c) == way]
        if not same_way:
            return None, (f"measured {row.get('from_value')} -> {row.get('to_value')}, the other direction from "
                          f"every registry entry ({', '.join(f'{c.name}: {c.value}' for c in numeric)})")
        exact = [c for c in same_way if row.get("to_value") is not None and c.value == row.get("to_value")]
        return (exact or same_way)[0], ""
    exact = [c for c in matching if c.value == row.get("to_value")]
    return (exact or matching)[0], ""


def build_calibration_set(records: Iterable[Mapping], *, candidates: Sequence[CandidateIntervention] | None = None,
                          classes: Mapping[str, str] | None = None
                          ) -> tuple[list[CalibrationItem], list[dict[str, Any]]]:
    """(items, unexpressed): the rows a registry entry expresses, and every other row with its reason."""
    if candidates is None:
        from scripts.causal.select_interventions import registry_candidates

        candidates = registry_candidates()
    classes = registry_classes() if classes is None else classes
    by_feature: dict[str, list[CandidateIntervention]] = {}
    for c in candidates:
        if c.feature and c.name in classes:
            by_feature.setdefault(c.feature, []).append(c)
    pooled, unmapped = pool_ablations(records)
    items: list[CalibrationItem] = []
    unexpressed = [{"record_id": u.get("record_id"), "change": _short(u), "delta_bpb": u.get("delta_bpb"),
                    "features": u.get("features"), "reason": f"not a typed one-feature ablation ({u.get('kind')}): "
                                                              f"{u.get('reason')}"} for u in unmapped]
    for feature, block in sorted(pooled.items()):
        for row in block["rows"]:
            cands = by_feature.get(feature, [])
            cand, why = _pick(cands, row) if cands else (None, f"no registry intervention for feature '{feature}'")
            if cand is None:
                unexpressed.append({"record_id": row.get("record_id"), "change": _short(row),
                                    "delta_bpb": row.get("reported_delta_bpb"), "features": [feature], "reason": why})
                continue
            sign = -1.0 if numeric_direction(cand) == -1 else 1.0  # pooled delta = effect of adding / increasing
            items.append(CalibrationItem(
                intervention=cand.name, transfer_class=classes[cand.name], feature=feature,
                record_id=str(row.get("record_id")), change=_short(row), h100_delta=sign * float(row["delta_bpb"]),
                metric=str(row.get("metric") or "unknown"), n_seeds=row.get("n_seeds"),
                from_value=row.get("from_value"), to_value=row.get("to_value"),
                in_range=numeric_direction(cand) is None or _overlaps(row, cand), track=row.get("track")))
    return items, unexpressed
