"""Loss curves per intervention vs the shared control, from a runs.json (or a ledger screen).

One PNG per intervention, two panels: training loss (nats per token) against step, with thin per-seed
lines, the mean over seeds and a shaded mean +/- 1 SD band (periodic val_bpb evaluations, when the run made
them, are marked on a right-hand axis); and the final held-out val_bpb (bits per byte) per seed, control and
treatment joined by a line per seed, with the means. Failed or diverged runs are drawn dashed and left
out of the mean and band, so they are visible but never averaged in.

    python scripts/causal/plot_losses.py --input results/example/runs.json --out-dir results/example/plots
    python scripts/causal/plot_losses.py --ledger results/ledger.sqlite --screen-id ID --out-dir plots
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.figures import save_figure
from scripts.causal.core.schema import read_json

CONTROL = "control"
CONTROL_COLOR = "#1f5fa8"
TREATMENT_COLOR = "#d2600f"


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def safe_name(name: str) -> str:
    """File-name-safe version of an intervention name (``loss_<safe>.png``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def load_runs(path: str | Path) -> list[dict]:
    """Run rows of a runs.json file; errors name the file and the missing field."""
    payload = read_json(path)
    runs = payload.get("runs")
    if not isinstance(runs, list):
        raise DataFormatError(f"{path}: field 'runs' must be a list of run rows (see the runs.json schema)")
    for i, row in enumerate(runs):
        for key in ("intervention", "seed", "status"):
            if key not in row:
                raise DataFormatError(f"{path}: runs[{i}] has no field {key!r}; regenerate it with experiment_runner.py")
    return runs


def group_by_intervention(runs: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """{intervention: rows} in first-seen order; the control arm is under ``"control"``."""
    groups: dict[str, list[Mapping]] = {}
    for row in runs:
        name = CONTROL if row.get("arm") == "control" else str(row["intervention"])
        groups.setdefault(name, []).append(row)
    return groups


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what is available)."""
    x = np.asarray(values, dtype=float)
    if window <= 1 or x.size == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x)
    for i in range(x.size):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def _ok(row: Mapping) -> bool:
    return row.get("status") == "ok" and bool(row.get("step_losses"))


def curve_stats(rows: Sequence[Mapping], *, smooth: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, mean, sd) of the smoothed train loss over the ok rows, truncated to the shortest run."""
    curves = [moving_average(r["step_losses"], smooth) for r in rows if _ok(r)]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    stack = np.stack([c[:n] for c in curves])
    sd = stack.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(n)
    return np.arange(1, n + 1), stack.mean(axis=0), sd


def _val_points(rows: Sequence[Mapping]) -> dict[int, list[float]]:
    pts: dict[int, list[float]] = {}
    for r in rows:
        if not _ok(r):
            continue
        for v in r.get("val_history") or []:
            if v.get("val_bpb") is not None:
                pts.setdefault(int(v["step"]), []).append(float(v["val_bpb"]))
    return pts


def _draw_arm(ax_loss, ax_val, rows: Sequence[Mapping], *, label: str, color: str, smooth: int,
              mean_style: str = "-") -> None:
    for r in rows:
        losses = r.get("step_losses") or []
        if not losses:
            continue
        y = moving_average(losses, smooth)
        style = "-" if _ok(r) else "--"
        ax_loss.plot(np.arange(1, len(y) + 1), y, style, color=color, lw=0.7, alpha=0.35 if _ok(r) else 0.8)
        if not _ok(r):
            ax_loss.annotate(f"seed {r.get('seed')}: {r.get('status')}", (len(y), y[-1]),
                             fontsize=7, color=color, ha="right", va="bottom")
    stats = curve_stats(rows, smooth=smooth)
    n_ok = sum(_ok(r) for r in rows)
    if stats is not None:
        steps, mean, sd = stats
        ax_loss.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)
        ax_loss.plot(steps, mean, mean_style, color=color, lw=2.0, label=f"{label} train loss (mean of {n_ok} seeds, ±1 SD)")
    pts = _val_points(rows)
    if len(pts) >= 2:  # periodic evaluations: val_bpb on the right axis of the loss panel
        steps_v = sorted(pts)
        ax_val.plot(steps_v, [float(np.mean(pts[s])) for s in steps_v], "D:", color=color, ms=5, lw=1.2,
                    label=f"{label} val_bpb (right axis)")


def final_pairs(treatment: Sequence[Mapping], control: Sequence[Mapping]) -> list[tuple[int, float, float]]:
    """(seed, control val_bpb, treatment val_bpb) for seeds where both runs are ok."""
    ctrl = {r["seed"]: float(r["val_bpb"]) for r in control if r.get("status") == "ok" and r.get("val_bpb") is not None}
    return [(r["seed"], ctrl[r["seed"]], float(r["val_bpb"])) for r in treatment
            if r.get("status") == "ok" and r.get("val_bpb") is not None and r["seed"] in ctrl]


def _draw_pairs(ax, name: str, treatment: Sequence[Mapping], control: Sequence[Mapping]) -> None:
    pairs = final_pairs(treatment, control)
    for seed, c, t in pairs:
        ax.plot([0, 1], [c, t], "-", color="0.6", lw=0.9, zorder=1)
        ax.plot([0], [c], "o", color=CONTROL_COLOR, ms=5, zorder=2)
        ax.plot([1], [t], "o", color=TREATMENT_COLOR, ms=5, zorder=2)
        ax.annotate(str(seed), (1, t), xytext=(6, 0), textcoords="offset points", fontsize=7, va="center",
                    color="0.35")
    n_failed = sum(1 for r in treatment if r.get("status") != "ok")
    if pairs:
        cm, tm = float(np.mean([p[1] for p in pairs])), float(np.mean([p[2] for p in pairs]))
        ax.plot([0, 1], [cm, tm], "D-", color="black", ms=7, lw=1.8, zorder=3, label="mean over seeds")
        d = tm - cm
        ax.set_title(f"Final val_bpb per seed (lines pair seeds)\nmean Δ = {d:+.4f} bpb over {len(pairs)} pairs"
                     + (f", {n_failed} failed" if n_failed else ""), fontsize=10)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.set_title(f"Final val_bpb: no complete pairs ({n_failed} failed)", fontsize=10)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["control", name])
    ax.set_xlim(-0.4, 1.5)
    ax.set_ylabel("held-out val_bpb (bits/byte)")
    ax.grid(axis="y", alpha=0.3)


