"""Noise floor of a screening preset: seed SD per arm, paired-difference SD, paired correlation and the MDE.

Runs n seeds of the control and of one real change (default ``mlp_mult=3``) with common random numbers
(the same seed drives init and data order in both arms), plus an A/A check: the control re-run with its
first seed must reproduce bit for bit, and control runs of different seeds give the unpaired noise.

    python bench/noise_floor.py --preset fast --seeds 5 --change mlp_mult=3 --out bench/noise_floor.json
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.causal.core.cli import parse_key_values
from scripts.causal.core.errors import ConfigError
from scripts.causal.stats.power import mde_one_sided

ALPHA, POWER = 0.01, 0.8


@dataclasses.dataclass(frozen=True)
class NoiseFloor:
    preset: str
    change: dict
    seeds: list
    backend: str
    control_bpb: list
    treatment_bpb: list
    sd_control: float
    sd_treatment: float
    mean_delta: float  # treatment - control (negative = the change helps)
    sd_delta: float
    rho: float
    mde_paired: float  # exact-t MDE at n pairs, one-sided alpha=0.01, power 0.8, sigma = sd_delta
    mde_unpaired: float  # same with sigma = sqrt(2) x sd_control (what independent seeds would give)
    aa_rerun_identical: bool
    sd_aa_unpaired: float  # SD of control(seed i) - control(seed i+1)
    mean_run_s: float
    load_before: float
    load_after: float


def summarize(control: Sequence[float], treatment: Sequence[float], *, n_alpha: float = ALPHA,
              power: float = POWER) -> dict[str, float]:
    """Paired statistics of two arms measured on the same seeds (pure)."""
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    if c.shape != t.shape or c.size < 3:
        raise ConfigError(f"need the same >= 3 seeds in both arms, got {c.size} and {t.size}")
    d = t - c
    sd_c, sd_t, sd_d = float(c.std(ddof=1)), float(t.std(ddof=1)), float(d.std(ddof=1))
    rho = float(np.corrcoef(c, t)[0, 1]) if sd_c > 0 and sd_t > 0 else float("nan")
    aa = c - np.roll(c, -1)
    return {
        "sd_control": sd_c, "sd_treatment": sd_t, "mean_delta": float(d.mean()), "sd_delta": sd_d, "rho": rho,
        "mde_paired": mde_one_sided(sigma=sd_d, n=c.size, alpha=n_alpha, power=power),
        "mde_unpaired": mde_one_sided(sigma=math.sqrt(2.0) * sd_c, n=c.size, alpha=n_alpha, power=power),
        "sd_aa_unpaired": float(aa.std(ddof=1)),
    }


def measure(*, preset: str, change: Mapping[str, Any], seeds: Sequence[int], backend: str = "torch",
            base: Mapping[str, Any] | None = None, run_fn: Callable | None = None, threads: int | None = None,
            log: Callable[[str], None] = print) -> NoiseFloor:
    if run_fn is None:
        from scripts.causal.screen.trainer import run as run_fn
    control_cfg = {"preset": preset, **(base or {})}
    treat_cfg = {**control_cfg, **change}
    load_before = os.getloadavg()[0]
    control, treatment, times = [], [], []
    for seed in seeds:
        for arm, cfg, out in (("control", control_cfg, control), ("treatment", treat_cfg, treatment)):
            r = run_fn(cfg, seed, backend, threads=threads)
            if r.status != "ok":
                raise ConfigError(f"{arm} seed {seed} ended with status {r.status}: {r.error}")
            out.append(r.val_bpb)
            times.append(r.wall_s)
            log(f"seed:{seed} arm:{arm} val_bpb:{r.val_bpb:.6f} post_quant:{r.post_quant_val_bpb:.6f} "
                f"wall_s:{r.wall_s:.1f} load:{os.getloadavg()[0]:.2f}")
    rerun = run_fn(control_cfg, seeds[0], backend, threads=threads)
    log(f"A/A rerun seed:{seeds[0]} val_bpb:{rerun.val_bpb:.6f} identical:{rerun.val_bpb == control[0]}")
    stats = summarize(control, treatment)
    return NoiseFloor(preset=preset, change=dict(change), seeds=list(seeds), backend=backend, control_bpb=control,
                      treatment_bpb=treatment, aa_rerun_identical=rerun.val_bpb == control[0],
                      mean_run_s=float(np.mean(times)), load_before=load_before, load_after=os.getloadavg()[0],
                      **stats)


def to_markdown(nf: NoiseFloor, command: str) -> str:
    change = ", ".join(f"{k}={v}" for k, v in nf.change.items())
    rows = [
        f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} CPUs, load avg {nf.load_before:.1f} before / "
        f"{nf.load_after:.1f} after; other jobs were running, so wall times are inflated).",
        "",
        f"Preset `{nf.preset}`, backend {nf.backend}, seeds {nf.seeds}, change `{change}`; metric: final val_bpb.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| SD of val_bpb, control arm | {nf.sd_control:.4f} |",
        f"| SD of val_bpb, treatment arm | {nf.sd_treatment:.4f} |",
        f"| mean paired difference (treatment - control) | {nf.mean_delta:+.4f} |",
        f"| SD of paired differences sigma_d | {nf.sd_delta:.4f} |",
        f"| paired correlation rho | {nf.rho:.3f} |",
        f"| MDE at n={len(nf.seeds)} pairs, one-sided alpha=0.01, power 0.8 (exact t), paired | {nf.mde_paired:.4f} |",
        f"| same MDE with independent seeds (sigma = sqrt(2) x SD control) | {nf.mde_unpaired:.4f} |",
        f"| A/A: control re-run with the same seed is bit-identical | {nf.aa_rerun_identical} |",
        f"| A/A: SD of control(seed i) - control(seed i+1) | {nf.sd_aa_unpaired:.4f} |",
        f"| mean wall time per run (train + both evals) | {nf.mean_run_s:.1f} s |",
        "",
        "control val_bpb: " + ", ".join(f"{v:.4f}" for v in nf.control_bpb),
        "",
        "treatment val_bpb: " + ", ".join(f"{v:.4f}" for v in nf.treatment_bpb),
    ]
    return "\n".join(rows)



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", help="config preset (e.g. fast)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 1..N (e.g. 5)")
    parser.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                        help="the treatment's change, repeatable (default mlp_mult=3)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for both arms, repeatable (e.g. --set iterations=100)")
    parser.add_argument("--backend", default="torch", help="torch or mlx")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default auto, e.g. 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON (e.g. noise.json)")
    args = parser.parse_args(argv)
    change = parse_key_values(args.change, "--change") or {"mlp_mult": "3"}
    t0 = time.perf_counter()
    nf = measure(preset=args.preset, change=change, seeds=list(range(1, args.seeds + 1)), backend=args.backend,
                 base=parse_key_values(args.sets, "--set"), threads=args.threads)
    command = "python bench/noise_floor.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(to_markdown(nf, command.strip()))
    print(f"\ntotal_s:{time.perf_counter() - t0:.0f}")
    if args.out is not None:
        from scripts.causal.core.schema import write_json

        write_json(args.out, dataclasses.asdict(nf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
