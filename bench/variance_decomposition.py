"""Where the paired-difference noise of a screening preset comes from: data order, initialisation, evaluation.

A paired comparison runs the control and a change on the same seed; its noise is the SD of the paired
differences d = treatment - control over seeds (sigma_d). The seed drives two things (the initial values, keyed
by parameter name, and the data order), and the val split is one fixed sample of text. This bench separates them
with the trainer's ``data_seed`` knob (the data order alone):

- cell ``data``: the init seed fixed (``--fixed``), the data order varies with the seed;
- cell ``init``: the data order fixed (``data_seed=--fixed``), the init varies with the seed;
- cell ``both``: the seed drives both, as a screen runs;
- evaluation sampling: for every pair, the per-sequence losses of both final (round-tripped) models on the val
  split give the SD that a fresh val sample of the same size would add to d (sqrt(N var_i(dL_i)) / (ln 2 x bytes),
  sequences as the sampling unit). It is not part of the seed-to-seed sigma_d, which holds the val split fixed.

Every run is appended to ``--log`` as a JSON line as soon as it finishes (nothing computed is lost; a rerun skips
runs already there), then the cells are summarised as a markdown table:

    python bench/variance_decomposition.py --preset fast --seeds 8 --cells data,init,both \\
        --change mlp_mult=3 --change activation=leaky_relu2 --threads 2 --log /tmp/vd.jsonl
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from scripts.causal.core.cli import parse_key_values
from scripts.causal.core.errors import ConfigError
from scripts.causal.stats.power import mde_one_sided

CELLS = ("data", "init", "both")
ALPHA, POWER, N_DESIGN = 0.01, 0.8, 5


def cell_overrides(cell: str, seed: int, fixed: int) -> tuple[int, dict[str, int]]:
    """(seed passed to the trainer, extra overrides) for one run of a cell."""
    if cell == "data":
        return fixed, {"data_seed": seed}
    if cell == "init":
        return seed, {"data_seed": fixed}
    if cell == "both":
        return seed, {}
    raise ConfigError(f"unknown cell {cell!r}; choose from {list(CELLS)}")


def per_sequence(model, cfg, data) -> tuple[np.ndarray, np.ndarray]:
    """(summed loss in nats, byte count) of every val sequence under ``model`` as it is now (pure in effect)."""
    import torch

    import train_gpt as tg

    ctx = tg.make_eval_context(tg.trim_val_tokens(data.val_tokens, cfg.train_seq_len), data.luts, torch.device("cpu"))
    seq = cfg.train_seq_len
    n = (ctx.val_tokens.numel() - 1) // seq
    losses, nbytes = np.zeros(n), np.zeros(n)
    was = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(n):
            local = ctx.val_tokens[i * seq: (i + 1) * seq + 1]
            x, y = local[:-1].reshape(1, -1), local[1:].reshape(1, -1)
            losses[i] = float(model(x, y)) * seq
            b = ctx.base_bytes[y.reshape(-1)].to(torch.int64)
            b += (ctx.has_leading_space[y.reshape(-1)] & ~ctx.is_boundary[x.reshape(-1)]).to(torch.int64)
            nbytes[i] = float(b.sum())
    model.train(was)
    return losses, nbytes


def one_run(preset: str, arm_cfg: Mapping[str, Any], seed: int, threads: int | None, *,
            eval_sampling: bool = True) -> dict[str, Any]:
    from scripts.causal.screen import trainer

    cfg = trainer.as_config({"preset": preset, **arm_cfg}).with_overrides(seed=seed)
    result = trainer.run(cfg, seed, threads=threads)
    if result.status != "ok":
        raise ConfigError(f"run {dict(arm_cfg)} seed {seed} ended with status {result.status}: {result.error}")
    row = {"val_bpb": result.val_bpb, "post_quant_val_bpb": result.post_quant_val_bpb, "wall_s": result.wall_s}
    if eval_sampling:
        cfg, data = trainer.cached_data(cfg)
        model, _ = trainer.cached_model(cfg)
        losses, nbytes = per_sequence(model, cfg, data)
        row.update(seq_loss=losses.tolist(), seq_bytes=nbytes.tolist(),
                   check_bpb=float(losses.sum() / math.log(2.0) / nbytes.sum()))
    return row


def sd_interval(sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of a normal SD estimated from n values."""
    lo, hi = stats.chi2.ppf([(1 + level) / 2, (1 - level) / 2], n - 1)
    return sd * math.sqrt((n - 1) / lo), sd * math.sqrt((n - 1) / hi)


