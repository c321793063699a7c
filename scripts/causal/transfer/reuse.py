"""Reuse runs a committed ``runs.json`` already holds, so a re-run of the calibration trains only what is new.

A run is reused only when the new plan has the same (intervention, seed) cell **with the same config hash**:
``train_gpt.config_hash`` covers every field that changes the computation, and CPU torch at a fixed thread
count is bit-reproducible, so such a run is the run the plan would make. The reused record says where it came
from (``executor = "reused: <path>"``); everything else is trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.causal.core.schema import RUNS_ROW_FIELDS, RunRecord, ScreenPlan, read_json, write_json

__all__ = ["KEPT", "keep_unused_runs", "reuse_committed_runs", "uncovered"]

#: Committed runs of arms a later calibration set no longer screens, kept (not lost) and still reusable.
KEPT = "runs_unused.json"


def _committed(plan: ScreenPlan, runs_path: Path) -> tuple[list[dict], dict[str, str], str | None]:
    """The committed rows, the plan's config hash per arm, and the committed screen's git commit."""
    import train_gpt as tg

    if not runs_path.is_file():
        return [], {}, None
    old = read_json(runs_path)
    hashes = {name: tg.config_hash(cfg) for name, cfg in plan.configs.items()}
    return list(old.get("runs") or ()), hashes, (old.get("screen") or {}).get("git_commit")


def uncovered(plan: ScreenPlan, runs_path: str | Path) -> list[str]:
    """Arms of ``plan`` ("control" included) that the committed runs do not hold for every seed at the same config."""
    rows, hashes, _ = _committed(plan, Path(runs_path))
    have = {(r.get("intervention"), r.get("seed")) for r in rows
            if r.get("intervention") in hashes and r.get("config_hash") == hashes[r.get("intervention")]}
    return [name for name in hashes if any((name, s) not in have for s in plan.seeds)]


def reuse_committed_runs(ledger: Any, plan: ScreenPlan, runs_path: str | Path) -> int:
    """Copy into ``ledger`` (under ``plan.screen_id``) each run of ``runs_path`` whose cell and config hash the plan
    has; returns how many. A missing file reuses nothing."""
    path = Path(runs_path)
    rows, hashes, commit = _committed(plan, path)
    seeds = set(plan.seeds)
    n = 0
    for row in rows:
        name = row.get("intervention")
        if name not in hashes or row.get("seed") not in seeds or row.get("config_hash") != hashes[name]:
            continue
        rec = RunRecord(screen_id=plan.screen_id, config_hash=row["config_hash"], git_commit=commit,
                        executor=f"reused: {path}", error=row.get("error"),
                        **{k: row.get(k) for k in RUNS_ROW_FIELDS if k in RunRecord.__dataclass_fields__})
        n += bool(ledger.record_run(rec))
    return n


def keep_unused_runs(runs_path: str | Path, kept_path: str | Path, new_runs: Any) -> int:
    """Before ``runs_path`` is rewritten for a new plan, move its rows that the new runs do not contain (same
    intervention, seed and config hash) into ``kept_path`` (merged with what it holds); returns how many are kept."""
    runs_path, kept_path = Path(runs_path), Path(kept_path)
    have = {(r.intervention, r.seed, r.config_hash) for r in new_runs}
    rows = []
    for path in (kept_path, runs_path):
        if path.is_file():
            rows += [r for r in read_json(path).get("runs") or ()]
    kept, seen = [], set()
    for r in rows:
        key = (r.get("intervention"), r.get("seed"), r.get("config_hash"))
        if key not in have and key not in seen:
            seen.add(key)
            kept.append(r)
    if kept:
        write_json(kept_path, {"note": "committed calibration runs of arms the current calibration set does not "
                                       "screen; reused when a later set needs them (same cell, same config hash)",
                               "runs": kept})
    return len(kept)
