"""What repeating the training data does to paired Δs: the same screen on the full embedded train split and on a
truncated prefix of it, so that the same number of steps sees each window several times.

The seeded data order draws each step's windows uniformly from the train shards; truncating the shard to 1/k of
its tokens makes a run of S steps draw S x batch tokens from train_tokens / k, i.e. that many "passes". The val
split is unchanged. Reports per intervention the paired Δ (3+ seeds) on each corpus and their difference.

    python bench/corpus_repetition.py --preset fast --iterations 240 --fraction 0.0625 \\
        --interventions act_leaky_relu2,matrix_lr_half --seeds 1,2,3 --out bench/corpus_repetition.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

import train_gpt as tg
from scripts.causal.core.cli import parse_seeds
from scripts.causal.screen.registry import get_intervention

SCHEMA_VERSION = 1


def truncated(data: tg.TrainData, fraction: float) -> tg.TrainData:
    """``data`` with its train shards cut to their first ``fraction`` of tokens (val split unchanged)."""
    total = sum(int(s.size) for s in data.train_shards)
    keep, shards = int(total * fraction), []
    for s in data.train_shards:
        take = min(int(s.size), keep - sum(int(x.size) for x in shards))
        if take > 0:
            shards.append(np.asarray(s[:take]))
    return dataclasses.replace(data, train_shards=shards)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--iterations", type=int, default=240)
    ap.add_argument("--fraction", type=float, default=0.0625, help="share of the train split kept (default 1/16)")
    ap.add_argument("--interventions", default="act_leaky_relu2,matrix_lr_half")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/corpus_repetition.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = tg.preset_config(args.preset, iterations=args.iterations)
    full = tg.load_train_data(tg.resolve_data_paths(base))
    corpora = {"full": full, "truncated": truncated(full, args.fraction)}
    names = [n.strip() for n in args.interventions.split(",") if n.strip()]
    arms = {"control": base, **{n: base.with_overrides(get_intervention(n).resolve(base)) for n in names}}
    seeds = parse_seeds(args.seeds)
    scores: dict[str, dict[str, dict[int, float]]] = {}
    for corpus, data in corpora.items():
        for arm, cfg in arms.items():
            for seed in seeds:
                r = tg.train(cfg, seed, data=data)
                scores.setdefault(corpus, {}).setdefault(arm, {})[seed] = tg.pick_metric(r)[1]
                print(f"{corpus} {arm} seed={seed} {scores[corpus][arm][seed]:.5f}", flush=True)
    train_tokens = {c: int(sum(int(s.size) for s in d.train_shards)) for c, d in corpora.items()}
    drawn = args.iterations * base.train_batch_tokens
    summary = {}
    for n in names:
        per = {}
        for corpus in corpora:
            d = np.array([scores[corpus][n][s] - scores[corpus]["control"][s] for s in seeds])
            per[corpus] = {"mean_delta": float(d.mean()), "sd_delta": float(d.std(ddof=1)), "deltas": d.tolist()}
        diff = np.array(per["truncated"]["deltas"]) - np.array(per["full"]["deltas"])
        per["truncated_minus_full"] = {"mean": float(diff.mean()), "sd": float(diff.std(ddof=1))}
        summary[n] = per
    doc = {"schema_version": SCHEMA_VERSION, "preset": args.preset, "iterations": args.iterations,
           "fraction": args.fraction, "train_tokens": train_tokens, "tokens_drawn": drawn,
           "passes": {c: drawn / t for c, t in train_tokens.items()}, "seeds": list(seeds), "scores": scores,
           "summary": summary}
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for n, per in summary.items():
        print(f"{n}: Δ full {per['full']['mean_delta']:+.4f} (sd {per['full']['sd_delta']:.4f}), truncated "
              f"{per['truncated']['mean_delta']:+.4f} (sd {per['truncated']['sd_delta']:.4f}), difference "
              f"{per['truncated_minus_full']['mean']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
