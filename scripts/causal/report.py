"""The decision-gate report: report.json (machine-readable) and report.md (rendered from that same dict).

``build_report`` gathers what was run, the decision table (a verbatim copy of ablation_results.json's
rows, so the two files can never disagree), the calibration self-check (``aa`` must come out null,
``sanity_frozen_matrices`` harmful), the confirmation stage, identifiability, the top of the ranking, the
DAG and its diff, promotion and a Parameter-Golf-style snippet per confirmed change. ``render_markdown``
formats every number through ``fmt`` so a test can check each cell of report.md against the JSON.

    python scripts/causal/report.py --input results/example/report.json --output /tmp/report.md   # re-render
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from scipy import stats

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import RunInfo, _jsonable, read_json, write_json

PG_MIN_GAIN_NATS = 0.005  # Parameter Golf: a new record must beat the baseline by >= 0.005 nats (p < 0.01)
CALIBRATION_EXPECTED = {"aa": ("null", "suggestive"), "sanity_frozen_matrices": ("harmful",)}

# One formatter per numeric field of an ablation_results row: report.md uses exactly these.
FIELD_FORMATS: dict[str, str] = {
    "mean_delta_bpb": "{:+.5f}",
    "delta_nats": "{:+.5f}",
    "sd_delta": "{:.5f}",
    "ci_low": "{:+.5f}",
    "ci_high": "{:+.5f}",
    "p_improve": "{:.3g}",
    "p_harm": "{:.3g}",
    "p_adjusted": "{:.3g}",
    "mde": "{:.5f}",
    "power": "{:.2f}",
    "rho": "{:.2f}",
}


def fmt(field: str, value: Any) -> str:
    """Format one value of ``field`` as report.md shows it ("n/a" for None/NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    spec = FIELD_FORMATS.get(field)
    return spec.format(float(value)) if spec else str(value)


def delta_nats(mean_delta_bpb: float | None, nats_per_bpb: float | None) -> float | None:
    """Δ in nats per token: bpb = nats/ln2 * tokens/bytes, so nats = bpb * (val_loss / val_bpb)."""
    if mean_delta_bpb is None or not nats_per_bpb:
        return None
    return float(mean_delta_bpb) * float(nats_per_bpb)


def nats_per_bpb_from_runs(runs: Sequence[Mapping]) -> float | None:
    """Median of val_loss/val_bpb over ok runs that carry both (the corpus' ln2 * bytes/token)."""
    ratios = sorted(float(r["val_loss"]) / float(r["val_bpb"]) for r in runs
                    if r.get("status") == "ok" and r.get("val_loss") and r.get("val_bpb"))
    return ratios[len(ratios) // 2] if ratios else None



def calibration_check(results: Sequence[Mapping]) -> list[dict]:
    """The gate's self-check: each calibration arm present, its decision, what was expected, pass/fail."""
    out = []
    for r in results:
        expected = CALIBRATION_EXPECTED.get(str(r.get("intervention")))
        if expected is None:
            continue
        out.append({"intervention": r["intervention"], "decision": r.get("decision"),
                    "expected": list(expected), "passed": r.get("decision") in expected})
    return out


def parameter_golf_snippet(name: str, treatment_bpb: Sequence[float], *, baseline_bpb: float,
                           nats_per_bpb: float, baseline_label: str = "control mean",
                           min_gain_nats: float = PG_MIN_GAIN_NATS) -> dict:
    """Record-style claim: mean over seeds, one-sample t against (baseline − 0.005 nats), df, one-sided p.

    The threshold in bpb is ``baseline_bpb - min_gain_nats / nats_per_bpb`` (nats = bpb * nats_per_bpb);
    H1: the mean treatment val_bpb is below that threshold. Needs at least 2 seeds.
    """
    x = [float(v) for v in treatment_bpb if v is not None and math.isfinite(float(v))]
    n = len(x)
    threshold = baseline_bpb - min_gain_nats / nats_per_bpb
    mean = sum(x) / n if n else float("nan")
    if n >= 2:
        res = stats.ttest_1samp(x, threshold, alternative="less")
        t, p, df = float(res.statistic), float(res.pvalue), n - 1
    else:
        t, p, df = float("nan"), float("nan"), 0
    text = (f"{name}: val_bpb {mean:.4f} (mean of {n} seeds: {', '.join(f'{v:.4f}' for v in x)}); "
            f"baseline {baseline_bpb:.4f} ({baseline_label}); H1: mean < baseline − {min_gain_nats} nats "
            f"= {threshold:.4f} bpb; t = {t:.2f}, df = {df}, one-sided p = {p:.3g}")
    return {"intervention": name, "n_seeds": n, "mean_bpb": mean, "seeds_bpb": x, "baseline_bpb": baseline_bpb,
            "baseline_label": baseline_label, "min_gain_nats": min_gain_nats, "threshold_bpb": threshold,
            "t": t, "df": df, "p_one_sided": p, "text": text}


def build_report(*, info: RunInfo, ablation: Mapping, nats_per_bpb: float | None = None,
                 confirmation: Mapping | None = None, identifiability: Mapping | None = None,
                 ranking: Mapping | None = None, dag: Mapping | None = None, promotion: Mapping | None = None,
                 snippets: Sequence[Mapping] = (), plots: Mapping[str, str] | None = None,
                 cycles: Sequence[Mapping] = (), wall_s: float | None = None, top_n: int = 5) -> dict:
    """The report.json payload. ``decisions`` is a verbatim copy of ``ablation['results']``."""
    decisions = [dict(r) for r in ablation.get("results", [])]
    return _jsonable({
        "run": info,
        "test": {"alpha": ablation.get("alpha"), "margin_bpb": ablation.get("margin_bpb"),
                 "correction": ablation.get("correction")},
        "nats_per_bpb": nats_per_bpb,
        "decisions": decisions,
        "delta_nats": {r["intervention"]: delta_nats(r.get("mean_delta_bpb"), nats_per_bpb) for r in decisions},
        "calibration": calibration_check(decisions),
        "confirmation": dict(confirmation) if confirmation else None,
        "identifiability": dict(identifiability) if identifiability else None,
        "ranking_top": _ranking_top(ranking, top_n),
        "dag": dict(dag) if dag else None,
        "promotion": dict(promotion) if promotion else None,
        "snippets": [dict(s) for s in snippets],
        "plots": dict(plots or {}),
        "cycles": [dict(c) for c in cycles],
        "wall_s": wall_s,
    })


def _ranking_top(ranking: Mapping | None, n: int) -> list[dict]:
    if not ranking:
        return []
    rows = ranking.get("candidates") or ranking.get("ranking") or []
    return [dict(r) for r in rows[:n]]


# ----------------------------------------------------------------------------- markdown rendering

_TABLE_COLUMNS = (
    ("intervention", "intervention"), ("n_pairs", "n pairs"), ("n_failed", "failed"),
    ("mean_delta_bpb", "mean Δ bpb"), ("delta_nats", "Δ nats"), ("ci_low", "95% CI low"),
    ("ci_high", "95% CI high"), ("p_improve", "raw p (improve)"), ("p_harm", "raw p (harm)"),
    ("p_adjusted", "adjusted p"), ("power", "power"), ("mde", "MDE bpb"), ("rho", "ρ"), ("decision", "decision"),
)


def decision_table(decisions: Sequence[Mapping], nats_per_bpb: float | None) -> list[str]:
    """Markdown table lines, one row per intervention, every number through ``fmt``."""
    lines = ["| " + " | ".join(h for _, h in _TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in _TABLE_COLUMNS) + "|"]
    for r in decisions:
        vals = dict(r, delta_nats=delta_nats(r.get("mean_delta_bpb"), nats_per_bpb))
        cells = [fmt(k, vals.get(k)) for k, _ in _TABLE_COLUMNS]
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_decision_table(markdown: str) -> list[dict[str, str]]:
    """Inverse of ``decision_table`` for the first table after '## Decisions' (used by tests and tools)."""
    lines = markdown.split("## Decisions", 1)[-1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| intervention"))
    out = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in ln.strip().strip("|").split("|")]
        out.append({k: c for (k, _), c in zip(_TABLE_COLUMNS, cells, strict=False)})
    return out


def _kv_lines(d: Mapping, keys: Sequence[str]) -> list[str]:
    return [f"- **{k}**: {d[k]}" for k in keys if k in d and d[k] not in (None, "", [], {})]


def render_markdown(report: Mapping) -> str:
    """report.md from the report.json payload (same numbers, formatted by ``fmt``)."""
    run, test = report["run"], report["test"]
    L: list[str] = [f"# Decision-gate report: {run['run_id']}", ""]
    L += ["## What was run", ""]
    L += [f"- **command**: `{run['command']}`", f"- **started (UTC)**: {run['started_utc']}",
          f"- **git commit**: {run.get('git_commit') or 'unknown'}",
          "- **versions**: " + ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()),
          f"- **backend**: {run['backend']}; **hardware**: {run['hardware']}",
          f"- **preset**: {run['preset']}; **cycles**: {run['cycles']}",
          f"- **screen seeds**: {', '.join(map(str, run['seeds']))}; **fresh confirmation seeds**: "
          f"{', '.join(map(str, run['confirm_seeds'])) or 'none'}",
          f"- **interventions**: {', '.join(run['interventions'])}",
          f"- **pre-registered test**: {run['test']}",
          f"- **α** = {test['alpha']}, **margin** = {test['margin_bpb']} bpb, **correction** = {test['correction']}"]
    if report.get("wall_s") is not None:
        L.append(f"- **wall time of this invocation**: {report['wall_s']:.1f} s")
    rs = report.get("runs_summary")
    if rs and rs.get("mean_run_s"):
        L.append(f"- **runs**: {rs['n_runs']} ({rs['n_ok']} ok), {rs['train_eval_s']:.0f} s of training + evaluation, "
                 f"{rs['mean_run_s']:.1f} s per run (as recorded when each run finished)")
    if report.get("stop"):
        L.append(f"- **stopped because**: {report['stop']}")
    L += ["", "## Decisions", "",
          "Δ = val_bpb(treatment) − val_bpb(control, same seed); negative is better. Δ nats is per token "
          f"(nats = bpb × {report['nats_per_bpb']:.4f})." if report.get("nats_per_bpb") else
          "Δ = val_bpb(treatment) − val_bpb(control, same seed); negative is better.", ""]
    L += decision_table(report["decisions"], report.get("nats_per_bpb"))
    if report["plots"].get("forest"):
        L += ["", f"![forest plot]({report['plots']['forest']})"]
    if report.get("calibration"):
        L += ["", "### Calibration self-check", ""]
        for c in report["calibration"]:
            mark = "passed" if c["passed"] else "FAILED"
            L.append(f"- `{c['intervention']}`: decision **{c['decision']}**, expected {' or '.join(c['expected'])}: "
                     f"{mark}")
        if not all(c["passed"] for c in report["calibration"]):
            L.append("- A failed self-check means the screen's noise or power is not what the gate assumes: "
                     "do not trust its other calls; add seeds or check the runs.")
    conf = report.get("confirmation")
    if conf and conf.get("results"):
        L += ["", "## Confirmation on fresh seeds", "",
              f"Seeds {', '.join(map(str, conf.get('seeds', [])))}, correction {conf.get('correction')}, "
              f"α = {conf.get('alpha')}.", ""]
        L += decision_table(conf["results"], report.get("nats_per_bpb"))
    elif conf:
        L += ["", "## Confirmation on fresh seeds", "", conf.get("note", "nothing to confirm")]
    L += _render_causal(report)
    L += _render_promotion(report.get("promotion"))
    if report.get("snippets"):
        L += ["", "## Parameter Golf snippets (confirmed changes)", ""]
        for s in report["snippets"]:
            L += ["```", s["text"], "```"]
    if report.get("cycles"):
        L += ["", "## Cycles", ""]
        for c in report["cycles"]:
            L.append(f"- cycle {c.get('cycle')}: " + ", ".join(f"{k}={v}" for k, v in c.items() if k != "cycle"))
    loss_plots = {k: v for k, v in report["plots"].items() if k.startswith("loss_")}
    if loss_plots:
        L += ["", "## Loss curves", ""]
        for k, v in loss_plots.items():
            L.append(f"![{k}]({v})")
    return "\n".join(L) + "\n"


def _render_causal(report: Mapping) -> list[str]:
    L: list[str] = []
    ident = report.get("identifiability")
    if ident:
        L += ["", "## Identifiability", ""]
        verdict = ident.get("verdict")
        if isinstance(verdict, Mapping):
            L += _kv_lines(verdict, [k for k in verdict if k != "rule"])
            if verdict.get("rule"):
                L.append(f"- rule: {verdict['rule']}")
        elif verdict is not None:
            L.append(f"- **verdict**: {verdict}")
        L += _kv_lines(ident, [k for k in ident if k not in ("verdict", "schema_version", "rule") and
                               isinstance(ident[k], (str, int, float, bool))])
    if report.get("ranking_top"):
        L += ["", "## Top of the ranking", "", "| rank | candidate | score | reason |", "|---|---|---|---|"]
        for i, r in enumerate(report["ranking_top"], 1):
            name = r.get("name") or r.get("intervention") or r.get("candidate")
            score = r.get("score", r.get("ucb"))
            score_s = f"{score:.4g}" if isinstance(score, (int, float)) else str(score)
            L.append(f"| {i} | {name} | {score_s} | {str(r.get('reason', '')).replace('|', '/')} |")
    dag = report.get("dag")
    if dag:
        L += ["", "## Causal DAG", ""]
        if dag.get("png"):
            L.append(f"![DAG]({dag['png']})")
        diff = dag.get("diff")
        if diff:
            L += ["", "### DAG diff (latest cycle vs cycle 0)", ""]
            for key in ("added", "removed", "changed", "edges_added", "edges_removed", "edges_changed"):
                if key in diff:
                    items = diff[key] or []
                    L.append(f"- **{key}** ({len(items)}): " + ("; ".join(_edge_text(e) for e in items[:20]) or "none"))
    return L


def _edge_text(e: Any) -> str:
    if not isinstance(e, Mapping):
        return str(e)
    if "changed" in e and "before" in e:
        return "; ".join(f"{e['a']} / {e['b']} {f}: {e['before'].get(f)} -> {e['after'].get(f)}" for f in e["changed"])
    if "type" in e:
        src = f" ({e['source']})" if e.get("source") else ""
        return f"{e['type']}{src}"
    if "text" in e:
        return str(e["text"])
    return " ".join(str(e.get(k)) for k in ("a", "mark", "b") if e.get(k) is not None) or str(dict(e))


def _render_promotion(promo: Mapping | None) -> list[str]:
    L = ["", "## Promotion", ""]
    if not promo or not promo.get("promoted"):
        return L + ["Nothing was promoted (no confirmed change)." if not promo else promo.get("note", "Nothing promoted.")]
    L.append(("Applied to train_gpt.py: " if promo.get("applied") else "Dry run (use --apply-promotion to write): ")
             + ", ".join(promo["promoted"]))
    if promo.get("diff"):
        L += ["", "```diff", promo["diff"].rstrip(), "```"]
    return L


def write_report(report: Mapping, out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.json and report.md into ``out_dir``; returns (md_path, json_path)."""
    out_dir = Path(out_dir)
    json_path = write_json(out_dir / "report.json", dict(report))
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Re-render report.md from a report.json written by run_pipeline.py.")
    p.add_argument("--input", type=Path, required=True, help="report.json, e.g. results/example/report.json")
    p.add_argument("--output", type=Path, required=True, help="markdown file to write, e.g. /tmp/report.md")
    add_debug_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        args.output.write_text(render_markdown(read_json(args.input)), encoding="utf-8")
        print(args.output)
        return 0

    return run_cli(body, debug=args.debug, prog="report.py")


if __name__ == "__main__":
    raise SystemExit(main())
