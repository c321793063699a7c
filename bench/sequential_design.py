"""Benchmark: group-sequential seed allocation (OBF spending, n0=3) vs a fixed-n design at equal power.

For each per-test level and true effect (in units of sigma_d), the fixed design uses the smallest n with exact
noncentral-t power >= 0.8; the group-sequential design uses the smallest n_max whose simulated power >= 0.8,
looks at every n from n0 = 3, efficacy only ("GS") or with a non-binding futility bound calibrated at the
planned effect with beta_futility = 0.1 ("GS+futility"). We report the expected number of treatment pairs under H1 (the effect) and under
H0 (a null intervention), and the runs of a whole screen (m interventions, one of them real, shared controls).

    python bench/sequential_design.py [--paths 100000]
"""
from __future__ import annotations

import argparse
import sys
import time

from scripts.causal.stats.power import power_one_sided
from scripts.causal.stats.sequential import design_group_sequential, simulate_sequential


def fixed_n(effect_sd: float, alpha: float, power: float = 0.8) -> int:
    n = 3
    while power_one_sided(effect=effect_sd, sigma=1.0, n=n, alpha=alpha) < power:
        n += 1
    return n


def gs_for_power(effect_sd: float, alpha: float, n_fixed: int, *, paths: int, power: float = 0.8,
                 futility: bool = False) -> tuple:
    for n_max in range(max(3, n_fixed), n_fixed + 15):
        design = design_group_sequential(n0=3, n_max=n_max, alpha=alpha, n_sim=200_000, seed=0,
                                         futility_effect_sd=effect_sd if futility else None, beta_futility=0.1)
        h1 = simulate_sequential(design, effect_sd=effect_sd, n_paths=paths, seed=1)
        if h1["p_confirm"] >= power:
            h0 = simulate_sequential(design, effect_sd=0.0, n_paths=paths, seed=2)
            return n_max, h1, h0
    raise RuntimeError("no n_max found")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=100_000, help="Monte Carlo paths per operating point")
    args = ap.parse_args(argv)
    scenarios = [("1 test, alpha 0.05", 0.05, 1), ("screen m=10, alpha 0.01 (Bonferroni 0.0005/test)", 0.0005, 10)]
    rows = []
    t0 = time.perf_counter()
    for label, alpha, m in scenarios:
        for eff in (1.0, 1.5, 2.0, 3.0):
            nf = fixed_n(eff, alpha)
            for kind in ("GS", "GS+futility"):
                n_max, h1, h0 = gs_for_power(eff, alpha, nf, paths=args.paths, futility=kind != "GS")
                # a screen of m interventions with one real effect: treatment pairs + shared controls (the
                # controls run as long as any intervention is still running)
                fixed_runs = m * nf + nf
                ctrl = h1["mean_n"] if m == 1 else n_max
                gs_runs = h1["mean_n"] + (m - 1) * h0["mean_n"] + ctrl
                rows.append((label, eff, nf, kind, n_max, h1["p_confirm"], h1["mean_n"], h0["mean_n"],
                             h0["p_confirm"], fixed_runs, gs_runs))
    wall = time.perf_counter() - t0
    print("| design | effect (sigma_d) | fixed n (power>=0.8) | sequential | n_max | power | E[N] H1 | E[N] H0 | "
          "type-I (one side) | screen runs fixed | screen runs seq. | saved |")
    print("|" + "---|" * 12)
    for label, eff, nf, kind, nm, pw, e1, e0, a0, fr, gr in rows:
        print(f"| {label} | {eff:.1f} | {nf} | {kind} | {nm} | {pw:.3f} | {e1:.2f} | {e0:.2f} | {a0:.5f} | {fr} "
              f"| {gr:.1f} | {100 * (1 - gr / fr):+.0f}% |")
    print(f"\n({args.paths} paths per point, boundaries from 200000 simulated null paths; {wall:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
