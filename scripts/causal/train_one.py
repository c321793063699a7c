"""Train one model in-process (preset + overrides, one seed) and write its RunResult as JSON.

    python scripts/causal/train_one.py --preset fast --seed 1 --set mlp_mult=3 --out run.json
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import train_gpt as tg
from scripts.causal.core.cli import add_debug_flag, parse_key_values, run_cli
from scripts.causal.core.schema import write_json
from scripts.causal.screen.trainer import BACKENDS, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train one model in-process and write its RunResult as JSON.")
    parser.add_argument("--preset", default="fast", help=f"config preset, one of {sorted(tg.PRESETS)} (e.g. fast)")
    parser.add_argument("--seed", type=int, default=1, help="seed for init and data order (e.g. 1)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, repeatable (e.g. --set mlp_mult=3)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS, help="torch, mlx or auto (default torch)")
    parser.add_argument("--out", type=Path, default=None, help="write the RunResult JSON here (e.g. run.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: auto, e.g. 1)")
    parser.add_argument("--quiet", action="store_true", help="do not print the training log")
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        config = {"preset": args.preset, **parse_key_values(args.sets, "--set")}
        result = run(config, args.seed, args.backend, progress=not args.quiet, threads=args.threads)
        if args.out is not None:
            write_json(args.out, result.to_dict())
        print(f"status:{result.status} val_bpb:{result.val_bpb:.6f} post_quant_val_bpb:{result.post_quant_val_bpb:.6f} "
              f"steps:{result.steps} wall_s:{result.wall_s:.2f}" + (f" error:{result.error}" if result.error else ""))
        return 0 if result.status == "ok" else 1

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
