"""In-process vs subprocess wall time for consecutive screening runs (default: 6 `fast` runs each).

The in-process executor loads the data and builds the model once; the subprocess executor pays interpreter
start-up, imports and data loading on every run. Both must give the same val_bpb for the same seed.

    python bench/executors.py --preset fast --runs 6
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from scripts.causal.screen.executors import make_executor
from scripts.causal.screen.trainer import as_config


def time_executor(name: str, *, preset: str, runs: int, backend: str = "torch") -> dict:
    executor = make_executor(name)
    t0 = time.perf_counter()
    config = as_config({"preset": preset})
    results = [executor.run(config, seed, backend) for seed in range(1, runs + 1)]
    total = time.perf_counter() - t0
    bad = [r for r in results if r.get("status") != "ok"]
    if bad:
        raise RuntimeError(f"{name}: {len(bad)} run(s) not ok, first error: {bad[0].get('error')}")
    return {"total_s": total, "val_bpb": [r["val_bpb"] for r in results],
            "inner_wall_s": sum(float(r["wall_s"]) for r in results)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", help="config preset (e.g. fast)")
    parser.add_argument("--runs", type=int, default=6, help="consecutive runs per executor (e.g. 6)")
    parser.add_argument("--executors", nargs="+", default=["inprocess", "subprocess"],
                        choices=["inprocess", "subprocess"], help="which executors to time (default both)")
    args = parser.parse_args(argv)
    print(f"cpus:{os.cpu_count()} load_before:{os.getloadavg()[0]:.2f}")
    out = {}
    for name in args.executors:
        out[name] = time_executor(name, preset=args.preset, runs=args.runs)
        r = out[name]
        print(f"{name}: total_s:{r['total_s']:.1f} per_run_s:{r['total_s'] / args.runs:.1f} "
              f"sum_of_run_wall_s:{r['inner_wall_s']:.1f} load:{os.getloadavg()[0]:.2f}", flush=True)
        print(f"{name}: val_bpb:{r['val_bpb']}")
    # Overhead = outer wall time minus the runs' own wall_s (train + evals): start-up, imports, data loading.
    # It is robust to the load changing between the two executors, unlike the raw totals.
    print("| executor | runs | total s | s/run | overhead s/run (total - runs' own wall_s) |")
    print("|---|---|---|---|---|")
    for name, r in out.items():
        print(f"| {name} | {args.runs} | {r['total_s']:.1f} | {r['total_s'] / args.runs:.1f} | "
              f"{(r['total_s'] - r['inner_wall_s']) / args.runs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
