"""Benchmark: runtime of the causal stage (estimate_dag) on the real intervention matrix.

Times each part separately (matrix preparation, one FCI, PC, the bootstrap, the whole ``estimate``)
in wall-clock and CPU seconds, and prints ``key:value`` lines plus a markdown table for
bench/RESULTS.md. Target: the whole stage with 100 bootstraps under 2 minutes on 2 CPU cores.

    python bench/dag_runtime.py [--input results/interventions.json] [--bootstrap 100] [--seed 0]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

from scripts.causal.core.schema import read_json
from scripts.causal.dag.expert import load_expert
from scripts.causal.dag.prepare import build_matrix
from scripts.causal.dag.search import bootstrap_fci, run_fci, run_pc
from scripts.causal.estimate_dag import estimate


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default="results/interventions.json", help="intervention matrix")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples, e.g. 100")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    matrix = read_json(args.input)
    expert = load_expert()
    m, w_prep, c_prep = timed(lambda: build_matrix(matrix["records"], expert=expert))
    _, w_imp, c_imp = timed(lambda: run_fci(m.data, m.columns, m.tiers))
    _, w_fci, c_fci = timed(lambda: run_fci(m.data, m.columns, m.tiers))
    _, w_pc, c_pc = timed(lambda: run_pc(m.data, m.columns, m.tiers))
    _, w_boot, c_boot = timed(lambda: bootstrap_fci(m.data, m.columns, list(m.tiers), n_boot=args.bootstrap,
                                                    seed=args.seed))
    res, w_all, c_all = timed(lambda: estimate(matrix, expert=expert, bootstrap=args.bootstrap, seed=args.seed))
    rows = [("prepare matrix", w_prep, c_prep), ("first FCI (incl. causal-learn import)", w_imp, c_imp),
            ("one FCI", w_fci, c_fci), ("one PC", w_pc, c_pc), (f"bootstrap x{args.bootstrap}", w_boot, c_boot),
            (f"whole estimate() (B={args.bootstrap})", w_all, c_all)]
    print(f"rows:{m.n} columns:{len(m.columns)} bootstrap:{args.bootstrap} python:{platform.python_version()}")
    for name, w, c in rows:
        print(f"{name.split(' (')[0].replace(' ', '_')}_wall_s:{w:.2f} cpu_s:{c:.2f}")
    print(f"stable_edges:{len(res['dag']['stable_edges'])} target_met:{w_all < 120}")
    print("\n| step | wall s | CPU s |\n|---|---:|---:|")
    for name, w, c in rows:
        print(f"| {name} | {w:.2f} | {c:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
