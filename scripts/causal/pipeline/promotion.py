"""The pipeline's promotion step: a dry-run diff (or the write) of ONE confirmed change, never a raised refusal.

Each arm of a screen was tested alone against the control, so the step promotes the confirmed arm with the largest
mean gain among those ``promote.check_promotable`` accepts (and whose artifact fits the cap at the target scale),
and says why the others were not written. A refusal is reported in the result for the report to show.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.causal.core.errors import CausalPipelineError
from scripts.causal.core.schema import read_json
from scripts.causal.promote import promote

__all__ = ["promotion_stage"]


def promotion_stage(confirmed: Sequence[str], ablation_path: Path, *, enabled: bool = True, apply: bool = False,
                    screen_id: str | None = None, log: Callable[[str], None] = print) -> dict:
    """The pipeline's promotion step: a dry-run diff of train_gpt.py (or the write with ``apply``) for ONE
    confirmed change, the one with the largest mean gain among those that pass ``check_promotable`` (each arm was
    tested alone, so several are never written together). A refusal is reported in the result, never raised."""
    if not enabled:
        return {"applied": False, "promoted": [], "note": "promotion disabled (--no-promote)"}
    if not confirmed:
        return {"applied": False, "promoted": [], "note": "Nothing was promoted: no change was confirmed."}
    payload = read_json(ablation_path, schema_versions=(1, 2))
    rows = {r["intervention"]: r for r in payload.get("results", [])}
    refused = {}
    for name in sorted(confirmed, key=lambda n: rows.get(n, {}).get("mean_delta_bpb") or 0.0):
        try:
            diff = promote(payload, apply=apply, interventions=[name], screen_id=screen_id)
        except CausalPipelineError as exc:
            refused[name] = str(exc)
            continue
        others = [n for n in confirmed if n != name]
        note = "; ".join(f"{n}: {refused[n]}" for n in refused)
        if others:
            note = (f"{name} only (the largest promotable gain): {', '.join(others)} also confirmed, but each arm was "
                    "tested alone against the control, and changes are promoted together only when they were tested "
                    "together as one arm" + (f"; refused: {note}" if note else ""))
        log(f"promotion: {'applied to' if apply else 'dry-run diff for'} train_gpt.py: {name}")
        return {"applied": bool(apply), "promoted": [name], "diff": str(diff or ""), "note": note}
    note = "promotion refused: " + "; ".join(refused.values())
    log(f"promotion: {note}")
    return {"applied": False, "promoted": [], "note": note, "refused": refused}
