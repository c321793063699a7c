"""The whole pipeline: leaderboard DAG -> ranking -> paired-seed screens -> statistics -> DAG update -> report.

    python scripts/causal/run_pipeline.py --fast              # ~10 min on a 2-core CPU, default corpus
    python scripts/causal/run_pipeline.py --fast --resume     # reuse every finished run (< 1 min)

Cycle 0 extracts (or reuses) results/interventions.json, estimates the DAG, checks identifiability and
ranks candidates. Each screen cycle runs the top-K runnable interventions plus calibration arms on
paired seeds, applies the pre-registered decision gate, confirms winners on fresh seeds, feeds the runs
back into the DAG as interventional rows and re-estimates it with a diff. It stops on a confirmed
effect, on the time budget, or after N null cycles; then it promotes (dry-run diff by default) and
writes results/<run_id>/{report.md, report.json, plots/}.

Options are layered: built-in defaults, then the profile (``--profile fast``, or ``--fast`` for short;
see scripts/causal/pipeline/profiles.py), then every flag given explicitly. This file is the CLI only;
the loop lives in scripts/causal/pipeline/cycle.py.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Sequence

from scripts.causal.core.cli import add_debug_flag, parse_key_values, parse_seeds, run_cli
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import RESULTS_DIR
from scripts.causal.core.schema import PipelineOptions
from scripts.causal.pipeline.cycle import run_pipeline
from scripts.causal.pipeline.ladder import LADDERS
from scripts.causal.pipeline.profiles import DEFAULTS, PROFILES, resolve_options
from scripts.causal.stats.pairing import METRICS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="named option defaults: 'fast' = fast preset, top-2 + aa + sanity_frozen_matrices, 5 seeds, "
                        "1 cycle, 10 min budget (default: 'default')")
    p.add_argument("--fast", action="store_true", help="same as --profile fast")
    p.add_argument("--preset", help=f"train_gpt.py preset of every run, e.g. fast, tiny, baseline "
                                    f"(default: {DEFAULTS['preset']})")
    p.add_argument("--stack", help="control = a leaderboard stack scaled to the preset, e.g. 11l_ema_leaky; "
                                   "interventions it already contains are refused")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "mlx"),
                   help="auto = torch on CUDA, MLX on Apple Silicon, the faster one on a Linux CPU")
    p.add_argument("--seeds", help="screen seeds, e.g. 11,12,13,14,15 (default)")
    p.add_argument("--confirm-seeds", help="fresh seeds for confirmation, e.g. 1011,1012,1013,1014,1015")
    p.add_argument("--interventions", help="run these instead of the ranking's top-K, e.g. act_gelu,mlp_mult_3")
    p.add_argument("--top-k", type=int, help="interventions per cycle from the ranking (default 3; fast: 2)")
    p.add_argument("--cycles", type=int, help="maximum screen cycles (default 3; fast: 1)")
    p.add_argument("--max-null-cycles", type=int, help="stop after this many cycles with nothing found (default 2)")
    p.add_argument("--budget-minutes", type=float,
                   help="stop starting new screens past this wall time, e.g. 60 (default: none; fast: 10)")
    p.add_argument("--alpha", type=float, default=0.01, help="family-wise error rate of the gate (default 0.01)")
    p.add_argument("--margin-bpb", type=float, default=0.0, help="improvement a change must beat, e.g. 0.002")
    p.add_argument("--correction", default="holm", choices=("holm", "bh"), help="screen multiplicity correction")
    p.add_argument("--effect-bpb", type=float,
                   help="pre-registered effect of interest in bpb, e.g. 0.003 (default: the record bar, 0.005 nats)")
    p.add_argument("--sequential", action="store_true",
                   help="group-sequential seeds (O'Brien-Fleming, Bonferroni across arms): clear arms stop early")
    p.add_argument("--max-seeds", type=int, help="with --sequential: seeds at most per arm (default 10)")
    p.add_argument("--futility-sd", type=float,
                   help="with --sequential: planned effect in sigma_d units for a non-binding futility stop, e.g. 0.5")
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
    p.add_argument("--bootstrap", type=int, help="FCI bootstrap resamples (default 100; fast: 30)")
    p.add_argument("--dag-alpha", type=float, default=0.05, help="FCI independence-test alpha")
    p.add_argument("--data-path", help="shard folder (default: the embedded corpus, prepared on first use)")
    p.add_argument("--tokenizer-path", help="SentencePiece model matching --data-path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every arm, e.g. iterations=60 (repeatable)")
    p.add_argument("--threads", type=int, help="torch CPU threads per run, e.g. 2 (default: chosen once from the "
                                               "current load; pin it to reproduce CPU numbers bit for bit)")
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "subprocess", "torchrun", "ray"),
                   help="where screen runs execute (default: inprocess; torchrun: train_gpt.py under torchrun on "
                        "GPUs; ray: concurrent Ray tasks)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="per-run limit in seconds (subprocess/torchrun/ray), e.g. 900: a run (or a rank) past it "
                        "is killed and recorded as failed; the screen goes on")
    p.add_argument("--nproc-per-node", type=int, metavar="N", help="torchrun processes per run (default 8)")
    p.add_argument("--train-script", metavar="PATH",
                   help="screen this upstream-style train_gpt.py (e.g. a record's) instead of our trainer: only "
                        "interventions with env forms the script reads are run; --set KNOB=VALUE sets env for every "
                        "arm (e.g. --set MAX_WALLCLOCK_SECONDS=120); needs --executor torchrun or ray")
    p.add_argument("--ray-address", metavar="ADDR", help="with --executor ray: the cluster (default: start a "
                                                         "local one; 'auto': join the one from `ray start`)")
    p.add_argument("--metric", default="final_val_bpb", choices=list(METRICS),
                   help="pre-registered decision metric (default final_val_bpb: each run's last evaluation stage, "
                        "so sliding/TTT changes are scored as the challenge scores them)")
    p.add_argument("--transfer-dir", default="results/transfer_calibration", metavar="DIR",
                   help="where transfer_calibration.py wrote transfer_<preset>.json: the report quotes each class's "
                        "proxy-to-H100 agreement and the ranking discounts by it ('none': do not use one)")
    p.add_argument("--ladder", choices=sorted(LADDERS), default=None,
                   help="climb a ladder of proxies with --interventions instead of the cycles (successive halving; "
                        "the claim only at the last rung, on fresh seeds): tiny | cpu | h100 (pipeline/ladder.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (log lines only)")
    add_debug_flag(p)
    return p


def _latest_run_dir(preset: str, backend: str) -> Path | None:
    dirs = sorted(d for d in RESULTS_DIR.glob(f"{preset}-{backend}-*") if (d / "pipeline_options.json").is_file())
    return dirs[-1] if dirs else None


def options_from_args(args: argparse.Namespace, *, now: dt.datetime | None = None) -> PipelineOptions:
    """Resolve flags into PipelineOptions (defaults -> profile -> explicit flags). Pure apart from the backend."""
    from scripts.causal.screen.trainer import resolve_backend

    if args.fast and args.profile not in (None, "fast"):
        raise ConfigError(f"--fast is --profile fast; it contradicts --profile {args.profile}")
    profile = "fast" if args.fast else (args.profile or "default")
    for flag, v in (("--top-k", args.top_k), ("--cycles", args.cycles), ("--max-null-cycles", args.max_null_cycles),
                    ("--threads", args.threads), ("--max-seeds", args.max_seeds)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} {v}: must be >= 1")
    o = resolve_options(profile, {
        "preset": args.preset, "top_k": args.top_k, "cycles": args.cycles, "max_null_cycles": args.max_null_cycles,
        "budget_minutes": args.budget_minutes, "bootstrap": args.bootstrap,
        "seeds": parse_seeds(args.seeds, "--seeds") if args.seeds else None,
        "confirm_seeds": parse_seeds(args.confirm_seeds, "--confirm-seeds") if args.confirm_seeds else None})
    if set(o["seeds"]) & set(o["confirm_seeds"]):
        raise ConfigError(f"--confirm-seeds {sorted(set(o['seeds']) & set(o['confirm_seeds']))} overlap --seeds; "
                          "confirmation needs fresh seeds")
    if args.ray_address and args.executor != "ray":
        raise ConfigError(f"--ray-address needs --executor ray (got --executor {args.executor})")
    if args.train_script and args.executor not in ("torchrun", "ray"):
        raise ConfigError(f"--train-script runs under torchrun: pass --executor torchrun or ray (got {args.executor})")
    if args.timeout is not None and (args.timeout <= 0 or args.executor == "inprocess"):
        raise ConfigError(f"--timeout {args.timeout}: needs a value > 0 and --executor subprocess, torchrun or ray")
    if args.train_script and not Path(args.train_script).is_file():
        raise ConfigError(f"--train-script {args.train_script}: no such file")
    backend = "torch" if args.train_script else resolve_backend(args.backend)
    out = args.output_dir
    if out is None and args.resume:
        out = _latest_run_dir(o["preset"], backend)
        if out is None:
            raise ConfigError(f"--resume: no earlier run of preset {o['preset']!r} on {backend} under {RESULTS_DIR}; "
                              "run once without --resume, or pass --output-dir")
    now = now or dt.datetime.now(dt.timezone.utc)
    out = Path(out or RESULTS_DIR / f"{o['preset']}-{backend}-{now.strftime('%Y%m%d-%H%M%S')}").resolve()
    data = {}
    if args.data_path or args.tokenizer_path:
        if not (args.data_path and args.tokenizer_path):
            raise ConfigError("--data-path and --tokenizer-path go together (shards + their tokenizer)")
        data = {"data_path": args.data_path, "tokenizer_path": args.tokenizer_path}
    names = tuple(s for s in (args.interventions or "").split(",") if s)
    if names:
        from scripts.causal.screen.registry import list_interventions

        known = sorted(iv.name for iv in list_interventions())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--interventions: unknown {unknown}; registered: {known} (add one in "
                              "scripts/causal/screen/registry.py, see the README)")
    return PipelineOptions(
        run_id=args.run_id or out.name, output_dir=str(out), backend=backend, interventions=names, profile=profile,
        alpha=args.alpha, margin_bpb=args.margin_bpb, correction=args.correction, confirm=not args.no_confirm,
        promote=args.promote and not args.train_script, apply_promotion=args.apply_promotion, resume=args.resume, dag_alpha=args.dag_alpha,
        matrix_path=args.matrix, data_overrides=data, extra_overrides=parse_key_values(args.set, "--set"),
        threads=args.threads, effect_bpb=args.effect_bpb, sequential=args.sequential, max_seeds=args.max_seeds,
        futility_sd=args.futility_sd, executor=args.executor, ray_address=args.ray_address, stack=args.stack,
        transfer_dir=None if args.transfer_dir == "none" else args.transfer_dir, metric=args.metric,
        train_script=str(Path(args.train_script).resolve()) if args.train_script else None, timeout_s=args.timeout,
        nproc_per_node=args.nproc_per_node, **o)


def climb(opts: PipelineOptions, ladder: str, *, progress: bool) -> int:
    """--ladder: prepare the data, then pipeline.ladder.run_ladder with the pipeline's screen and gate stages."""
    from scripts.causal.pipeline.cycle import analyze_stage, prepare_data, run_screen_stage
    from scripts.causal.pipeline.ladder import run_ladder
    from scripts.causal.screen.trainer import decide_threads

    say = lambda msg: print(msg, flush=True)  # noqa: E731
    threads = decide_threads(opts.backend, say, opts.threads)
    ledger = Path(opts.output_dir) / "ledger.sqlite"

    def screen(ropts, name, arms, seeds, overrides, out_dir):
        data = prepare_data(ropts, say)  # each rung's preset names its data (an H100 rung: FineWeb)
        result, runs_path = run_screen_stage(ropts, name=name, interventions=arms, seeds=seeds, out_dir=out_dir,
                                             base_overrides={**data, **overrides}, progress=progress, log=say,
                                             threads=threads)
        return result, analyze_stage(runs_path, out_dir / "ablation_results.json", result=result, ledger_path=ledger)

    payload = run_ladder(opts, ladder, screen=screen, log=say)
    print(f"ladder: {Path(opts.output_dir) / 'ladder.md'} ({payload['cost_s_per_candidate']:.0f} s of runs per "
          "candidate)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        opts = options_from_args(args)
        if args.ladder:
            return climb(opts, args.ladder, progress=not args.quiet)
        cmd = "python scripts/causal/run_pipeline.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        summary = run_pipeline(opts, progress=not args.quiet, records=args.records, command=cmd.strip())
        print(f"report: {summary['report_md']}")
        print(f"wall time: {summary['wall_s']:.1f} s ({summary['wall_s'] / 60:.1f} min); stop: {summary['stop']}")
        return 0

    return run_cli(body, debug=args.debug, prog="run_pipeline.py")


if __name__ == "__main__":
    raise SystemExit(main())
