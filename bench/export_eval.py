"""Export and evaluation modes side by side: one training run per registry intervention at a preset, and a
markdown table of export format, artifact bytes, pre/post-quant bpb, quant gap, eval mode, score and eval time.

Eval-only interventions (compressors, sliding windows, TTT) leave training untouched, so their pre-quant bpb
must equal the control's exactly; the table shows that as a check.

    python bench/export_eval.py --preset fast --seed 1337 \\
        --interventions control,export_int6_clip,compress_lzma,sliding_eval,ttt_lora,qat_int6
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import train_gpt as tg
from scripts.causal.screen import registry

HEADER = ("| intervention | export format | artifact bytes | pre-quant bpb | post-quant bpb | quant gap | "
          "eval mode | score bpb | eval time (s) | run (s) |")


def row(name: str, r: tg.RunResult, run_s: float) -> str:
    stage, score = tg.pick_metric(r)
    mode = {"post_quant": "plain", "sliding": f"sliding/{r.config['eval_stride']}",
            "ttt": f"ttt-{r.config['ttt']}"}[stage]
    eval_s = sum(r.eval_s.values())
    return (f"| {name} | {r.export_format} | {r.artifact_bytes:,} | {r.val_bpb:.5f} | {r.post_quant_val_bpb:.5f} | "
            f"{r.post_quant_val_bpb - r.val_bpb:+.5f} | {mode} | {score:.5f} | {eval_s:.1f} | {run_s:.0f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fast", help="trainer preset, e.g. fast or tiny")
    parser.add_argument("--seed", type=int, default=1337, help="training seed, e.g. 1337")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, e.g. 1")
    parser.add_argument("--interventions", default="control,export_int6_clip,compress_lzma,sliding_eval",
                        help="comma-separated registry names; 'control' is the preset itself")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = tg.resolve_data_paths(tg.preset_config(args.preset))
    data = tg.load_train_data(base)
    print(f"preset:{args.preset} seed:{args.seed} threads:{args.threads} data:{Path(base.data_path).name}")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for name in args.interventions.split(","):
        cfg = base if name == "control" else registry.apply(name, base)
        t0 = time.perf_counter()
        result = tg.train(cfg, args.seed, data=data)
        if result.status != "ok":
            print(f"| {name} | {result.status}: {result.error} |")
            continue
        print(row(name, result, time.perf_counter() - t0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
