"""The whole pipeline: leaderboard DAG -> ranking -> paired-seed screens -> statistics -> DAG update -> report.

    python scripts/causal/run_pipeline.py --fast              # ~10 min on a 2-core CPU, default corpus
    python scripts/causal/run_pipeline.py --fast --resume     # reuse every finished run (< 1 min)

Cycle 0 extracts (or reuses) results/interventions.json, estimates the DAG, checks identifiability and
ranks candidates. Each screen cycle runs the top-K runnable interventions plus calibration arms on
paired seeds, applies the pre-registered decision gate, confirms winners on fresh seeds, feeds the runs
back into the DAG as interventional rows and re-estimates it with a diff. It stops on a confirmed
effect, on the time budget, or after N null cycles; then it promotes (dry-run diff by default) and
writes results/<run_id>/{report.md, report.json, plots/}. Orchestration only: the logic lives in
pipeline_stages.py, report.py, plot_*.py and the stages' own modules.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from scripts.causal.core.cli import add_debug_flag, parse_key_values, parse_seeds, run_cli
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import REPO_ROOT, RESULTS_DIR
from scripts.causal.core.schema import PipelineOptions, RunInfo, write_json
from scripts.causal.pipeline import finish as pf
from scripts.causal.pipeline import stages as st

FAST_SEEDS = (11, 12, 13, 14, 15)
FAST_CONFIRM_SEEDS = (1011, 1012, 1013, 1014, 1015)
FAST_CALIBRATION = ("aa", "sanity_frozen_matrices")
TEST_DESCRIPTION = ("paired differences d = val_bpb(treatment) - val_bpb(control, same seed); one-sided paired "
                    "t-tests for improvement (H1: mean d < -margin) and harm (H1: mean d > 0); {corr} across "
                    "every intervention x both directions; confirmed needs adjusted p < alpha and mean "
                    "improvement >= margin; winners re-tested on fresh seeds with Holm")



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--fast", action="store_true",
                   help="fast preset, top-2 interventions + aa + sanity_frozen_matrices, 5 seeds, 1 cycle")
    p.add_argument("--preset", help="train_gpt.py preset, e.g. fast, tiny, baseline (default: fast)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "mlx"),
                   help="auto = torch on CUDA, MLX on Apple Silicon, the faster one on a Linux CPU")
    p.add_argument("--seeds", help="screen seeds, e.g. 11,12,13,14,15 (default)")
    p.add_argument("--confirm-seeds", help="fresh seeds for confirmation, e.g. 1011,1012,1013,1014,1015")
    p.add_argument("--interventions", help="run these instead of the ranking's top-K, e.g. act_gelu,mlp_mult_3")
    p.add_argument("--top-k", type=int, default=None, help="interventions per cycle from the ranking (default 3; 2 with --fast)")
    p.add_argument("--cycles", type=int, default=None, help="maximum screen cycles (default 1 with --fast, else 3)")
    p.add_argument("--max-null-cycles", type=int, default=2, help="stop after this many cycles with nothing found")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="stop starting new screens past this wall time, e.g. 60 (default: 10 with --fast, none)")
    p.add_argument("--alpha", type=float, default=0.01, help="family-wise error rate of the gate (default 0.01)")
    p.add_argument("--margin-bpb", type=float, default=0.0, help="improvement a change must beat, e.g. 0.002")
    p.add_argument("--correction", default="holm", choices=("holm", "bh"), help="screen multiplicity correction")
    p.add_argument("--no-confirm", action="store_true", help="skip the fresh-seed confirmation of winners")
    p.add_argument("--promote", dest="promote", action="store_true", default=True,
                   help="promote confirmed changes into train_gpt.py as a dry-run diff (default on)")
    p.add_argument("--no-promote", dest="promote", action="store_false", help="skip the promotion step")
    p.add_argument("--apply-promotion", action="store_true", help="write the promoted defaults into train_gpt.py")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest run of this preset/backend (or --output-dir), reusing finished runs")
    p.add_argument("--output-dir", type=Path, help="run folder (default: results/<preset>-<backend>-<UTC time>)")
    p.add_argument("--run-id", help="name of the run (default: the output folder's name)")
    p.add_argument("--records", action="append", default=[], metavar="DIR",
                   help="re-extract the matrix from leaderboard record folders instead of reusing it")
    p.add_argument("--matrix", default="results/interventions.json", help="intervention matrix to reuse")
    p.add_argument("--bootstrap", type=int, default=None, help="FCI bootstrap resamples (default 100; 30 with --fast)")
    p.add_argument("--dag-alpha", type=float, default=0.05, help="FCI independence-test alpha")
    p.add_argument("--data-path", help="shard folder (default: the embedded corpus, prepared on first use)")
    p.add_argument("--tokenizer-path", help="SentencePiece model matching --data-path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every arm, e.g. iterations=60 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (log lines only)")
    add_debug_flag(p)
    return p


def _latest_run_dir(preset: str, backend: str) -> Path | None:
    dirs = sorted(d for d in RESULTS_DIR.glob(f"{preset}-{backend}-*") if (d / "pipeline_options.json").is_file())
    return dirs[-1] if dirs else None


def options_from_args(args: argparse.Namespace, *, now: dt.datetime | None = None) -> PipelineOptions:
    """Resolve flags (and --fast's defaults) into PipelineOptions. Pure apart from resolving the backend."""
    from scripts.causal.screen.trainer import resolve_backend

    now = now or dt.datetime.now(dt.timezone.utc)
    preset = args.preset or "fast"
    backend = resolve_backend(args.backend)
    out = args.output_dir
    if out is None and args.resume:
        out = _latest_run_dir(preset, backend)
        if out is None:
            raise ConfigError(f"--resume: no earlier run of preset {preset!r} on {backend} under {RESULTS_DIR}; "
                              "run once without --resume, or pass --output-dir")
    if out is None:
        out = RESULTS_DIR / f"{preset}-{backend}-{now.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out).resolve()
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else FAST_SEEDS
    confirm = parse_seeds(args.confirm_seeds, "--confirm-seeds") if args.confirm_seeds else FAST_CONFIRM_SEEDS
    if set(seeds) & set(confirm):
        raise ConfigError(f"--confirm-seeds {sorted(set(seeds) & set(confirm))} overlap --seeds; confirmation "
                          "needs fresh seeds")
    data = {}
    if args.data_path or args.tokenizer_path:
        if not (args.data_path and args.tokenizer_path):
            raise ConfigError("--data-path and --tokenizer-path go together (shards + their tokenizer)")
        data = {"data_path": args.data_path, "tokenizer_path": args.tokenizer_path}
    extra = parse_key_values(args.set, "--set")
    names = tuple(s for s in (args.interventions or "").split(",") if s)
    if names:
        from scripts.causal.screen.registry import list_interventions

        known = sorted(iv.name for iv in list_interventions())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--interventions: unknown {unknown}; registered: {known} (add one in "
                              "scripts/causal/screen/registry.py, see the README)")
    for flag, v in (("--top-k", args.top_k), ("--cycles", args.cycles), ("--max-null-cycles", args.max_null_cycles)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} {v}: must be >= 1")
    return PipelineOptions(
        run_id=args.run_id or out.name, output_dir=str(out), preset=preset, backend=backend, seeds=seeds,
        confirm_seeds=confirm,
        interventions=names,
        calibration=FAST_CALIBRATION if args.fast else ("aa",),
        top_k=args.top_k or (2 if args.fast else 3), cycles=args.cycles or (1 if args.fast else 3),
        max_null_cycles=args.max_null_cycles,
        budget_minutes=args.budget_minutes if args.budget_minutes is not None else (10.0 if args.fast else None),
        alpha=args.alpha, margin_bpb=args.margin_bpb, correction=args.correction, confirm=not args.no_confirm,
        promote=args.promote, apply_promotion=args.apply_promotion, resume=args.resume,
        dag_alpha=args.dag_alpha, bootstrap=args.bootstrap or (30 if args.fast else 100),
        matrix_path=args.matrix, data_overrides=data, extra_overrides=extra, fast=args.fast)


class Clock:
    """Wall time since start, and whether a stage of ``need_s`` seconds still fits the budget.

    Runs re-used from the ledger are charged at their recorded wall time (``credit_reused``), so a
    ``--resume`` makes the same budget decisions as the session that ran them, and stays fast.
    """

    def __init__(self, budget_minutes: float | None) -> None:
        self.t0 = time.perf_counter()
        self.session_start = time.time()
        self.budget_s = None if budget_minutes is None else 60.0 * budget_minutes
        self.credited_s = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def credit_reused(self, runs) -> None:
        self.credited_s += sum(r.wall_s or 0.0 for r in runs if r.finished_at and r.finished_at < self.session_start)

    def fits(self, need_s: float) -> bool:
        return self.budget_s is None or self.elapsed() + self.credited_s + need_s <= self.budget_s


def run_pipeline(opts: PipelineOptions, *, log: Callable[[str], None] | None = None, progress: bool = True,
                 records: Sequence[str] = (), command: str = "") -> dict:
    """Run every stage for ``opts``; returns a summary dict (paths, decisions, stop reason, wall_s)."""
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(opts.budget_minutes)
    log_file = (out / "pipeline.log").open("a", encoding="utf-8")

    def say(msg: str) -> None:
        line = f"[{clock.elapsed():6.1f}s] {msg}"
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
        log_file.write(line + "\n")
        log_file.flush()

    try:
        return _run(opts, out, clock, say, progress=progress, records=records, command=command)
    finally:
        log_file.close()


def _run(opts: PipelineOptions, out: Path, clock: Clock, say, *, progress: bool, records: Sequence[str],
         command: str) -> dict:
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(out / "pipeline_options.json", {"options": opts})
    say(f"run {opts.run_id}: preset {opts.preset}, backend {opts.backend}, seeds {list(opts.seeds)} -> {out}")
    data = st.prepare_data(opts, say)
    threads = st.decide_threads(opts.backend, say)
    cache = st.StageCache(out / "stage_cache.json")

    # ---- cycle 0: matrix, DAG, identifiability, ranking
    matrix = st.stage_matrix(opts, out, say, records=records)
    causal = st.causal_cycle(opts, cycle=0, matrix=matrix, out_dir=out / "dags" / "cycle_0", rows=[],
                             previous=None, cache=cache, log=say)
    ranking, cycles, exp_rows, tested, decisions = causal["ranking"], [], [], [], []
    final: dict = {"ablation": None}
    stop, null_cycles, mean_run_s = "completed all cycles", 0, None

    # ---- screen cycles
    for c in range(1, opts.cycles + 1):
        names = st.choose_interventions(ranking, top_k=opts.top_k, explicit=opts.interventions if c == 1 else (),
                                        exclude=tested)
        if not names:
            stop = "no untested runnable candidates left in the ranking"
            break
        arms = [*opts.calibration, *[n for n in names if n not in opts.calibration]]
        n_runs = len(opts.seeds) * (len(arms) + 1)
        if mean_run_s is not None and not clock.fits(n_runs * mean_run_s):
            stop = f"budget: cycle {c} ({n_runs} runs x {mean_run_s:.0f}s) would pass {opts.budget_minutes} min"
            break
        screen_dir = out / f"cycle_{c}"
        say(f"cycle {c}: screening {', '.join(arms)} on {len(opts.seeds)} seeds ({n_runs} runs)")
        result, runs_path = st.run_screen_stage(opts, name=f"cycle{c}-screen", interventions=arms,
                                                seeds=opts.seeds, out_dir=screen_dir, base_overrides=data,
                                                correction=opts.correction, progress=progress, log=say,
                                                threads=threads)
        mean_run_s = _mean_wall(result.runs) or mean_run_s
        clock.credit_reused(result.runs)
        ablation = st.analyze_stage(runs_path, screen_dir / "ablation_results.json", alpha=opts.alpha,
                                    margin_bpb=opts.margin_bpb, correction=opts.correction)
        say(f"cycle {c}: " + ", ".join(f"{r['intervention']}={r['decision']}" for r in ablation["results"]))
        all_runs, confirm_runs = list(result.runs), None
        exp_rows += st.experiment_rows(result.plan, result.runs)
        confirmation, found = None, _confirmed(ablation)
        win = st.winners(ablation)
        if opts.confirm and win:
            seeds = tuple(s + 100 * (c - 1) for s in opts.confirm_seeds)
            need = len(seeds) * (len(win) + 1) * (mean_run_s or 0.0)
            if clock.fits(need):
                say(f"cycle {c}: confirming {', '.join(win)} on fresh seeds {list(seeds)}")
                cres, cpath = st.run_screen_stage(opts, name=f"cycle{c}-confirm", interventions=win, seeds=seeds,
                                                  out_dir=screen_dir / "confirm", base_overrides=data,
                                                  correction="holm", progress=progress, log=say,
                                                  threads=threads)
                confirmation = st.analyze_stage(cpath, screen_dir / "confirm" / "ablation_results.json",
                                                alpha=opts.alpha, margin_bpb=opts.margin_bpb, correction="holm")
                confirmation["seeds"] = list(seeds)
                found = _confirmed(confirmation)
                all_runs += list(cres.runs)
                clock.credit_reused(cres.runs)
                confirm_runs = [r.runs_row() for r in cres.runs]
                exp_rows += st.experiment_rows(cres.plan, cres.runs)
            else:
                confirmation = {"note": f"confirmation of {', '.join(win)} skipped: {need:.0f}s of runs would pass "
                                        f"the {opts.budget_minutes} min budget; rerun with --resume and a larger "
                                        "--budget-minutes", "results": []}
                say(confirmation["note"])
        tested += names
        decisions += _decisions(ablation, confirmation)
        causal = st.causal_cycle(opts, cycle=c, matrix=matrix, out_dir=out / "dags" / f"cycle_{c}", rows=exp_rows,
                                 previous=causal["dag_path"], cache=cache, log=say, decisions=decisions)
        ranking = causal["ranking"]
        cycles.append({"cycle": c, "interventions": arms, "runs": len(all_runs), "confirmed": found,
                       "decisions": {r["intervention"]: r["decision"] for r in ablation["results"]}})
        final = {"arms": tuple(arms), "ablation": ablation, "confirmation": confirmation, "records": all_runs,
                 "confirm_runs": confirm_runs, "runs_path": runs_path, "screen_dir": screen_dir, "causal": causal}
        if found:
            stop = f"confirmed effect in cycle {c}: {', '.join(found)}"
            break
        null_cycles += 1
        if null_cycles >= opts.max_null_cycles and c < opts.cycles:
            stop = f"{null_cycles} cycles without a confirmed effect (--max-null-cycles)"
            break
    if final["ablation"] is None:
        raise st.stage_error("screen", out, f"no screen ran ({stop})",
                             "pass --interventions a,b or a larger --budget-minutes")
    say(f"stop: {stop}")
    summary = pf.finish(opts, out=out, final=final, cycles=cycles, stop=stop, clock=clock, started=started,
                        command=command, run_info=_run_info, log=say)
    pf.write_summary(out, summary)
    say(f"done in {summary['wall_s']:.1f}s")
    return summary


def _mean_wall(runs) -> float | None:
    walls = [r.wall_s for r in runs if r.wall_s]
    return sum(walls) / len(walls) if walls else None


def _decisions(ablation, confirmation) -> list[dict]:
    """Decision rows for the ranking's ledger: the confirmation's verdict overrides the screen's."""
    rows = {r["intervention"]: r for r in ablation["results"]}
    for r in (confirmation or {}).get("results", []):
        rows[r["intervention"]] = r
    return list(rows.values())


def _confirmed(ablation) -> list[str]:
    return [r["intervention"] for r in ablation.get("results", []) if r.get("decision") == "confirmed"]


def _run_info(opts: PipelineOptions, *, started: str, command: str, versions: dict,
              interventions: tuple[str, ...] = ()) -> RunInfo:
    from scripts.causal import report

    return RunInfo(run_id=opts.run_id, started_utc=started, command=command, git_commit=report.git_commit(REPO_ROOT),
                   versions=versions, backend=opts.backend, hardware=report.hardware_summary(opts.backend),
                   preset=opts.preset, seeds=opts.seeds, confirm_seeds=opts.confirm_seeds,
                   interventions=interventions or (*opts.calibration, *opts.interventions),
                   test=TEST_DESCRIPTION.format(corr=opts.correction.capitalize()), alpha=opts.alpha,
                   margin_bpb=opts.margin_bpb, correction=opts.correction, cycles=opts.cycles)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        opts = options_from_args(args)
        cmd = "python scripts/causal/run_pipeline.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        summary = run_pipeline(opts, progress=not args.quiet, records=args.records, command=cmd.strip())
        print(f"report: {summary['report_md']}")
        print(f"wall time: {summary['wall_s']:.1f} s ({summary['wall_s'] / 60:.1f} min); stop: {summary['stop']}")
        return 0

    return run_cli(body, debug=args.debug, prog="run_pipeline.py")


if __name__ == "__main__":
    raise SystemExit(main())
