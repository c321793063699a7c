"""Draw the combined graph: tiers left to right, edge style by source, PAG marks at the endpoints.

Pure matplotlib + networkx (no graphviz needed). Only nodes that carry an edge are drawn. Styles:
both = solid green, data = solid blue, expert = dashed grey, conflict = solid red; line width grows
with the bootstrap frequency. An open circle at an endpoint is a PAG circle mark.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from scripts.causal.core.figures import save_figure
from scripts.causal.dag.search import parse_edge

STYLE = {"both": ("#1b9e77", "-"), "data": ("#1f5fbf", "-"), "expert": ("#9a9a9a", "--"),
         "conflict": ("#d62728", "-")}
TIER_X = {0: 0.0, 1: 1.0, 2: 1.7}


MEDIATOR_ORDER = ("params", "step_time", "steps", "artifact_bytes", "quant_gap", "eval_context")


def _layout(nodes_by_tier: Mapping[int, list[str]], edges: Sequence[Mapping]) -> dict[str, tuple[float, float]]:
    """Tier columns; tier 1 in a fixed order, tier 0 sorted by the mean height of its later-tier neighbours
    (barycentre ordering, fewer crossings)."""
    tallest = max(len(v) for v in nodes_by_tier.values())
    pos: dict[str, tuple[float, float]] = {}

    def spread(tier: int, names: list[str]) -> None:
        k = len(names)
        step = tallest / max(k, 1) if tier else 1.0
        for i, name in enumerate(names):
            pos[name] = (TIER_X[tier], (tallest - 1) / 2 - (i - (k - 1) / 2) * step)

    for tier in (2, 1):
        names = nodes_by_tier.get(tier, [])
        spread(tier, sorted(names, key=lambda n: (MEDIATOR_ORDER.index(n) if n in MEDIATOR_ORDER else 99, n)))
    later = dict(pos)
    nbrs: dict[str, list[float]] = {}
    for e in edges:
        for u, v in ((e["a"], e["b"]), (e["b"], e["a"])):
            if v in later:
                nbrs.setdefault(u, []).append(later[v][1])
    names = nodes_by_tier.get(0, [])

    def bary(n: str) -> float:
        ys = nbrs.get(n, [0.0])
        return sum(ys) / len(ys)

    # Keep nodes linked inside tier 0 next to each other (short arcs): connected components of the
    # within-tier graph, each laid out in BFS order from its highest-barycentre node.
    import networkx as nx

    inner = nx.Graph()
    inner.add_nodes_from(names)
    inner.add_edges_from((e["a"], e["b"]) for e in edges if e["a"] in inner and e["b"] in inner)
    comps = [sorted(c, key=lambda n: (-bary(n), n)) for c in nx.connected_components(inner)]
    comps.sort(key=lambda c: (-sum(bary(n) for n in c) / len(c), c[0]))
    order: list[str] = []
    for comp in comps:
        sub = inner.subgraph(comp)
        seen = [comp[0]]
        for _, v in nx.bfs_edges(sub, comp[0], sort_neighbors=lambda vs: sorted(vs, key=lambda n: (-bary(n), n))):
            seen.append(v)
        order.extend(seen)
    spread(0, order)
    return pos


def _curve_point(ax, p1, p2, rad, t=0.5):
    """Data coordinates of the point at ``t`` on matplotlib's arc3 curve from p1 to p2 (display space)."""
    (x1, y1), (x2, y2) = ax.transData.transform(p1), ax.transData.transform(p2)
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
    return ax.transData.inverted().transform((a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2))


