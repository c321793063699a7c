"""Re-derive a finished run's report from its own runs: the current gate, promotion dry run and artifact budgets.

A report.json keeps the decisions of the gate that ran. After the gate changes, ``refresh(report, run_dir)``
re-analyses ``run_dir/runs.json`` (its header is the pre-registration; nothing is retrained), rewrites
``run_dir/ablation_results.json`` (and the final screen's copy under ``cycle_<n>/``), recomputes the promotion dry
run and each arm's artifact bytes at the target scale, and rebuilds the report around the unchanged parts (run
provenance, DAG, ranking, plots, cycles). A stored confirmation stage is kept as it was (its plan is not
re-derived here), and the report says which stage decided.

    python scripts/causal/report.py --input results/example/report.json --output results/example/report.md \
        --reanalyze --transfer-dir results/transfer_calibration --json-output results/example/report.json
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.causal.core.schema import read_json, write_json

__all__ = ["refresh"]


def refresh(report: Mapping[str, Any], run_dir: str | Path, *, transfer_dir: str | Path | None = None) -> dict:
    """``report`` rebuilt from ``run_dir``'s runs.json with the current gate (see the module docstring)."""
    from scripts.causal import report as rep
    from scripts.causal.pipeline.promotion import promotion_stage
    from scripts.causal.screen.target_budget import arm_budgets
    from scripts.causal.stats.analysis import analyze
    from scripts.causal.transfer.sensitivity import load_transfer

    run_dir = Path(run_dir)
    runs = read_json(run_dir / "runs.json")
    ablation = analyze(runs)
    path = write_json(run_dir / "ablation_results.json", ablation, schema_version=ablation["schema_version"])
    screen_id = (runs.get("screen") or {}).get("screen_id")
    for copy in sorted(run_dir.glob("cycle_*/ablation_results.json")):
        if (read_json(copy).get("screen") or {}).get("screen_id") == screen_id:
            write_json(copy, ablation, schema_version=ablation["schema_version"])
    confirmation = report.get("confirmation")
    decided = confirmation if confirmation and confirmation.get("results") else ablation
    confirmed = [r["intervention"] for r in decided["results"] if r.get("decision") == "confirmed"]
    options = report.get("options") or {}
    promotion = promotion_stage(confirmed, path, enabled=bool(options.get("promote", True)), apply=False,
                                screen_id=report["run"]["run_id"], log=lambda _msg: None) \
        if decided is ablation else report.get("promotion")
    budget = arm_budgets(ablation["screen"], runs["runs"], [r["intervention"] for r in ablation["results"]])
    preset = report["run"]["preset"]
    out = rep.build_report(
        info=report["run"], ablation=ablation, nats_per_bpb=report.get("nats_per_bpb"), confirmation=confirmation,
        identifiability=report.get("identifiability"), ranking={"candidates": report.get("ranking_top") or []},
        dag=report.get("dag"), promotion=promotion, snippets=rep.claim_snippets(decided), plots=report.get("plots"),
        cycles=report.get("cycles") or (), wall_s=report.get("wall_s"),
        transfer=load_transfer(transfer_dir, preset) if transfer_dir is not None else None, budget=budget)
    if transfer_dir is None:
        out["sensitivity"] = report.get("sensitivity")
    for key in ("stop", "runs_summary", "options"):
        if key in report:
            out[key] = report[key]
    return out
