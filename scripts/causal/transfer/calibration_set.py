"""The transfer calibration set: verified single-change H100 rows that a registry intervention makes exactly.

The rows come from the verified evidence table (``evidence/verified``, ``scripts.causal.evidence``), never from
the miner: a row joins the set only when a person classed it ``single_change``, named the registry intervention
that makes it, and ``evidence.expresses`` confirms that intervention makes that change (same knob, direction and
size: "+2 layers" is not "+3 layers with a narrower MLP", ``mlp_mult_3`` is not 3x -> 4x). A row measured the
other way round ("no EMA", 11L -> 9L) compares the same two configurations: its delta is sign-flipped.

Rows measured on hardware other than 8xH100 keep their own class (``architecture [1xH100]``), so the
8xH100 figures the report quotes rest on 8xH100 rows alone. Every other entry is listed with the reason it is
left out (its class, no intervention, another size).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scripts.causal.core.schema import CalibrationItem, VerifiedRecord
from scripts.causal.evidence.expresses import entry_expressed
from scripts.causal.evidence.table import entries

__all__ = ["TARGET_HARDWARE", "build_calibration_set", "class_of", "registry_classes"]

TARGET_HARDWARE = "8xH100"


def registry_classes() -> dict[str, str]:
    """Intervention name -> transfer class, for every non-calibration registry entry."""
    from scripts.causal.screen import registry as reg

    return {iv.name: iv.transfer for iv in reg.list_interventions() if iv.transfer is not None}


def class_of(transfer_class: str, hardware: str) -> str:
    """The calibration class of a row: its transfer class, tagged with the hardware when that is not 8xH100."""
    return transfer_class if hardware == TARGET_HARDWARE else f"{transfer_class} [{hardware}]"


def build_calibration_set(table: Mapping[str, VerifiedRecord], *, classes: Mapping[str, str] | None = None
                          ) -> tuple[list[CalibrationItem], list[dict[str, Any]]]:
    """(items, left_out): the verified rows a registry intervention makes exactly, and every other entry with its
    reason."""
    classes = registry_classes() if classes is None else classes
    items: list[CalibrationItem] = []
    left_out: list[dict[str, Any]] = []
    for e in entries(table):
        expr = entry_expressed(e)
        why = None if expr.ok else expr.reason
        if why is None and e.delta_bpb is None:
            why = "the source gives nats only (no bpb delta)"
        if why is None and e.intervention not in classes:
            why = f"{e.intervention} has no transfer class"
        if why is not None:
            left_out.append({"entry": e.key, "record_id": e.record_id, "class": e.klass, "change": e.change,
                             "delta_bpb": e.delta_bpb, "intervention": e.intervention, "reason": why})
            continue
        sign = -1.0 if expr.reversed else 1.0
        items.append(CalibrationItem(
            intervention=e.intervention, transfer_class=class_of(classes[e.intervention], e.hardware),
            feature=e.knob or "", record_id=e.record_id, change=e.change, h100_delta=sign * e.delta_bpb,
            metric=e.metric, n_seeds=e.seeds, from_value=e.from_value, to_value=e.to_value, in_range=True,
            track=e.track, hardware=e.hardware, quote=e.quote, source=f"{e.file}:{e.line}", entry=e.key,
            reversed=expr.reversed))
    return items, left_out
