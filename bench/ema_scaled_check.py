"""Paired check of the scaled EMA at `fast`: control vs ema_0997 (horizon scaled to the preset) vs the old
unscaled decay 0.997, on the same seeds (torch, one thread, default corpus). Prints one JSON line per run.

    python bench/ema_scaled_check.py --seeds 1,2
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import train_gpt as tg
from scripts.causal.core.cli import parse_seeds
from scripts.causal.screen import registry as reg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2", help="comma-separated seeds (default 1,2)")
    ap.add_argument("--preset", default="fast")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = tg.resolve_data_paths(tg.preset_config(args.preset))
    data = tg.load_train_data(base)
    arms = {"control": base, "ema_0997_scaled": reg.apply("ema_0997", base),
            "ema_0997_unscaled": base.with_overrides(ema_decay=0.997)}
    for seed in parse_seeds(args.seeds):
        for arm, cfg in arms.items():
            wall, cpu = time.perf_counter(), time.process_time()
            r = tg.train(cfg, seed, data=data)
            print(json.dumps({"arm": arm, "seed": seed, "ema_decay": cfg.ema_decay, "val_bpb": r.val_bpb,
                              "post_quant_val_bpb": r.post_quant_val_bpb, "wall_s": time.perf_counter() - wall,
                              "cpu_s": time.process_time() - cpu}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
