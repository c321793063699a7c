"""Paired-seed screen runner: control + treatments per seed, interleaved, recorded in the SQLite ledger.

Design (fixed before the first run and stored in the ledger as the screen's pre-registration):

* one control arm per seed, shared by every treatment of the screen;
* each treatment is paired with the control of the same seed, and the seed drives data order and init
  in both arms (common random numbers);
* runs are interleaved so slow drift cancels: control s1, treatments s1, control s2, treatments s2, ...;
* a diverged or failed run is recorded with its status and error, and the screen goes on.

Each finished run is written to the ledger in one transaction, keyed by
(screen_id, intervention, seed, config_hash): ``--resume`` (or a re-run) skips completed runs, and a
kill -9 loses at most the runs in flight. An executor with ``run_many`` (``--executor ray``) runs the
missing cells concurrently; this process alone writes the ledger, in completion order.

CLI::

    python scripts/causal/experiment_runner.py --interventions aa,sanity_frozen_matrices,mlp_mult_3 \\
        --seeds 11,12,13,14,15 --preset fast --backend torch \\
        --ledger results/ledger.sqlite --output results/acceptance_screen/runs.json

Python API: ``build_plan(...) -> ScreenPlan`` (every arm's config resolved once, in ``plan.configs``),
``plan_grid(plan)``, ``run_screen(plan, *, ledger, executor, progress) -> ScreenResult``,
``write_runs_json(path, plan, runs)``, ``plan_from_ledger(ledger, screen_id)``, ``experiment_rows(plan, runs)``
(rows for the DAG stage).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import train_gpt as tg
from scripts.causal.core.cli import add_debug_flag, parse_key_values, parse_seeds, run_cli
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import RESULTS_DIR
from scripts.causal.core.provenance import git_commit
from scripts.causal.core.schema import RunRecord, ScreenPlan, ScreenResult, write_json
from scripts.causal.screen import registry as reg
from scripts.causal.screen.executors import (
    EXECUTORS,
    Executor,
    InProcessExecutor,
    check_result_config,
    failed_result,
    make_executor,
)
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.plan import (  # noqa: F401  (the runner's planning API, used by stages and tests)
    BACKENDS,
    CONTROL,
    CORRECTIONS,
    GridCell,
    arm_hash,
    base_config,
    bit_reproducible,
    build_plan,
    build_script_plan,
    extend_seeds,
    plan_from_ledger,
    plan_grid,
    sequential_design,
)
from scripts.causal.screen.progress import LineProgress, make_progress
from scripts.causal.stats.pairing import FINAL_METRIC, METRICS, metric_value, scored_stage


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _or_none(x: Any) -> Any:
    return x if _finite(x) else None


def to_record(result: tg.RunResult, *, screen_id: str, cell: GridCell, planned: tg.Hyperparameters,
              expected_hash: str, commit: str | None, executor: str) -> RunRecord:
    """The one conversion of a run: the trainer's RunResult -> its ledger row (non-finite metrics -> None).

    Flags config mismatches and a non-finite val_bpb. ``expected_hash`` (the arm's planned config hash) is the
    ledger key; the config actually run (seed and resolved data paths filled in) is stored in ``config``.
    """
    status, error = result.status or "failed", result.error
    checkable = isinstance(planned, tg.Hyperparameters)  # a ScriptConfig is checked by its executor (sha256)
    problem = check_result_config(planned, cell.seed, result) if status != "failed" and checkable else None
    if problem is not None:
        status, error = "failed", f"ran a different config than planned: {problem}"
    elif status == "ok" and checkable and not _finite(result.val_bpb):
        status, error = "diverged", f"val_bpb is not finite ({result.val_bpb})"
    elif status == "ok" and checkable and not _finite(getattr(result, scored_stage(planned.to_dict()), None)):
        stage = scored_stage(planned.to_dict())
        value = getattr(result, stage, None)
        status = "failed" if value is None else "diverged"
        error = f"scored stage {stage} is {'missing' if value is None else f'not finite ({value})'}"
    return RunRecord(
        screen_id=screen_id, intervention=cell.intervention, arm=cell.arm, seed=int(cell.seed),
        backend=str(result.backend), config_hash=expected_hash, status=status, error=error,
        val_loss=_or_none(result.val_loss), val_bpb=_or_none(result.val_bpb),
        post_quant_val_loss=_or_none(result.post_quant_val_loss),
        post_quant_val_bpb=_or_none(result.post_quant_val_bpb),
        artifact_bytes=result.artifact_bytes if result.status == "ok" else None,
        sliding_val_bpb=_or_none(result.sliding_val_bpb), ttt_val_bpb=_or_none(result.ttt_val_bpb),
        model_bytes=result.model_bytes if result.status == "ok" else None,
        within_budget=result.within_budget if result.status == "ok" else None, steps=result.steps,
        wall_s=_or_none(result.wall_s), tokens_per_s=_or_none(result.tokens_per_s),
        step_losses=list(result.step_losses), val_history=list(result.val_history), versions=dict(result.versions),
        git_commit=commit, executor=executor, config=dict(result.config), finished_at=time.time(),
        horizon_metrics=dict(getattr(result, "horizon_metrics", None) or {}),
    )


def _score(rec: RunRecord) -> float | None:
    """The run's final_val_bpb: its config's scored stage; a --train-script run's deepest reported stage (its env
    knobs are the script's own, not our trainer's)."""
    ours = rec.config and "train_script" not in rec.config
    return metric_value(rec.runs_row(), FINAL_METRIC, stage=scored_stage(rec.config) if ours else None)


def format_run_line(rec: RunRecord, control: RunRecord | None, *, done: int, total: int) -> str:
    """One line per finished run: intervention, seed, its score as the challenge takes it (the scored evaluation
    stage of its config, ``final_val_bpb``) and the delta vs the same seed's control on that score. (Pre-quant val_bpb
    would show an evaluation-only change such as TTT as delta +0.0000.)"""
    score, base = _score(rec), _score(control) if control is not None else None
    bpb = f"{score:.4f}" if score is not None else "n/a"
    if rec.arm == "control":
        delta = "(control)"
    elif score is not None and base is not None:
        delta = f"delta {score - base:+.4f}"
    else:
        delta = "delta n/a"
    tail = "" if rec.status == "ok" else f" [{rec.status}: {rec.error}]"
    wall = f" {rec.wall_s:.1f}s" if _finite(rec.wall_s) else ""
    return f"[{done}/{total}] {rec.intervention:<24} seed={rec.seed:<6} score_bpb={bpb} {delta}{wall}{tail}"


def run_screen(plan: ScreenPlan, *, ledger: Ledger, executor: Executor | None = None,
               progress: LineProgress | bool = True,
               on_run: Callable[[RunRecord], None] | None = None) -> ScreenResult:
    """Run (or resume) a screen: pre-register it, then run every grid cell not yet in the ledger.

    A group-sequential plan (``plan.sequential``) runs its first ``n0`` seeds, then adds seeds round by round
    to the arms ``stats.sequential_plan`` keeps open (and their controls), until every arm stopped or ran all
    seeds. ``progress``: a ``screen.progress`` renderer, or True/False for the default one (bars on a terminal,
    plain lines otherwise; False keeps the per-run lines and drops the bars). ``on_run`` is called with each
    newly finished RunRecord after it is committed to the ledger. Returns every run of the screen in grid order.
    An executor with ``run_many`` gets every missing cell at once and its results are recorded as they finish.
    """
    executor = executor or InProcessExecutor()
    prog = progress if isinstance(progress, LineProgress) else make_progress(bool(progress))
    commit = git_commit()
    ledger.register_screen(plan.screen_id, plan.preregistration(), git_commit=commit)
    hashes = {name: arm_hash(cfg) for name, cfg in plan.configs.items()}
    grid = plan_grid(plan)
    done: dict[int, RunRecord] = {}
    for cell in grid:
        rec = ledger.get_run(plan.screen_id, cell.intervention, cell.seed, hashes[cell.intervention])
        if rec is not None:
            done[cell.index] = rec
    n_skipped = len(done)
    controls = {r.seed: r for r in done.values() if r.arm == "control"}
    counter = {"executed": 0}

    def run_cells(cells: Sequence[GridCell]) -> None:
        for cell, result in _results(plan, [c for c in cells if c.index not in done], executor, prog):
            cfg = plan.configs[cell.intervention]
            rec = to_record(result, screen_id=plan.screen_id, cell=cell, planned=cfg,
                            expected_hash=hashes[cell.intervention],
                            commit=commit, executor=getattr(executor, "name", type(executor).__name__))
            ledger.record_run(rec)
            rec = ledger.get_run(plan.screen_id, cell.intervention, cell.seed, hashes[cell.intervention]) or rec
            done[cell.index] = rec
            counter["executed"] += 1
            if rec.arm == "control":
                controls[rec.seed] = rec
            prog.run_finished(format_run_line(rec, controls.get(rec.seed), done=len(done), total=len(grid)))
            if on_run is not None:
                on_run(rec)

    prog.start(plan.screen_id, len(grid), n_skipped)
    if n_skipped:
        prog.line(f"resuming {plan.screen_id}: {n_skipped}/{len(grid)} runs already in {ledger.path}")
    try:
        if plan.sequential is None:
            run_cells(grid)
        else:
            _run_sequential(plan, grid, done, run_cells, prog)
    finally:
        prog.close()
    runs = tuple(done[c.index] for c in grid if c.index in done)
    return ScreenResult(plan=plan, runs=runs, n_executed=counter["executed"], n_skipped=n_skipped)


def sequential_state(plan: ScreenPlan, runs: Sequence[RunRecord]) -> dict:
    """``stats.sequential_plan`` on the runs so far: each family arm's status and the seeds to run next."""
    from scripts.causal.stats.sequential_plan import sequential_plan

    family = plan.preregistration()["family"]
    seq = dict(plan.sequential or {})
    return sequential_plan([r.runs_row() for r in runs], seeds=plan.seeds, family=family, alpha=plan.alpha,
                           n0=seq.get("n0", 3), step=seq.get("step", 1), margin_bpb=plan.margin_bpb,
                           metric=plan.metric, futility_effect_sd=seq.get("futility_effect_sd"))


