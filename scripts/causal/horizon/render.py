"""The horizon panel (one subplot per intervention: Δ vs training tokens per parameter with 95% CIs, the verified
H100 rows as markers at the target regime), the predictor table and the report section, in markdown."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.figures import save_figure

__all__ = ["horizon_lines", "plot_panel", "predictor_lines"]


def _ci(c: Mapping[str, Any]) -> str:
    if not c["n"]:
        return "n/a"
    lo, hi = c["ci"]
    return f"{c['k']}/{c['n']} = {c['k'] / c['n']:.0%} [{lo:.0%}, {hi:.0%}]"


def plot_panel(curves: Mapping[str, Sequence[Mapping]], tpp: Mapping[int, float], target_tpp: float,
               h100: Mapping[str, Sequence[Mapping]], flags: Mapping[str, Mapping], out: str | Path) -> Path:
    """One panel per intervention; returns the PNG path. ``h100``: {intervention: [{"delta", "class"}]}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = sorted(curves)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = [p for p in curves[name] if p["mean_delta_bpb"] is not None]
        x = [tpp[p["horizon"]] for p in pts]
        y = [p["mean_delta_bpb"] for p in pts]
        lo = [p["mean_delta_bpb"] - p["ci_low"] if p["ci_low"] is not None else 0.0 for p in pts]
        hi = [p["ci_high"] - p["mean_delta_bpb"] if p["ci_high"] is not None else 0.0 for p in pts]
        ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", color="#2b83ba", capsize=3, label="proxy Δ, 95% CI")
        for p, xi in zip(pts, x, strict=True):
            ax.annotate(str(p["horizon"]), (xi, p["mean_delta_bpb"]), textcoords="offset points", xytext=(3, 4),
                        fontsize=7, color="#555555")
        seen = set()
        for row in h100.get(name, []):
            other = "[" in row["class"]  # a row off 8xH100 (its class carries the hardware)
            label = "verified row, other hardware" if other else "verified 8xH100 row"
            ax.plot([target_tpp], [row["delta"]], marker="*", markersize=11, linestyle="none",
                    color="#aaaaaa" if other else "#d7191c", label=None if label in seen else label)
            seen.add(label)
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        ax.set_xscale("log")
        flag = flags.get(name, {})
        tag = {True: "HORIZON-UNSTABLE", False: "stable", None: "unmeasured"}[flag.get("unstable")]
        ax.set_title(f"{name}\n{tag}", fontsize=9, color="#d7191c" if flag.get("unstable") else "black")
        ax.set_xlabel("training tokens / parameter (steps annotated)", fontsize=8)
        ax.set_ylabel("Δ bpb (treatment − control)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    return save_figure(fig, out)


def predictor_lines(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The predictor table: per class, each candidate's in-sample agreement and the LOO-chosen predictor's."""
    cands: list[str] = []
    for block in table.values():
        cands += [c for c in block["candidates"] if c not in cands]
    L = ["| class | decisive rows | screened interventions | LOO-chosen (held out) | "
         + " | ".join(f"`{c}`" for c in cands) + " |", "|---" * (4 + len(cands)) + "|"]
    for klass, b in table.items():
        loo = b["loo"]
        chosen = (_ci(loo) + ("" if loo["choice_possible"] else " (one intervention: no choice possible)")
                  if loo["n"] else "n/a")
        cells = [_ci(b["candidates"][c]) if c in b["candidates"] else "—" for c in cands]
        names = ", ".join(b["interventions"]) or "none"
        if b["unscreened"]:
            names += f" (not screened: {', '.join(b['unscreened'])})"
        L.append(f"| {klass} | {b['n_decisive']} of {b['n_rows']} | {names} | {chosen} | " + " | ".join(cells) + " |")
    return L


def horizon_lines(block: Mapping[str, Any] | None) -> list[str]:
    """The decision-gate report's section for a horizon block (``horizon_curves.build``); [] when absent."""
    if not block:
        return []
    L = ["", "## Along the training horizon", "",
         f"Branched cooldowns at {', '.join(map(str, block['horizons']))} steps "
         f"({', '.join(f'{t:.2f}' for t in block['tokens_per_param'])} training tokens per parameter; the 8xH100 "
         f"baseline trains about {block['target_tokens_per_param']:.0f}), {block['n_seeds']} paired seeds, from "
         f"`{block['source']}`. A change is **horizon-unstable** when its sign flips along the curve or its Δ is "
         "still moving between the last two horizons (paired t, p < 0.05); such a change is never promoted on the "
         "proxy's word.", ""]
    L += ["| intervention | " + " | ".join(f"Δ at {h}" for h in block["horizons"]) + " | drift (last step) | flag |",
          "|---" * (len(block["horizons"]) + 3) + "|"]
    for name, curve in sorted(block["curves"].items()):
        st = block["stability"][name]
        cells = [f"{p['mean_delta_bpb']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
                 if p.get("ci_low") is not None else "n/a" for p in curve]
        drift = (f"{st['drift']:+.4f} [{st['drift_ci'][0]:+.4f}, {st['drift_ci'][1]:+.4f}], p={st['drift_p']:.2g}"
                 if st.get("drift") is not None else "n/a")
        flag = {True: "**horizon-unstable**", False: "stable", None: "unmeasured"}[st["unstable"]]
        L.append(f"| `{name}` | " + " | ".join(cells) + f" | {drift} | {flag} |")
    reasons = [f"- `{n}`: {s['reason']}" for n, s in sorted(block["stability"].items()) if s.get("unstable")]
    if reasons:
        L += ["", "Why flagged:", ""] + reasons
    if block.get("plot"):
        L += ["", f"![Δ along the horizon]({block['plot']})"]
    if block.get("predictors"):
        L += ["", "Predicting the H100 sign from the curve (verified calibration rows with |H100 Δ| ≥ 0.002; "
              "k/n with a Clopper-Pearson 95% interval; the LOO column chooses the predictor on the class's other "
              "interventions and scores the held-out one):", ""]
        L += predictor_lines(block["predictors"])
    if block.get("trust"):
        L += ["", "Trust per class (from the verified calibration):", ""]
        L += [f"- {k}: {v}" for k, v in block["trust"].items()]
    return L
