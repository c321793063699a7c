"""Read a screen's runs and pair each treatment run with the control run of the same seed.

For each intervention, d_i = metric(treatment, seed i) - metric(control, seed i) over the seeds where BOTH runs
are valid (status "ok" and a finite metric); negative d = improvement. Failed runs are never dropped silently:
a pair whose control or treatment failed/diverged (or has no finite metric) is listed in ``failed_pairs``; a seed
with only one arm present is listed in ``missing_seeds``. A treatment run that is not valid where its control is
(``failed_treatment_seeds``: an exception, a divergence or a non-finite metric) is evidence that the change can
break training: it blocks ``confirmed`` (decision.py) and is shown in the report.

The decision metric defaults to ``post_quant_val_bpb``, the int8+zlib round-trip score that Parameter Golf ranks;
``val_bpb`` (pre-quantization) is the other choice. The metric is part of the pre-registration (prereg.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import read_json

__all__ = ["DEFAULT_METRIC", "FINAL_METRIC", "METRICS", "MIN_PAIRS", "load_runs", "metric_value", "paired_deltas",
           "run_rows", "valid_run"]

# final_val_bpb: each run's score as the challenge takes it, the last evaluation stage that ran (post-TTT, else
# sliding, else the post-quant round trip). It pairs an evaluation change (sliding, TTT) with a control that
# scores plainly; under a single stage's metric such a change would compare a stage with itself.
FINAL_METRIC = "final_val_bpb"
FINAL_STAGES = ("ttt_val_bpb", "sliding_val_bpb", "post_quant_val_bpb")
METRICS = ("post_quant_val_bpb", "val_bpb", "sliding_val_bpb", "ttt_val_bpb", FINAL_METRIC)
DEFAULT_METRIC = "post_quant_val_bpb"
MIN_PAIRS = 3


def load_runs(path: str | Path) -> dict:
    """Read a runs.json payload (schema_version 1) and check it has a ``runs`` list."""
    data = read_json(path)
    if not isinstance(data.get("runs"), list):
        raise DataFormatError(f"{path}: field 'runs' must be a list of run rows (see runs.json schema)")
    return data


def run_rows(runs: Sequence[Mapping] | Mapping) -> Sequence[Mapping]:
    """The run rows of a runs.json payload or of a plain list of rows."""
    return runs["runs"] if isinstance(runs, Mapping) else runs


def valid_run(row: Mapping | None, metric: str) -> bool:
    """True when ``row`` finished with status "ok" and a finite ``metric``."""
    if row is None or row.get("status") != "ok":
        return False
    return metric_value(row, metric) is not None


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def metric_value(row: Mapping, metric: str) -> float | None:
    """``row``'s value of ``metric`` (``FINAL_METRIC``: its last stage that ran), or None when not finite."""
    if metric == FINAL_METRIC:
        return next((float(row[m]) for m in FINAL_STAGES if _finite(row.get(m))), None)
    v = row.get(metric)
    return float(v) if _finite(v) else None


def _index_rows(rows: Sequence[Mapping], backend: str | None) -> tuple[dict, dict]:
    controls: dict[int, Mapping] = {}
    treatments: dict[str, dict[int, Mapping]] = {}
    if backend is None:
        backends = {row.get("backend") for row in rows if isinstance(row, Mapping)}
        if len(backends) > 1:
            raise DataFormatError(
                f"runs mix backends {sorted(map(str, backends))}; analyze one backend at a time "
                "(pass backend=... / --backend) and compare them with confirmation.platform_transfer")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataFormatError(f"runs[{i}]: expected an object, got {type(row).__name__}")
        for field in ("intervention", "arm", "seed"):
            if field not in row:
                raise DataFormatError(f"runs[{i}]: missing field {field!r} (row: {dict(row)!r:.200})")
        if backend is not None and row.get("backend") != backend:
            continue
        arm, seed, name = row["arm"], int(row["seed"]), str(row["intervention"])
        if arm == "control":
            target = controls
        elif arm == "treatment":
            target = treatments.setdefault(name, {})
        else:
            raise DataFormatError(f"runs[{i}]: field 'arm' is {arm!r}; expected 'control' or 'treatment'")
        if seed in target:
            raise DataFormatError(
                f"runs[{i}]: duplicate {arm} row for intervention {name!r}, seed {seed}; "
                "each (intervention, seed) must appear once (rebuild runs.json from the ledger)")
        target[seed] = row
    return controls, treatments


def _failure(seed: int, arm: str, row: Mapping, metric: str) -> dict:
    error = row.get("error") or (None if row.get("status") != "ok" else f"{metric} is not a finite number")
    return {"seed": seed, "arm": arm, "status": row.get("status"), "error": error}


def paired_deltas(runs: Sequence[Mapping] | Mapping, *, metric: str = DEFAULT_METRIC,
                  backend: str | None = None) -> dict[str, dict]:
    """Pair each treatment with the control of the same seed.

    Returns ``{intervention: {"seeds", "control", "treatment", "delta", "failed_pairs", "n_failed",
    "missing_seeds", "failed_treatment_seeds"}}`` with arrays over the valid pairs, in seed order.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid choices: {list(METRICS)}")
    controls, treatments = _index_rows(run_rows(runs), backend)
    out: dict[str, dict] = {}
    for name in sorted(treatments):
        trows = treatments[name]
        seeds, c_vals, t_vals, failed, missing, t_failed = [], [], [], [], [], []
        for seed in sorted(set(trows) | set(controls)):
            c, t = controls.get(seed), trows.get(seed)
            if c is None or t is None:
                missing.append(seed)
                continue
            c_ok, t_ok = valid_run(c, metric), valid_run(t, metric)
            if c_ok and t_ok:
                seeds.append(seed)
                c_vals.append(metric_value(c, metric))
                t_vals.append(metric_value(t, metric))
                continue
            failed += [_failure(seed, arm, row, metric)
                       for arm, row, ok in (("control", c, c_ok), ("treatment", t, t_ok)) if not ok]
            if c_ok and not t_ok:
                t_failed.append(seed)
        c_arr, t_arr = np.asarray(c_vals, float), np.asarray(t_vals, float)
        out[name] = {"seeds": seeds, "control": c_arr, "treatment": t_arr, "delta": t_arr - c_arr,
                     "failed_pairs": failed, "n_failed": len({f["seed"] for f in failed}),
                     "missing_seeds": missing, "failed_treatment_seeds": t_failed}
    return out
