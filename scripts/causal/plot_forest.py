"""Forest plot of an ablation screen: mean delta val_bpb with its 95% CI per intervention, coloured by decision.

Reads the ``results`` of an ablation_results.json (statistical_analysis.py). A vertical line marks zero
(no effect) and, when the margin is positive, another marks -margin (the improvement a change must beat).
Rows without a CI (e.g. an ``inconclusive`` arm with < 2 pairs) show the point estimate only, as a hollow marker.

    python scripts/causal/plot_forest.py --input results/example/ablation_results.json --output forest.png
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Mapping, Sequence

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.figures import save_figure
from scripts.causal.core.schema import read_json

DECISION_COLORS: dict[str, str] = {
    "confirmed": "#1a9641",
    "inconclusive": "#a6a61a",
    "null": "#7f7f7f",
    "harmful": "#d7191c",
}
DECISION_ORDER = ("confirmed", "inconclusive", "null", "harmful")  # stats/decision.py DECISIONS


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _p_txt(r: Mapping) -> str:
    p_adj = _num(r.get("p_adjusted"))
    return f"p_adj={p_adj:.2g}" if p_adj is not None else "p_adj=n/a"


def clip_limit(rows: Sequence[Mapping]) -> float | None:
    """Half-width of the x range when a few rows (e.g. the frozen-matrices sanity arm) dwarf the rest.

    Returns None when every row fits comfortably; otherwise 1.6x the extent of the largest row that is
    not an outlier (an outlier extent is more than 4x the next one, and at most half the rows are outliers).
    """
    ext = sorted((max(abs(v) for v in vals) for vals in (
        [x for x in (_num(r.get("mean_delta_bpb")), _num(r.get("ci_low")), _num(r.get("ci_high"))) if x is not None]
        for r in rows) if vals), reverse=True)
    for k in range(min(len(ext) // 2, len(ext) - 1)):
        if ext[k + 1] > 0 and ext[k] > 4 * ext[k + 1]:
            return 1.6 * ext[k + 1]
    return None


def plot_forest(ablation: Mapping, out_path: str | Path, *, title: str = "Paired-seed screen") -> Path:
    """Write the forest plot of ``ablation`` (an ablation_results payload) to ``out_path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = list(ablation.get("results") or [])
    if not rows:
        raise DataFormatError("ablation results have no rows to plot ('results' is empty)")
    margin = _num(ablation.get("margin_bpb")) or 0.0
    alpha = ablation.get("alpha")
    fig_h = 1.4 + 0.45 * len(rows)
    fig, ax = plt.subplots(figsize=(9.5, fig_h))
    labels = []
    lim = clip_limit(rows)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        decision = str(r.get("decision"))
        color = DECISION_COLORS.get(decision, "black")
        mean, lo, hi = _num(r.get("mean_delta_bpb")), _num(r.get("ci_low")), _num(r.get("ci_high"))
        if lim is not None and mean is not None and abs(mean) > lim:
            side = 1.0 if mean > 0 else -1.0
            ci_txt = f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else ""
            ax.annotate(f"off scale: {mean:+.4f}{ci_txt}", xy=(side * lim * 0.98, y), xytext=(side * lim * 0.5, y),
                        color=color, fontsize=8, va="center", ha="center",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "lw": 0.6},
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 2})
            labels.append(f"{r.get('intervention')}  (n={r.get('n_pairs')}, {_p_txt(r)})")
            continue
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=color, lw=2.2, solid_capstyle="butt")
            ax.plot([lo, lo], [y - 0.15, y + 0.15], color=color, lw=1.5)
            ax.plot([hi, hi], [y - 0.15, y + 0.15], color=color, lw=1.5)
        if mean is not None:
            filled = lo is not None and hi is not None
            ax.plot([mean], [y], "s", ms=7, color=color, mfc=color if filled else "white", mew=1.5)
        labels.append(f"{r.get('intervention')}  (n={r.get('n_pairs')}, {_p_txt(r)})")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(reversed(labels)), fontsize=9)
    ax.axvline(0.0, color="black", lw=1.0, ls="-")
    handles = [Line2D([], [], color="black", lw=1.0, label="0 = no effect")]
    if margin > 0:
        ax.axvline(-margin, color="#1a9641", lw=1.0, ls="--")
        handles.append(Line2D([], [], color="#1a9641", lw=1.0, ls="--", label=f"-margin = {-margin:g} bpb"))
    present = {str(r.get("decision")) for r in rows}
    for d in DECISION_ORDER:
        if d in present:
            handles.append(Line2D([], [], color=DECISION_COLORS[d], marker="s", lw=2.2, label=d))
    handles.append(Line2D([], [], color="black", marker="s", mfc="white", lw=0, label="no CI (too few pairs)"))
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("Δ val_bpb = treatment − control, same seed (bits/byte; negative = better), mean and 95% CI")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if lim is not None:
        ax.set_xlim(-lim, lim)
    ax.grid(axis="x", alpha=0.3)
    a_txt = f", α={alpha}" if alpha is not None else ""
    ax.set_title(f"{title}: paired Δ per intervention ({ablation.get('correction', '?')}-adjusted{a_txt})",
                 fontsize=11)
    return save_figure(fig, out_path, dpi=90, bbox_inches="tight")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, required=True, help="ablation_results.json, e.g. results/example/ablation_results.json")
    p.add_argument("--output", type=Path, required=True, help="PNG to write, e.g. results/example/plots/forest.png")
    p.add_argument("--title", default="Paired-seed screen", help="plot title prefix")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        print(plot_forest(read_json(args.input), args.output, title=args.title))
        return 0

    return run_cli(body, debug=args.debug, prog="plot_forest.py")


if __name__ == "__main__":
    raise SystemExit(main())