def _run_sequential(plan: ScreenPlan, grid: Sequence[GridCell], done: dict[int, RunRecord],
                    run_cells: Callable[[Sequence[GridCell]], None], prog: LineProgress) -> None:
    """Rounds of a group-sequential screen: the first n0 seeds for every arm, then what the design keeps open."""
    n0 = int(plan.sequential["n0"])
    first = set(plan.seeds[:n0])
    run_cells([c for c in grid if c.seed in first])
    while True:
        state = sequential_state(plan, [done[i] for i in sorted(done)])
        if state["done"]:
            stops = ", ".join(f"{a}={r['status']}@n={r.get('look')}" for a, r in state["results"].items())
            prog.line(f"{plan.screen_id}: sequential design finished ({stops})")
            return
        wanted = {(CONTROL, s) for s in state["next_control_seeds"]}
        wanted |= {(arm, s) for arm, seeds in state["next"].items() for s in seeds}
        cells = [c for c in grid if (c.intervention, c.seed) in wanted and c.index not in done]
        if not cells:  # every wanted run already failed: nothing new can change the state
            return
        run_cells(cells)


def _results(plan: ScreenPlan, cells: Sequence[GridCell], executor: Executor,
             prog: LineProgress) -> Iterator[tuple[GridCell, tg.RunResult]]:
    """(cell, RunResult) for every cell: concurrently in completion order through the executor's ``run_many``
    when it has one (Ray), else one after another in grid order."""
    if hasattr(executor, "run_many"):
        def status(running: list, queued: int) -> None:
            prog.cluster([f"{c.intervention} seed {c.seed} @{host}" for c, host in running], queued)

        jobs = [(cell, plan.configs[cell.intervention], cell.seed, plan.backend) for cell in cells]
        yield from executor.run_many(jobs, on_status=status)
        return
    for cell in cells:
        cfg = plan.configs[cell.intervention]
        prog.run_started(f"{cell.intervention} seed {cell.seed}", int(getattr(cfg, "iterations", 0) or 0))
        try:
            result = executor.run(cfg, cell.seed, plan.backend, on_step=prog.on_step)
        except Exception as exc:  # an executor bug must not stop the screen: record the run as failed
            result = failed_result(cfg, cell.seed, plan.backend, f"executor raised {type(exc).__name__}: {exc}")
        yield cell, result


