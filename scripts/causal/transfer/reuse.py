"""Reuse runs a committed ``runs.json`` already holds, so a re-run of the calibration trains only what is new.

A run is reused only when the new plan has the same (intervention, seed) cell **with the same config hash**:
``train_gpt.config_hash`` covers every field that changes the computation, and CPU torch at a fixed thread
count is bit-reproducible, so such a run is the run the plan would make. The reused record says where it came
from (``executor = "reused: <path>"``); everything else is trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.causal.core.schema import RUNS_ROW_FIELDS, RunRecord, ScreenPlan, read_json

__all__ = ["reuse_committed_runs"]


def reuse_committed_runs(ledger: Any, plan: ScreenPlan, runs_path: str | Path) -> int:
    """Copy into ``ledger`` (under ``plan.screen_id``) each run of ``runs_path`` whose cell and config hash the plan
    has; returns how many. A missing file reuses nothing."""
    import train_gpt as tg

    path = Path(runs_path)
    if not path.is_file():
        return 0
    old = read_json(path)
    hashes = {name: tg.config_hash(cfg) for name, cfg in plan.configs.items()}
    seeds = set(plan.seeds)
    commit = (old.get("screen") or {}).get("git_commit")
    n = 0
    for row in old.get("runs") or ():
        name = row.get("intervention")
        if name not in hashes or row.get("seed") not in seeds or row.get("config_hash") != hashes[name]:
            continue
        rec = RunRecord(screen_id=plan.screen_id, config_hash=row["config_hash"], git_commit=commit,
                        executor=f"reused: {path}", error=row.get("error"),
                        **{k: row.get(k) for k in RUNS_ROW_FIELDS if k in RunRecord.__dataclass_fields__})
        n += bool(ledger.record_run(rec))
    return n