def summarize(rows: Sequence[Mapping[str, Any]], metric: str = "post_quant_val_bpb") -> list[dict[str, Any]]:
    """One summary per (cell, change): sigma_d with its interval, rho, MDE at n=5, the eval-sampling SD."""
    by = {(r["cell"], r["arm"], r["seed"]): r for r in rows}
    out = []
    for cell in CELLS:
        changes = sorted({r["arm"] for r in rows if r["cell"] == cell and r["arm"] != "control"})
        for arm in changes:
            seeds = sorted(s for (c, a, s) in by if c == cell and a == arm and (cell, "control", s) in by)
            if len(seeds) < 3:
                continue
            c = np.array([by[(cell, "control", s)][metric] for s in seeds])
            t = np.array([by[(cell, arm, s)][metric] for s in seeds])
            d = t - c
            sd_d = float(d.std(ddof=1))
            ev = []
            for s in seeds:
                if "seq_loss" not in by[(cell, arm, s)] or "seq_loss" not in by[(cell, "control", s)]:
                    continue
                dl = np.array(by[(cell, arm, s)]["seq_loss"]) - np.array(by[(cell, "control", s)]["seq_loss"])
                nbytes = float(np.sum(by[(cell, "control", s)]["seq_bytes"]))
                ev.append(dl.size * dl.var(ddof=1) / (math.log(2.0) * nbytes) ** 2)
            lo, hi = sd_interval(sd_d, len(seeds))
            out.append({"cell": cell, "change": arm, "n": len(seeds), "mean_delta": float(d.mean()), "sd_d": sd_d,
                        "sd_d_lo": lo, "sd_d_hi": hi, "sd_control": float(c.std(ddof=1)),
                        "rho": float(np.corrcoef(c, t)[0, 1]),
                        "mde_n5": mde_one_sided(sigma=sd_d, n=N_DESIGN, alpha=ALPHA, power=POWER),
                        "sd_eval": math.sqrt(float(np.mean(ev))) if ev else None,
                        "run_s": float(np.mean([by[(cell, a, s)]["wall_s"] for s in seeds for a in ("control", arm)]))})
    return out


def to_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| cell | change | n | mean d | sigma_d [95% CI] | SD control | rho | MDE n=5 | eval-sampling SD | s/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['cell']} | `{s['change']}` | {s['n']} | {s['mean_delta']:+.4f} | {s['sd_d']:.4f} "
                     f"[{s['sd_d_lo']:.4f}, {s['sd_d_hi']:.4f}] | {s['sd_control']:.4f} | {s['rho']:.2f} | "
                     f"{s['mde_n5']:.4f} | {'n/a' if s['sd_eval'] is None else format(s['sd_eval'], '.4f')} | "
                     f"{s['run_s']:.1f} |")
    return "\n".join(lines)


def load_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {i} is not JSON ({exc}); remove it to resume") from exc
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", help="config preset (e.g. fast)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 1..N per cell (e.g. 8)")
    parser.add_argument("--cells", default="data,init,both", help="comma-separated cells: data, init, both")
    parser.add_argument("--fixed", type=int, default=1000, help="the seed held fixed in the data and init cells")
    parser.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                        help="one treatment arm per flag (e.g. --change mlp_mult=3); default mlp_mult=3")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every arm, repeatable (a lever, e.g. --set warmdown_iters=120)")
    parser.add_argument("--metric", default="post_quant_val_bpb", choices=("val_bpb", "post_quant_val_bpb"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (pin it, e.g. 2)")
    parser.add_argument("--log", type=Path, required=True, help="JSON-lines file of runs (appended; resumable)")
    parser.add_argument("--summarize-only", action="store_true", help="only summarise what --log holds")
    parser.add_argument("--no-eval-sampling", action="store_true",
                        help="skip the per-sequence evaluation (the eval-sampling column; saves ~6 s per run)")
    args = parser.parse_args(argv)
    base = parse_key_values(args.sets, "--set")
    changes = {c: parse_key_values([c], "--change") for c in (args.change or ["mlp_mult=3"])}
    rows = load_log(args.log)
    if not args.summarize_only:
        done = {(r["cell"], r["arm"], r["seed"]) for r in rows}
        for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
            for seed in range(1, args.seeds + 1):
                run_seed, extra = cell_overrides(cell, seed, args.fixed)
                for arm, change in (("control", {}), *changes.items()):
                    if (cell, arm, seed) in done:
                        continue
                    row = one_run(args.preset, {**base, **extra, **change}, run_seed, args.threads,
                                  eval_sampling=not args.no_eval_sampling)
                    row.update(cell=cell, arm=arm, seed=seed, preset=args.preset, set=base, threads=args.threads,
                               load=os.getloadavg()[0])
                    with args.log.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
                    rows.append(row)
                    print(f"cell:{cell} seed:{seed} arm:{arm} val_bpb:{row['val_bpb']:.5f} "
                          f"post_quant:{row['post_quant_val_bpb']:.5f} wall_s:{row['wall_s']:.1f}", flush=True)
    print(to_markdown(summarize(rows, args.metric)))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"total_s:{time.perf_counter() - t0:.0f}", file=sys.stderr)
    sys.exit(code)