def _loss_ylim(groups: Sequence[Sequence[Mapping]], smooth: int) -> tuple[float, float] | None:
    """Zoom on the part of training where arms differ: ignore the first 15% of steps for the top."""
    tails, lows = [], []
    for rows in groups:
        stats = curve_stats(rows, smooth=smooth)
        if stats is None:
            continue
        _, mean, sd = stats
        k = max(1, int(0.15 * mean.size))
        tails.append(float(np.max(mean[k:] + sd[k:])) if mean.size > k else float(np.max(mean)))
        lows.append(float(np.min(mean - sd)))
    if not tails:
        return None
    lo, hi = min(lows), max(tails)
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def plot_intervention(name: str, treatment: Sequence[Mapping], control: Sequence[Mapping], out_path: Path,
                      *, smooth: int | None = None, title_suffix: str = "") -> Path:
    """Write one PNG comparing ``name`` with the control arm; returns the path."""
    plt = _mpl()
    longest = max((len(r.get("step_losses") or []) for r in [*treatment, *control]), default=1)
    k = smooth if smooth is not None else max(1, longest // 30)
    fig, (ax_loss, ax_pair) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.7, 1]})
    ax_val = ax_loss.twinx()
    _draw_arm(ax_loss, ax_val, control, label="control", color=CONTROL_COLOR, smooth=k)
    _draw_arm(ax_loss, ax_val, treatment, label=name, color=TREATMENT_COLOR, smooth=k, mean_style="--")
    ylim = _loss_ylim([control, treatment], k)
    if ylim:
        ax_loss.set_ylim(*ylim)
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("train loss (nats/token)" + (f", moving avg over {k} steps" if k > 1 else ""))
    ax_loss.set_title("Training loss (thin lines = individual seeds)", fontsize=10)
    ax_loss.grid(alpha=0.3)
    handles, labels = ax_loss.get_legend_handles_labels()
    if ax_val.has_data():
        ax_val.set_ylabel("val_bpb (bits/byte)")
        h2, l2 = ax_val.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    else:
        ax_val.set_axis_off()
    ax_loss.legend(handles, labels, fontsize=8, loc="upper right")
    _draw_pairs(ax_pair, name, treatment, control)
    fig.suptitle(f"{name} vs control{title_suffix}", fontsize=12)
    return save_figure(fig, out_path, dpi=90)


def plot_losses(runs: Sequence[Mapping], out_dir: str | Path, *, interventions: Sequence[str] | None = None,
                smooth: int | None = None, title_suffix: str = "") -> list[Path]:
    """One ``loss_<intervention>.png`` per intervention in ``runs`` (or the ones named); returns the paths."""
    groups = group_by_intervention(runs)
    control = groups.get(CONTROL, [])
    names = [n for n in groups if n != CONTROL] if interventions is None else list(interventions)
    missing = [n for n in names if n not in groups]
    if missing:
        raise DataFormatError(f"no runs for intervention(s) {missing}; present: {sorted(groups)}")
    out_dir = Path(out_dir)
    return [plot_intervention(n, groups[n], control, out_dir / f"loss_{safe_name(n)}.png", smooth=smooth,
                              title_suffix=title_suffix) for n in names]


def _runs_from_ledger(ledger_path: Path, screen_id: str) -> list[dict]:
    from scripts.causal.screen.ledger import Ledger  # owned by the experiments stage

    if not Path(ledger_path).is_file():
        raise DataFormatError(f"{ledger_path}: ledger not found; pass the SQLite file experiment_runner.py wrote")
    with Ledger(ledger_path) as ledger:
        rows = [r.runs_row() for r in ledger.runs(screen_id)]
        known = ledger.list_screens()
    if not rows:
        raise DataFormatError(f"{ledger_path}: no runs for screen {screen_id!r}; screens in it: {known}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="runs.json, e.g. results/example/runs.json")
    src.add_argument("--ledger", type=Path, help="SQLite ledger, e.g. results/ledger.sqlite (needs --screen-id)")
    p.add_argument("--screen-id", help="screen to plot from --ledger, e.g. fast-2026-01-01")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for loss_<intervention>.png, e.g. plots/")
    p.add_argument("--interventions", help="comma-separated subset, e.g. aa,mlp_mult_3 (default: all)")
    p.add_argument("--smooth", type=int, default=None, help="moving-average window in steps (default: steps/30)")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.ledger is not None:
            if not args.screen_id:
                raise DataFormatError("--ledger needs --screen-id (the screen to plot)")
            runs = _runs_from_ledger(args.ledger, args.screen_id)
        else:
            runs = load_runs(args.input)
        names = [s for s in args.interventions.split(",") if s] if args.interventions else None
        for path in plot_losses(runs, args.out_dir, interventions=names, smooth=args.smooth):
            print(path)
        return 0

    return run_cli(body, debug=args.debug, prog="plot_losses.py")


if __name__ == "__main__":
    raise SystemExit(main())
