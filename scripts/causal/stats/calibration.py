"""Calibration arms: outside the multiplicity family, checked on their own.

``aa`` is an exact copy of the control. On a backend where same-seed runs are bit-identical (deterministic CPU
training), the A/A check is a *repeat*: one (or a few) seeds run twice, and every reported number must match bit
for bit (``aa_repeat_check``); n such runs would add no information. On a backend that is not bit-reproducible
(CUDA kernels with atomics), ``aa`` is a real arm of n seeds whose paired test must come out neither
``confirmed`` nor ``harmful`` at the unadjusted per-test level (``aa_arm_check``).

``sanity_frozen_matrices`` (matrix_lr = 0) must come out ``harmful``: it checks that the gate can see a large
effect at all. Neither arm is in the Holm family, so neither changes the family size K of the real candidates.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scripts.causal.core.errors import ConfigError
from scripts.causal.stats.pairing import run_rows

__all__ = ["AA_MODES", "CALIBRATION_EXPECTED", "REPEAT_FIELDS", "aa_arm_check", "aa_repeat_check", "choose_aa_mode"]

AA_MODES = ("repeat", "arm", "auto")
REPEAT_FIELDS = ("status", "val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "artifact_bytes",
                 "step_losses")
CALIBRATION_EXPECTED = {"aa": ("null", "inconclusive"), "sanity_frozen_matrices": ("harmful",)}


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def aa_repeat_check(runs: Sequence[Mapping] | Mapping, *, aa_name: str = "aa", backend: str | None = None,
                    fields: Sequence[str] = REPEAT_FIELDS) -> dict:
    """Bit-for-bit comparison of each ``aa_name`` treatment run with the control run of the same seed.

    Fields absent from both rows are skipped; a field present in one row only is a mismatch. Returns
    ``{"mode": "repeat", "aa_name", "seeds", "passed", "mismatches": [{"seed", "field", "control", "repeat"}]}``;
    ``passed`` is False when there is no pair to compare.
    """
    controls, repeats = {}, {}
    for row in run_rows(runs):
        if backend is not None and row.get("backend") != backend:
            continue
        if row.get("arm") == "control":
            controls[int(row["seed"])] = row
        elif row.get("intervention") == aa_name:
            repeats[int(row["seed"])] = row
    seeds = sorted(set(controls) & set(repeats))
    mismatches = []
    for seed in seeds:
        c, r = controls[seed], repeats[seed]
        for f in fields:
            if f not in c and f not in r:
                continue
            if not _same(c.get(f), r.get(f)):
                mismatches.append({"seed": seed, "field": f, "control": c.get(f), "repeat": r.get(f)})
    return {"mode": "repeat", "aa_name": aa_name, "seeds": seeds, "passed": bool(seeds) and not mismatches,
            "mismatches": mismatches}


def aa_arm_check(row: Mapping) -> dict:
    """A real A/A arm (non-reproducible backend): passed when its decision is ``null`` or ``inconclusive``."""
    return {"mode": "arm", "aa_name": row["intervention"], "seeds": list(row.get("seeds") or []),
            "decision": row["decision"], "passed": row["decision"] in CALIBRATION_EXPECTED["aa"],
            "mismatches": []}


def choose_aa_mode(mode: str, *, n_aa_pairs: int, all_zero: bool = False) -> str:
    """Resolve ``auto``: one A/A pair, or pairs that are all exactly equal (a bit-reproducible backend), get the
    bit-identity repeat check; otherwise the A/A runs are a statistical arm."""
    if mode not in AA_MODES:
        raise ConfigError(f"unknown aa_mode {mode!r}; valid choices: {list(AA_MODES)}")
    if mode != "auto":
        return mode
    return "repeat" if n_aa_pairs <= 1 or all_zero else "arm"
