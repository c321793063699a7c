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
from typing import Any

import numpy as np

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import read_json

__all__ = ["DEFAULT_METRIC", "FINAL_METRIC", "METRICS", "MIN_PAIRS", "arm_stages", "load_runs", "metric_value",
           "paired_deltas", "run_rows", "scored_stage", "valid_run"]

# final_val_bpb: each run's score as the challenge takes it, the last evaluation stage its config runs
# (``scored_stage``: post-TTT if TTT is on, else sliding if the eval stride is below the sequence length, else the
# post-quant round trip). It pairs an evaluation change (sliding, TTT) with a control that scores plainly; under a
# single stage's metric such a change would compare a stage with itself. A run whose scored stage is missing or
# not finite is a failed run (counted and shown): it never falls back to an earlier stage, which would score one
# seed of an arm on a different (worse) stage than the others.
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


def valid_run(row: Mapping | None, metric: str, stage: str | None = None) -> bool:
    """True when ``row`` finished with status "ok" and a finite ``metric`` (see ``metric_value``)."""
    if row is None or row.get("status") != "ok":
        return False
    return metric_value(row, metric, stage=stage) is not None


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def scored_stage(config: Mapping[str, Any]) -> str:
    """The evaluation stage a config is scored on, the last one it turns on (``train_gpt.stages_on``):
    ttt_val_bpb (TTT on), sliding_val_bpb (eval_stride > 0) or post_quant_val_bpb (the round trip)."""
    if config.get("ttt", "off") not in ("off", None):
        return "ttt_val_bpb"
    if int(config.get("eval_stride", 0) or 0) > 0:
        return "sliding_val_bpb"
    return "post_quant_val_bpb"


def arm_stages(header: Mapping[str, Any] | None) -> dict[str, str]:
    """{arm: scored stage} from a runs.json ``screen`` header (``base_config`` + ``treatment_overrides``);
    "control" is the control's. Empty when the header does not record the configs, or records no config of our
    trainer: a ``--train-script`` screen (preset "script": its env knobs are the script's own) or imported logs
    (preset "import"); each arm is then scored on the deepest stage its runs report."""
    base = (header or {}).get("base_config")
    if not isinstance(base, Mapping) or (header or {}).get("preset") in ("script", "import"):
        return {}
    out = {"control": scored_stage(base)}
    for name, ov in ((header or {}).get("treatment_overrides") or {}).items():
        out[str(name)] = scored_stage({**base, **dict(ov or {})})
    return out


def metric_value(row: Mapping, metric: str, *, stage: str | None = None) -> float | None:
    """``row``'s value of ``metric``, or None when it is missing or not finite.

    ``FINAL_METRIC`` reads the run's scored stage: ``stage`` (from the config), else the row's own
    ``scored_stage`` field; with neither, the deepest stage the row reports. A missing or non-finite scored stage
    is None (a failed run), never an earlier stage.
    """
    if metric == FINAL_METRIC:
        stage = stage or row.get("scored_stage")
        if stage is None:
            stage = next((m for m in FINAL_STAGES if _finite(row.get(m))), FINAL_STAGES[-1])
        v = row.get(stage)
        return float(v) if _finite(v) else None
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
    error = row.get("error") or (None if row.get("status") != "ok" else
                                 f"scored stage {metric} is missing or not a finite number ({row.get(metric)!r})")
    return {"seed": seed, "arm": arm, "status": row.get("status"), "error": error}


def _arm_stage(rows: Sequence[Mapping]) -> str:
    """Without configs: an arm's scored stage is the deepest stage any of its runs reports (one stage per arm)."""
    return next((m for m in FINAL_STAGES if any(_finite(r.get(m)) for r in rows)), FINAL_STAGES[-1])


def paired_deltas(runs: Sequence[Mapping] | Mapping, *, metric: str = DEFAULT_METRIC,
                  backend: str | None = None, stages: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Pair each treatment with the control of the same seed.

    Returns ``{intervention: {"seeds", "control", "treatment", "delta", "failed_pairs", "n_failed",
    "missing_seeds", "failed_treatment_seeds", "stage"}}`` with arrays over the valid pairs, in seed order.
    ``stages`` ({arm: stage}, ``arm_stages`` of the runs.json header; default: taken from a runs.json payload's
    header) fixes each arm's scored stage under ``FINAL_METRIC``; a row's own ``scored_stage`` comes next, and
    without either an arm is scored on the deepest stage any of its runs reports.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid choices: {list(METRICS)}")
    if stages is None:
        stages = arm_stages(runs.get("screen")) if isinstance(runs, Mapping) else {}
    controls, treatments = _index_rows(run_rows(runs), backend)
    final = metric == FINAL_METRIC

    def stage_of(arm: str, rows: Sequence[Mapping], row: Mapping) -> str | None:
        if not final:
            return None
        return stages.get(arm) or row.get("scored_stage") or _arm_stage(rows)

    out: dict[str, dict] = {}
    for name in sorted(treatments):
        trows = treatments[name]
        seeds, c_vals, t_vals, failed, missing, t_failed = [], [], [], [], [], []
        for seed in sorted(set(trows) | set(controls)):
            c, t = controls.get(seed), trows.get(seed)
            if c is None or t is None:
                missing.append(seed)
                continue
            cs = stage_of("control", list(controls.values()), c)
            ts = stage_of(name, list(trows.values()), t)
            c_ok, t_ok = valid_run(c, metric, cs), valid_run(t, metric, ts)
            if c_ok and t_ok:
                seeds.append(seed)
                c_vals.append(metric_value(c, metric, stage=cs))
                t_vals.append(metric_value(t, metric, stage=ts))
                continue
            failed += [_failure(seed, arm, row, st or metric)
                       for arm, row, ok, st in (("control", c, c_ok, cs), ("treatment", t, t_ok, ts)) if not ok]
            if c_ok and not t_ok:
                t_failed.append(seed)
        c_arr, t_arr = np.asarray(c_vals, float), np.asarray(t_vals, float)
        out[name] = {"seeds": seeds, "control": c_arr, "treatment": t_arr, "delta": t_arr - c_arr,
                     "failed_pairs": failed, "n_failed": len({f["seed"] for f in failed}),
                     "missing_seeds": missing, "failed_treatment_seeds": t_failed,
                     "stage": (stages.get(name) or _arm_stage(list(trows.values()))) if final else metric}
    return out
