"""Branched cooldowns against separate runs: the metric and paired-Δ differences at each horizon, and the time.

For every arm (the control and each named registry intervention) and seed, one branched run (HORIZONS on: the
stable phase once, one warmdown per horizon) and one separate run per horizon (ITERATIONS=H, HORIZONS off),
on the same preset and warmdown rule. Reports, per horizon, the largest |branched - separate| of the scored
metric over arms and seeds, the same for the paired Δ (treatment - control on a seed), and the wall time per
arm and seed of the branched run against the sum of the separate runs.

    python bench/horizon_branching.py --preset fast --horizons 30,60,120 --interventions matrix_lr_half \\
        --seeds 1,2 --threads 1 --out bench/horizon_branching.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import train_gpt as tg
from scripts.causal.core.cli import parse_seeds
from scripts.causal.screen.registry import get_intervention

SCHEMA_VERSION = 1


def arm_configs(base: tg.Hyperparameters, interventions: list[str]) -> dict[str, tg.Hyperparameters]:
    """control + each intervention resolved on the branched run's config (its horizon-scaled knobs, e.g. an EMA
    decay, are resolved once at the longest horizon and used as is by the separate runs too)."""
    out = {"control": base}
    for name in interventions:
        out[name] = base.with_overrides(get_intervention(name).resolve(base))
    return out


def measure(base: tg.Hyperparameters, interventions: list[str], seeds: tuple[int, ...]) -> dict:
    """Runs everything; returns {"runs": [...], "horizons": [...summary per horizon...], "time": {...}}."""
    steps = base.horizon_steps
    data = tg.load_train_data(tg.resolve_data_paths(base))
    runs = []
    for arm, cfg in arm_configs(base, interventions).items():
        for seed in seeds:
            t = time.perf_counter()
            br = tg.train(cfg, seed, data=data)
            branched_s = time.perf_counter() - t
            sep, sep_s = {}, 0.0
            for h in steps:
                t = time.perf_counter()
                sep[h] = tg.train(cfg.with_overrides(horizons="", iterations=h), seed, data=data)
                sep_s += time.perf_counter() - t
            runs.append({"arm": arm, "seed": seed, "branched_s": branched_s, "separate_s": sep_s,
                         "branched": {h: tg.pick_metric({"config": {**cfg.to_dict(), "iterations": h},
                                                          **br.horizon_metrics[str(h)]})[1] for h in steps},
                         "separate": {h: tg.pick_metric(sep[h])[1] for h in steps}})
            print(f"{arm} seed={seed} branched {branched_s:.1f}s separate {sep_s:.1f}s "
                  + " ".join(f"H{h}:{runs[-1]['branched'][h] - runs[-1]['separate'][h]:+.2e}" for h in steps),
                  flush=True)
    return {"runs": runs, "horizons": summarise(runs, steps)}


def summarise(runs: list[dict], steps: tuple[int, ...]) -> list[dict]:
    """Per horizon: max |metric difference| over arms x seeds, max |paired-Δ difference| over treatments x seeds."""
    control = {r["seed"]: r for r in runs if r["arm"] == "control"}
    out = []
    for h in steps:
        diffs = [abs(r["branched"][h] - r["separate"][h]) for r in runs]
        deltas = [abs((r["branched"][h] - control[r["seed"]]["branched"][h])
                      - (r["separate"][h] - control[r["seed"]]["separate"][h]))
                  for r in runs if r["arm"] != "control" and r["seed"] in control]
        out.append({"horizon": h, "max_abs_metric_diff": max(diffs), "max_abs_paired_delta_diff": max(deltas, default=0.0),
                    "n_runs": len(diffs)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--horizons", default="30,60,120", help="comma-separated steps; the longest is ITERATIONS")
    ap.add_argument("--warmdown-frac", type=float, default=0.5, help="warmdown rule of every horizon (default 0.5)")
    ap.add_argument("--interventions", default="matrix_lr_half", help="comma-separated registry names")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/horizon_branching.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hs = [int(v) for v in args.horizons.split(",") if v.strip()]
    base = tg.preset_config(args.preset, iterations=max(hs), warmdown_frac=args.warmdown_frac,
                            horizons="/".join(map(str, hs)))
    names = [n.strip() for n in args.interventions.split(",") if n.strip()]
    res = measure(base, names, parse_seeds(args.seeds))
    per_arm_b = sum(r["branched_s"] for r in res["runs"]) / len(res["runs"])
    per_arm_s = sum(r["separate_s"] for r in res["runs"]) / len(res["runs"])
    doc = {"schema_version": SCHEMA_VERSION, "preset": args.preset, "horizons": hs, "warmdown_frac": args.warmdown_frac,
           "interventions": names, "seeds": list(parse_seeds(args.seeds)), "threads": args.threads,
           "machine": platform.machine(), "torch": torch.__version__, **res,
           "time_per_arm_seed": {"branched_s": per_arm_b, "separate_s": per_arm_s, "ratio": per_arm_b / per_arm_s}}
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for row in res["horizons"]:
        print(f"H={row['horizon']}: max |metric diff| {row['max_abs_metric_diff']:.3g}, "
              f"max |paired Δ diff| {row['max_abs_paired_delta_diff']:.3g} ({row['n_runs']} runs)")
    print(f"time per arm and seed: branched {per_arm_b:.1f}s vs separate {per_arm_s:.1f}s "
          f"(ratio {per_arm_b / per_arm_s:.2f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