def screen_header(plan: ScreenPlan, *, commit: str | None = None) -> dict:
    """The ``screen`` block of runs.json (the pre-registration plus identity)."""
    return {"screen_id": plan.screen_id, "git_commit": commit, **plan.preregistration(),
            "interventions": list(plan.intervention_names),
            "treatment_overrides": {n: dict(o) for n, o in plan.treatments}}


def write_runs_json(path: str | Path, plan: ScreenPlan, runs: Sequence[RunRecord], *,
                    commit: str | None = None) -> Path:
    """Write runs.json: {"schema_version": 1, "screen": {...}, "runs": [row, ...]} (rows in grid order)."""
    commits = sorted({r.git_commit for r in runs if r.git_commit})
    header = screen_header(plan, commit=commit or (commits[-1] if commits else None))
    return write_json(path, {"screen": header, "runs": [r.runs_row() for r in runs]})


def experiment_rows(plan: ScreenPlan, runs: Sequence[RunRecord]) -> list[dict]:
    """Runs as DAG experiment rows ``{"intervention", "feature", "value", "val_bpb", "seed", "arm",
    "control_value"}``.

    Only runs with a finite val_bpb (failed and diverged runs carry no measurement). Control rows and
    treatments without a canonical feature have feature/value/control_value None; otherwise value is the
    feature's value in the treatment's config (e.g. "gelu" for activation, True for partial_rope) and
    control_value its value in the control config (the DAG stage needs it to place numeric features).
    """
    overrides = {name: {k.lower(): v for k, v in ov.items()} for name, ov in plan.treatments}
    views = {name: _feature_view(cfg) for name, cfg in plan.configs.items()}
    rows = []
    for r in runs:
        if r.status != "ok" or not _finite(r.val_bpb):
            continue
        feature = None if r.arm == "control" else reg.treatment_feature(r.intervention, overrides[r.intervention])
        rows.append({"intervention": r.intervention, "feature": feature,
                     "value": _feature_value(feature, views[r.intervention]), "val_bpb": r.val_bpb,
                     "seed": r.seed, "arm": r.arm, "control_value": _feature_value(feature, views[CONTROL])})
    return rows


