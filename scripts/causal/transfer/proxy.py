"""Run the calibration set's interventions as one paired screen per proxy preset, and keep what can be run.

Each preset screens every calibration intervention it can represent against its own control (the preset's
baseline), on the same seeds, scored as the challenge scores (``final_val_bpb``: each run's last evaluation
stage, so a sliding or TTT evaluation is compared with the control's plain round trip), through the same plan,
executor, ledger and gate as any screen (so a run killed midway resumes from the ledger). Interventions the preset cannot represent (``registry.representable``), or that
its backend lacks, are refused with the reason, not run.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.errors import ConfigError
from scripts.causal.core.provenance import git_commit
from scripts.causal.core.schema import read_json, write_json
from scripts.causal.transfer.reuse import KEPT, keep_unused_runs, reuse_committed_runs, uncovered

__all__ = ["refusals", "screen_preset"]


def refusals(names: Sequence[str], preset: str, backend: str = "torch",
             overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Intervention -> why ``preset`` (with ``overrides``) cannot screen it (absent: it can)."""
    from scripts.causal.screen import registry as reg
    from scripts.causal.screen.plan import base_config

    base = base_config(preset, dict(overrides or {}))
    out = {}
    for name in names:
        iv = reg.get_intervention(name)
        if backend not in iv.backends:
            out[name] = f"{name} exists in {', '.join(iv.backends)} only, not {backend}"
            continue
        why = reg.representable(name, base)
        if why is not None:
            out[name] = why
    return out


def screen_preset(preset: str, names: Sequence[str], *, seeds: Sequence[int], out_dir: Path, ledger_path: Path,
                  threads: int | None = None, backend: str = "torch", executor: str = "inprocess",
                  ray_address: str | None = None, progress: bool = True, overrides: Mapping[str, Any] | None = None,
                  reuse_only: bool = False, log: Callable[[str], None] = print
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """(ablation_results payload, refused) of ``names`` screened at ``preset``; writes runs.json and
    ablation_results.json under ``out_dir``. ``reuse_only``: train nothing; an intervention whose runs the
    committed runs.json does not hold (every seed, same config hash, and the control's) is refused with that reason."""
    from scripts.causal import experiment_runner as er
    from scripts.causal.screen.executors import make_executor
    from scripts.causal.screen.ledger import Ledger
    from scripts.causal.screen.trainer import decide_threads
    from scripts.causal.stats.analysis import analyze
    from scripts.causal.stats.pairing import FINAL_METRIC

    refused = refusals(names, preset, backend, overrides)
    runnable = [n for n in names if n not in refused]
    for name, why in refused.items():
        log(f"{preset}: {name} refused: {why}")
    if not runnable:
        raise ConfigError(f"preset {preset!r} can represent none of the calibration interventions {list(names)}")
    plan = er.build_plan(interventions=runnable, seeds=list(seeds), preset=preset, backend=backend,
                         base_overrides=dict(overrides or {}),
                         metric=FINAL_METRIC, screen_id=f"transfer-calibration-{preset}-{backend}")
    if reuse_only:
        missing = uncovered(plan, out_dir / "runs.json")
        if "control" in missing:
            raise ConfigError(f"{preset}: --reuse-only, but {out_dir / 'runs.json'} holds no control run for every "
                              f"seed {list(seeds)} at the current config; run the preset without --reuse-only")
        for name in missing:
            refused[name] = "not run: --reuse-only, and the committed runs do not cover it (every seed, same config)"
            log(f"{preset}: {name} refused: {refused[name]}")
        runnable = [n for n in runnable if n not in missing]
        if not runnable:
            raise ConfigError(f"{preset}: --reuse-only, and no calibration intervention has committed runs")
        plan = er.build_plan(interventions=runnable, seeds=list(seeds), preset=preset, backend=backend,
                             base_overrides=dict(overrides or {}),
                             metric=FINAL_METRIC, screen_id=f"transfer-calibration-{preset}-{backend}-reused")
    threads = decide_threads(backend, log, threads) if executor == "inprocess" else threads
    with Ledger(ledger_path) as ledger:
        ledger.register_screen(plan.screen_id, plan.preregistration(), git_commit=git_commit())
        reused = sum(reuse_committed_runs(ledger, plan, out_dir / name) for name in ("runs.json", KEPT))
        if reused:
            log(f"{preset}: {reused} runs reused from the committed {out_dir / 'runs.json'} (same cell, same config hash)")
        result = er.run_screen(plan, ledger=ledger, executor=make_executor(executor, threads=threads,
                                                                              address=ray_address),
                               progress=progress)
    keep_unused_runs(out_dir / "runs.json", out_dir / KEPT, result.runs)  # runs of arms the set no longer has
    runs_path = er.write_runs_json(out_dir / "runs.json", plan, result.runs)
    payload = analyze(read_json(runs_path))
    write_json(out_dir / "ablation_results.json", payload, schema_version=payload["schema_version"])
    log(f"{preset}: {result.n_executed} runs executed, {result.n_skipped} reused from {ledger_path.name}")
    return payload, refused

