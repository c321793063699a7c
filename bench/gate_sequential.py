"""Benchmark: the gate's error rate and cost, fixed n vs group-sequential seeds, as a pure numpy simulation.

A screen has ``m`` arms sharing one control per seed: d_j = e_j - e_c with e ~ N(0, 1/2), so sigma_d = 1 and the
arms' differences correlate 0.5, as in a real screen. Both designs run at family alpha = 0.01:

* fixed: n = 10 pairs per arm, paired t, ONE Holm family over the 3m p-values (improvement, harm and the
  non-superiority test behind ``null`` at the effect of interest, 2 sigma_d here), as stats.analysis does;
* sequential: looks at n = 3, 4, ..., 10 pairs, each test at alpha / 2m with Lan-DeMets O'Brien-Fleming
  boundaries (stats.sequential.design_at_looks), optionally with the non-binding futility bound at the planned
  effect (beta_futility 0.1) that stats.sequential_plan uses; an arm stops at its first crossing.

It reports the family-wise error over A/A screens (every arm null: a confirmed or harmful call is wrong, a null
call is right), the power to confirm one planted effect of 2 sigma_d (the other arms null; there the error counts
every wrong call: confirmed or harmful on a null arm, harmful or null on the planted arm, whose true gain is the
effect of interest itself, so "null" is the boundary of its hypothesis) and the mean number of runs per screen (treatment runs + shared control runs: a
control seed is run while any arm still needs it). ``--check-api`` replays some screens through the runner's
function, ``sequential_plan``, round by round, and counts how often its final statuses agree with the
vectorized simulation.

    python bench/gate_sequential.py [--screens 1000] [--big 100000] [--m 4] [--check-api 100]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.causal.stats.multiplicity import holm_adjust  # noqa: E402
from scripts.causal.stats.sequential import design_at_looks, first_crossing, t_paths  # noqa: E402
from scripts.causal.stats.sequential_plan import sequential_plan  # noqa: E402

ALPHA, N_MAX, N0, EFFECT = 0.01, 10, 3, 2.0


def simulate_d(rng: np.random.Generator, screens: int, m: int, effects: np.ndarray) -> np.ndarray:
    """Paired differences, shape (screens, m, N_MAX); negative mean = improvement of ``effects`` sigma_d."""
    e_c = rng.standard_normal((screens, 1, N_MAX)) * np.sqrt(0.5)
    e_t = rng.standard_normal((screens, m, N_MAX)) * np.sqrt(0.5)
    return e_t - e_c - effects[None, :, None]


def fixed_design(d: np.ndarray) -> dict:
    """One Holm family at ALPHA over the 3m one-sided paired t-tests at n = N_MAX (improve, harm, null)."""
    s, m, n = d.shape
    se = d.std(axis=2, ddof=1) / np.sqrt(n)
    t = d.mean(axis=2) / se
    t_null = (d.mean(axis=2) + EFFECT) / se  # H0: improvement >= EFFECT; rejecting it is the "null" call
    p = np.concatenate([special.stdtr(n - 1, t), special.stdtr(n - 1, -t), special.stdtr(n - 1, -t_null)], axis=1)
    adj = np.apply_along_axis(holm_adjust, 1, p)
    rej = adj < ALPHA
    improve = rej[:, :m]
    harm = rej[:, m:2 * m] & ~improve
    null = rej[:, 2 * m:] & ~improve & ~harm  # decision precedence: confirmed, harmful, null
    return {"improve": improve, "harm": harm, "null": null, "runs": np.full(s, n * (m + 1), dtype=float)}


def sequential_design(d: np.ndarray, *, futility: bool) -> dict:
    s, m, _ = d.shape
    looks = tuple(range(N0, N_MAX + 1))
    design = design_at_looks(looks, n_max=N_MAX, alpha=ALPHA / (2 * m), n_sim=200_000, seed=0,
                             futility_effect_sd=EFFECT if futility else None, beta_futility=0.1)
    t = t_paths(d.reshape(s * m, N_MAX), looks)
    first, sign = first_crossing(t, design)
    n_used = np.where(first >= 0, np.asarray(looks)[np.maximum(first, 0)], N_MAX).reshape(s, m)
    return {"improve": (sign == -1).reshape(s, m), "harm": (sign == 1).reshape(s, m),
            "runs": n_used.sum(axis=1) + n_used.max(axis=1), "design": design}


def summarize(name: str, res: dict, *, planted: int | None) -> dict:
    any_rej = res["improve"] | res["harm"]
    if planted is None:
        return {"design": name, "fwer": float(any_rej.any(axis=1).mean()), "runs": float(res["runs"].mean())}
    null = np.ones(any_rej.shape[1], bool)
    null[planted] = False
    wrong = any_rej[:, null].any(axis=1) | res["harm"][:, planted]
    if "null" in res:  # the planted gain equals the effect of interest: a null call on it is wrong
        wrong |= res["null"][:, planted]
    return {"design": name, "power": float(res["improve"][:, planted].mean()),
            "fwer_nulls": float(wrong.mean()), "runs": float(res["runs"].mean())}


def check_api(d: np.ndarray, *, futility: bool) -> tuple[int, int]:
    """Replay screens through sequential_plan round by round; count agreement with the vectorized statuses."""
    s, m, _ = d.shape
    vec = sequential_design(d, futility=futility)
    seeds, names = list(range(100, 100 + N_MAX)), [f"arm{j}" for j in range(m)]
    agree = 0
    for i in range(s):
        used = dict.fromkeys(names, N0)
        while True:
            rows = [{"intervention": "control", "arm": "control", "seed": sd, "backend": "sim", "status": "ok",
                     "post_quant_val_bpb": 0.0} for sd in seeds]
            rows += [{"intervention": nm, "arm": "treatment", "seed": sd, "backend": "sim", "status": "ok",
                      "post_quant_val_bpb": float(d[i, j, k])}
                     for j, nm in enumerate(names) for k, sd in enumerate(seeds[: used[nm]])]
            plan = sequential_plan(rows, seeds=seeds, family=names, alpha=ALPHA, n0=N0, n_sim=200_000,
                                   futility_effect_sd=EFFECT if futility else None, beta_futility=0.1)
            if plan["done"]:
                break
            for nm, nxt in plan["next"].items():
                used[nm] += len(nxt)
        status = [plan["results"][nm]["status"] for nm in names]
        expect = ["confirmed" if vec["improve"][i, j] else "harmful" if vec["harm"][i, j] else "other"
                  for j in range(m)]
        agree += all((st if st in ("confirmed", "harmful") else "other") == ex for st, ex in zip(status, expect, strict=True))
    return agree, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screens", type=int, default=1000, help="A/A screens (acceptance: 1000)")
    ap.add_argument("--big", type=int, default=100_000, help="screens for the precise estimates, e.g. 100000")
    ap.add_argument("--m", type=int, default=4, help="arms per screen (the family), e.g. 4")
    ap.add_argument("--check-api", type=int, default=100, help="screens replayed through sequential_plan")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    m = args.m
    rows = []
    for label, n in (("A/A", args.screens), ("A/A", args.big)):
        d = simulate_d(rng, n, m, np.zeros(m))
        for name, res in (("fixed n=10, Holm", fixed_design(d)),
                          ("sequential max 10", sequential_design(d, futility=False)),
                          ("sequential max 10 + futility", sequential_design(d, futility=True))):
            rows.append({"screens": n, "kind": label, **summarize(name, res, planted=None)})
    effects = np.zeros(m)
    effects[0] = EFFECT
    d = simulate_d(rng, args.big, m, effects)
    for name, res in (("fixed n=10, Holm", fixed_design(d)),
                      ("sequential max 10", sequential_design(d, futility=False)),
                      ("sequential max 10 + futility", sequential_design(d, futility=True))):
        rows.append({"screens": args.big, "kind": f"planted {EFFECT} sigma_d", **summarize(name, res, planted=0)})
    se = np.sqrt(ALPHA * (1 - ALPHA) / args.screens)
    print(f"m = {m} arms, family alpha = {ALPHA}; fixed: one Holm family of K = {3 * m} one-sided tests "
          f"(improve, harm, null), sequential: {2 * m} tests (improve, harm) at alpha/{2 * m}; MC se of a FWER of "
          f"{ALPHA} over {args.screens} screens = {se:.4f}")
    print("| screens | scenario | design | FWER, every wrong call [exact 95% CI] | power (planted arm) | "
          "mean runs per screen |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fwer = r.get("fwer", r.get("fwer_nulls"))
        k = round(fwer * r["screens"])
        lo = stats.beta.ppf(0.025, k, r["screens"] - k + 1) if k else 0.0
        hi = stats.beta.ppf(0.975, k + 1, r["screens"] - k)
        power = f"{r['power']:.4f}" if "power" in r else "-"
        print(f"| {r['screens']} | {r['kind']} | {r['design']} | {fwer:.4f} [{lo:.4f}, {hi:.4f}] | {power} | "
              f"{r['runs']:.1f} |")
    planted = {r["design"]: r for r in rows if "power" in r}
    fixed = planted["fixed n=10, Holm"]
    for name in ("sequential max 10", "sequential max 10 + futility"):
        r = planted[name]
        print(f"{name}: {1 - r['runs'] / fixed['runs']:.1%} fewer runs than fixed, power ratio "
              f"{r['power'] / fixed['power']:.3f}")
    if args.check_api:
        d = simulate_d(np.random.default_rng(args.seed + 1), args.check_api, m, effects)
        for fut in (False, True):
            agree, n = check_api(d, futility=fut)
            print(f"sequential_plan replay ({'with' if fut else 'without'} futility): {agree}/{n} screens agree")
    print(f"wall {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
