"""Wall time of one screen on a local Ray cluster with 1 vs 2 workers (1 torch thread each), and Ray's start-up.

Each worker count gets a fresh local cluster: the start-up (``ray.init``) is timed on its own, then the whole
screen (``experiment_runner.run_screen`` with ``RayExecutor``, into a throw-away ledger). The first run on
each worker process pays its imports and data loading; that is part of the screen time. Every run's val_bpb
must be the same for every worker count (a run's numbers do not depend on where it ran), and the bench checks it.

Before and after, ``machine_ceiling`` measures what a second process can gain at all right now (two
pure-Python loops at once vs one): on a machine shared with other work that ceiling, not Ray, bounds the
speed-up. The data is the tests' synthetic corpus (300 KB of seeded text, BPE-1024, built once before any timing).

    python bench/ray_scaling.py --preset tiny --interventions mlp_mult_3,act_gelu --seeds 1,2,3 --workers 1 2 \
        --repeat 2
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.causal import experiment_runner as er
from scripts.causal.data.shards import ensure_corpus
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.progress import LineProgress
from scripts.causal.screen.ray_executor import RayExecutor

_SPIN = "x = 0\nfor i in range({n}): x += i\n"


def machine_ceiling(n: int = 20_000_000) -> float:
    """The speed-up this machine gives 2 processes over 1 right now: a pure-Python loop timed alone, then two
    copies at once (each in its own interpreter). About 2.0 on 2 idle cores; under other load, less. A 2-worker
    screen cannot beat it."""
    def wall(copies: int) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(n=n)]) for _ in range(copies)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - t0

    return 2 * wall(1) / wall(2)


def time_screen(plan, workers: int, ledger_path: Path) -> dict:
    """Start a local cluster of ``workers`` CPUs, run the screen on it, shut it down. Times both parts."""
    executor = RayExecutor(local_cpus=workers, threads=1, log=lambda _: None)
    executor.connect()
    try:
        t0 = time.perf_counter()
        with Ledger(ledger_path) as ledger:
            result = er.run_screen(plan, ledger=ledger, executor=executor, progress=LineProgress(io.StringIO()))
        screen_s = time.perf_counter() - t0
    finally:
        executor.close()
    bad = [r for r in result.runs if r.status != "ok"]
    if bad:
        raise RuntimeError(f"{workers} worker(s): {len(bad)} run(s) not ok, first error: {bad[0].error}")
    return {"startup_s": executor.startup_s, "screen_s": screen_s,
            "run_wall_s": sum(r.wall_s for r in result.runs),
            "val_bpb": {(r.intervention, r.seed): r.val_bpb for r in result.runs}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="train_gpt preset, e.g. tiny or fast (default: tiny)")
    parser.add_argument("--interventions", default="mlp_mult_3,act_gelu", help="treatments (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3", help="seeds (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each round times every worker count, in reverse order on odd rounds, so a "
                             "load drift on a shared machine hits both (default: 1; the medians are compared)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as tmp:
        corpus = ensure_corpus(Path(tmp) / "corpus", source="synthetic", n_bytes=300_000, val_bytes=30_000, seed=0)
        plan = er.build_plan(interventions=args.interventions.split(","), seeds=args.seeds, preset=args.preset,
                             base_overrides=corpus.overrides())
        n_runs = len(er.plan_grid(plan))
        print(f"cpus:{os.cpu_count()} runs:{n_runs} preset:{args.preset} load_before:{os.getloadavg()[0]:.2f}")
        out: dict[int, list[dict]] = {w: [] for w in args.workers}
        ceilings = [machine_ceiling()]
        print(f"machine ceiling (2 spinning processes vs 1): {ceilings[-1]:.2f}x", flush=True)
        for rnd in range(args.repeat):
            for w in (args.workers if rnd % 2 == 0 else args.workers[::-1]):
                r = time_screen(plan, w, Path(tmp) / f"ledger_{rnd}_{w}.sqlite")
                out[w].append(r)
                print(f"round:{rnd} workers:{w} startup_s:{r['startup_s']:.1f} screen_s:{r['screen_s']:.1f} "
                      f"sum_of_run_wall_s:{r['run_wall_s']:.1f} load:{os.getloadavg()[0]:.2f}", flush=True)
        ceilings.append(machine_ceiling())
        print(f"machine ceiling (2 spinning processes vs 1): {ceilings[-1]:.2f}x", flush=True)
    first = out[args.workers[0]][0]["val_bpb"]
    same = all(r["val_bpb"] == first for rs in out.values() for r in rs)
    print(f"val_bpb identical across worker counts and rounds: {same}")
    med = {w: (statistics.median(r["startup_s"] for r in rs), statistics.median(r["screen_s"] for r in rs))
           for w, rs in out.items()}
    base = med[args.workers[0]][1]
    print(f"| workers | Ray start-up s (median of {args.repeat}) | screen s (median) | speed-up vs first |")
    print("|---|---|---|---|")
    for w, (startup, screen) in med.items():
        print(f"| {w} | {startup:.1f} | {screen:.1f} | {base / screen:.2f}x |")
    print(f"machine ceiling before/after: {ceilings[0]:.2f}x / {ceilings[1]:.2f}x "
          "(what 2 processes of 1 thread could gain over 1 at the time)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