def _feature_view(cfg: Any) -> Any:
    """What ``registry.feature_value`` reads: the Hyperparameters, or a ``--train-script`` arm's knob values."""
    if hasattr(cfg, "script_sha256"):
        from scripts.causal.screen.script_target import config_view

        return config_view(cfg)
    return cfg


def _feature_value(feature: str | None, view: Any) -> Any:
    if not feature:
        return None
    try:
        return reg.feature_value(feature, view)
    except (AttributeError, TypeError, ValueError):  # a script without that knob: the value is unknown
        return None


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run a paired-seed screen (control + treatments per seed) into a ledger.")
    p.add_argument("--interventions", default="", help="comma-separated registry names, e.g. aa,mlp_mult_3")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="ad-hoc treatment (repeatable; KEY=V,KEY2=V2 for one combined treatment), e.g. mlp_mult=3")
    p.add_argument("--base-override", action="append", default=[], metavar="KEY=VALUE",
                   help="change the control itself (all arms), e.g. iterations=50 (repeatable)")
    p.add_argument("--seeds", default="11,12,13,14,15", help="comma-separated seeds (default: 11,12,13,14,15)")
    p.add_argument("--preset", default="fast", help="train_gpt preset: baseline | fast | tiny (default: fast)")
    p.add_argument("--stack", default=None,
                   help="control = a leaderboard stack scaled to --preset, e.g. 11l_ema_leaky (see screen/stacks.py)")
    p.add_argument("--backend", default="torch", help="torch | mlx | auto (default: torch)")
    p.add_argument("--ledger", default=str(RESULTS_DIR / "ledger.sqlite"), help="SQLite ledger (default: %(default)s)")
    p.add_argument("--output", default=None, help="runs.json path (default: results/<screen-id>/runs.json)")
    p.add_argument("--screen-id", default=None, help="screen id (default: derived from the design)")
    p.add_argument("--resume", action="store_true", help="continue an existing screen, skipping completed runs")
    p.add_argument("--executor", default="inprocess", choices=sorted(EXECUTORS),
                   help="where each run executes (default: inprocess; ray: concurrent tasks on a Ray cluster)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: the cluster (default: start a local one; 'auto': join `ray start`)")
    p.add_argument("--timeout", type=float, default=None, help="per-run timeout in s (subprocess/torchrun/ray)")
    p.add_argument("--nproc-per-node", type=int, default=None,
                   help="torchrun processes per node (default: 8); with --executor ray, each run is a torchrun "
                        "job over this many GPUs of one node")
    p.add_argument("--alpha", type=float, default=0.01, help="pre-registered alpha (default: 0.01)")
    p.add_argument("--margin-bpb", type=float, default=0.0, help="pre-registered improvement margin (default: 0)")
    p.add_argument("--correction", default="holm", choices=list(CORRECTIONS), help="multiplicity correction")
    p.add_argument("--metric", default=FINAL_METRIC, choices=list(METRICS),
                   help="pre-registered decision metric (default final_val_bpb: each run's scored stage, post-TTT, "
                        "sliding or the post-quant round trip as its config runs; an evaluation-only change needs it)")
    p.add_argument("--train-script", default=None, metavar="PATH",
                   help="screen this upstream-style train_gpt.py (e.g. a record's) under torchrun instead of our "
                        "trainer: its env knobs are read from its source; --override / --base-override become env "
                        "vars (KNOB=VALUE); needs --executor torchrun or ray")
    p.add_argument("--import-logs", default=None, metavar="DIR",
                   help="run nothing: import the train logs in DIR (arms grouped by config, paired by seed) "
                        "into the ledger and runs.json, and gate them (see screen/log_import.py)")
    p.add_argument("--import-control", default=None, metavar="KEY=VALUE",
                   help="with --import-logs: the control is the arm whose printed config has these values, e.g. "
                        "mlp_mult=2 (default: the arm of the first log in name order)")
    p.add_argument("--effect-bpb", type=float, default=None,
                   help="pre-registered effect of interest in bpb, e.g. 0.003 (default: 0.005 nats, the record bar)")
    p.add_argument("--pool-aa", action="store_true",
                   help="pre-register pooling the variance of d with the A/A arm's pairs (a non-reproducible "
                        "backend with aa_mode arm; the analysis may pool only if this was registered)")
    p.add_argument("--sequential", action="store_true",
                   help="group-sequential seeds (O'Brien-Fleming, non-binding futility): stop clear arms early")
    p.add_argument("--max-seeds", type=int, default=None,
                   help="with --sequential: seeds at most per arm (extends --seeds with the next integers), e.g. 10")
    p.add_argument("--futility-sd", type=float, default=None,
                   help="with --sequential: planned effect in sigma_d units for the futility bound, e.g. 0.5")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (run lines still print; bars are drawn only on a terminal)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per run, e.g. 1 (in-process default: chosen once from the current load; "
                        "ray: CPUs per task, default 1)")
    p.add_argument("--export-only", action="store_true",
                   help="run nothing: write runs.json for the screen from the ledger (with --screen-id)")
    add_debug_flag(p)
    return p


