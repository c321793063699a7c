"""Time one `fast` run per leaderboard stack (scripts/causal/screen/stacks.py): torch, one thread, seed 1,
default corpus. Reports wall time and process CPU time (on a busy machine the CPU time is the stable number:
it is what one idle core takes). Prints one JSON line per stack.

    python bench/stack_timing.py march_baseline 11l_ema_leaky sp_recent
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import train_gpt as tg
from scripts.causal.screen import stacks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stacks", nargs="*", default=sorted(stacks.STACKS), help="stack names (default: all)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = tg.load_train_data(tg.resolve_data_paths(tg.preset_config(args.preset)))
    for name in args.stacks:
        cfg = tg.resolve_data_paths(stacks.stack_config(name, args.preset))
        wall, cpu = time.perf_counter(), time.process_time()
        r = tg.train(cfg, args.seed, data=data)
        params = sum(p.numel() for p in tg.GPT.from_config(cfg).parameters())
        print(json.dumps({"stack": name, "status": r.status, "params": params, "val_bpb": r.val_bpb,
                          "post_quant_val_bpb": r.post_quant_val_bpb, "wall_s": time.perf_counter() - wall,
                          "cpu_s": time.process_time() - cpu}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