def render_dag(edges: Sequence[Mapping], tiers: Mapping[str, int], path: str | Path, *,
               title: str = "", min_frequency: float = 0.0) -> Path:
    """Write a PNG of the combined graph; expert-only edges are always drawn, data edges when their
    bootstrap frequency is at least ``min_frequency``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    shown = [e for e in edges if e["source"] == "expert" or e["bootstrap_frequency"] >= min_frequency]
    names = sorted({e["a"] for e in shown} | {e["b"] for e in shown})
    by_tier: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for n in names:
        by_tier[min(int(tiers.get(n, 1)), 2)].append(n)
    by_tier = {t: v for t, v in by_tier.items() if v}
    pos = _layout(by_tier, shown)
    height = max(6.0, 0.42 * max(len(v) for v in by_tier.values()))
    fig, ax = plt.subplots(figsize=(14, height))
    ax.set_xlim(-0.65, 2.15)
    ax.set_ylim(min(p[1] for p in pos.values()) - 1.0, max(p[1] for p in pos.values()) + 1.6)
    order = sorted(shown, key=lambda e: (e["source"] != "expert", e.get("bootstrap_frequency") or 0.0))
    for e in order:
        a, b = e["a"], e["b"]
        ta, tb = tiers.get(a, 1), tiers.get(b, 1)
        src, dst = (a, b) if (ta, -pos[a][1]) <= (tb, -pos[b][1]) else (b, a)
        color, ls = STYLE.get(e["source"], ("black", "-"))
        pe = parse_edge(e["type"])
        marks = ("tail", "arrow") if e["source"] == "expert" else (pe.mark_a, pe.mark_b)
        if pe.a.split("=", 1)[0] != src:  # data types name columns ("compression=zstd"), a/b name features
            marks = marks[::-1]
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        same = abs(x1 - x2) < 1e-9
        # Within a tier the source is the upper node, so a negative rad bulges the arc to the right.
        rad = -0.8 if same else 0.05 * (1 if y2 >= y1 else -1)
        style = {("tail", "arrow"): "-|>", ("arrow", "arrow"): "<|-|>", ("circle", "arrow"): "-|>",
                 ("arrow", "tail"): "<|-", ("arrow", "circle"): "<|-"}.get(marks, "-")
        freq = float(e.get("bootstrap_frequency") or 0.0)
        expert_only = e["source"] == "expert"
        lw = 0.7 if expert_only else 0.9 + 2.5 * freq
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops=dict(arrowstyle=style, color=color, lw=lw, ls=ls, shrinkA=7, shrinkB=7,
                                    connectionstyle=f"arc3,rad={rad}", alpha=0.45 if expert_only else 0.9,
                                    mutation_scale=11))
        for mark, t in ((marks[0], 0.07), (marks[1], 0.93)):
            if mark == "circle":
                cx, cy = _curve_point(ax, (x1, y1), (x2, y2), rad, t if same else (0.035 if t < 0.5 else 0.965))
                ax.plot(cx, cy, "o", ms=4.5, mfc="white", mec=color, zorder=4)
        if not expert_only and freq >= (0.5 if same else 0.3):
            mx, my = _curve_point(ax, (x1, y1), (x2, y2), rad)
            ax.text(mx, my, f"{freq:.2f}", fontsize=6.5, color=color, ha="center", va="center",
                    bbox=dict(fc="white", ec="none", alpha=0.75, pad=0.2), zorder=5)
    for n, (x, y) in pos.items():
        tier = tiers.get(n, 1)
        ax.plot(x, y, "o", ms=8, color={0: "#fdd49e", 1: "#c6dbef", 2: "#fcbba1"}[min(tier, 2)], mec="black", zorder=6)
        ha, dx = ("right", -0.03) if tier == 0 else ("left", 0.03)
        ax.text(x + dx, y, n, ha=ha, va="center", fontsize=8.5, zorder=7,
                bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))
    for tier, label in ((0, "tier 0: interventions"), (1, "tier 1: mediators"), (2, "tier 2: target")):
        if tier in by_tier:
            ax.text(TIER_X[tier], max(p[1] for p in pos.values()) + 1.0, label, ha="center", fontsize=10, weight="bold")
    handles = [Line2D([0], [0], color=c, ls=s, lw=2, label=k) for k, (c, s) in STYLE.items()]
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="edge source (width = bootstrap freq.)",
              title_fontsize=8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    return save_figure(fig, path)


def small_png(src: Path, dest: Path, *, max_width: int = 1600) -> Path:
    """Copy a PNG, downscaled to ``max_width`` and palette-quantised (keeps committed examples small)."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
        im.quantize(colors=256).save(dest, optimize=True)
    return dest