def _export_only(args: argparse.Namespace) -> int:
    if not args.screen_id:
        raise ConfigError("--export-only needs --screen-id (the screen to export from the ledger)")
    with Ledger(args.ledger) as ledger:
        plan = plan_from_ledger(ledger, args.screen_id)
        by_key = {(r.intervention, r.seed): r for r in ledger.runs(plan.screen_id)}
        runs = [by_key[(c.intervention, c.seed)] for c in plan_grid(plan) if (c.intervention, c.seed) in by_key]
        out = Path(args.output) if args.output else RESULTS_DIR / plan.screen_id / "runs.json"
        write_runs_json(out, plan, runs)
    print(f"screen {plan.screen_id}: exported {len(runs)}/{len(plan_grid(plan))} runs -> {out}", file=sys.stderr)
    return 0


def _script_plan(args: argparse.Namespace, names: list[str], base_overrides: dict) -> ScreenPlan:
    if args.executor not in ("torchrun", "ray"):
        raise ConfigError(f"--train-script runs the script under torchrun: pass --executor torchrun or ray "
                          f"(got --executor {args.executor})")
    if args.stack or args.sequential:
        raise ConfigError("--train-script screens the script as it is: --stack and --sequential do not apply")
    return build_script_plan(train_script=args.train_script, interventions=names, seeds=args.seeds,
                             overrides=args.override, base_env=base_overrides, alpha=args.alpha,
                             margin_bpb=args.margin_bpb, correction=args.correction, screen_id=args.screen_id,
                             metric=args.metric, effect_bpb=args.effect_bpb)


def _main(args: argparse.Namespace) -> int:
    if args.export_only:
        return _export_only(args)
    if args.import_logs:
        from scripts.causal.screen.log_import import import_main

        return import_main(args)
    backend = args.backend
    if backend == "auto":
        from scripts.causal.screen import trainer

        backend = trainer.resolve_backend("auto")
    base_overrides: dict[str, str] = {}
    for spec in args.base_override:
        base_overrides.update(parse_key_values(spec, "--override"))
    names = [n.strip() for n in args.interventions.split(",") if n.strip()]
    with Ledger(args.ledger) as ledger:
        if args.resume and args.screen_id and not names and not args.override:
            plan = plan_from_ledger(ledger, args.screen_id)
        elif args.train_script:
            plan = _script_plan(args, names, base_overrides)
        else:
            seeds = parse_seeds(args.seeds)
            sequential = None
            if args.sequential:
                seeds, sequential = sequential_design(seeds, max_seeds=args.max_seeds, futility_sd=args.futility_sd)
            plan = build_plan(interventions=names, seeds=seeds, preset=args.preset, backend=backend,
                              overrides=args.override, base_overrides=base_overrides or None, alpha=args.alpha,
                              margin_bpb=args.margin_bpb, correction=args.correction, screen_id=args.screen_id,
                              metric=args.metric, effect_bpb=args.effect_bpb, sequential=sequential,
                              stack=args.stack, pool_aa=args.pool_aa)
        existing = ledger.count_runs(plan.screen_id) if ledger.get_screen(plan.screen_id) else 0
        if args.resume and ledger.get_screen(plan.screen_id) is None:
            raise ConfigError(f"--resume: {args.ledger} has no screen {plan.screen_id!r} "
                              f"(known: {ledger.list_screens()}); drop --resume to start it")
        if existing and not args.resume:
            raise ConfigError(f"screen {plan.screen_id!r} already has {existing} runs in {args.ledger}; "
                              "pass --resume to continue it (completed runs are skipped) or a new --screen-id")
        if args.ray_address and args.executor != "ray":
            raise ConfigError(f"--ray-address needs --executor ray (got --executor {args.executor})")
        executor = make_executor(args.executor, timeout_s=args.timeout, nproc_per_node=args.nproc_per_node,
                                 threads=args.threads, address=args.ray_address)
        try:
            result = run_screen(plan, ledger=ledger, executor=executor, progress=not args.no_progress)
        finally:
            getattr(executor, "close", lambda: None)()
        out = Path(args.output) if args.output else RESULTS_DIR / plan.screen_id / "runs.json"
        write_runs_json(out, plan, result.runs)
    bad = [r for r in result.runs if r.status != "ok"]
    print(f"screen {plan.screen_id}: {len(result.runs)} runs ({result.n_executed} run now, {result.n_skipped} "
          f"resumed, {len(bad)} not ok) -> {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _main(args), debug=args.debug, prog="experiment_runner")


if __name__ == "__main__":
    sys.exit(main())
