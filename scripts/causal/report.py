"""The decision-gate report: report.json (machine-readable) and report.md (rendered from that same dict).

``build_report`` gathers what was run, the pre-registered test (metric, named effect of interest, family; an
EXPLORATORY banner when the analysis deviated from the pre-registration), the decision table (a verbatim copy of
ablation_results.json's rows, so the two files can never disagree) with the reason for each decision, the
calibration self-check (outside the family: ``aa`` bit-identical repeat or null arm, ``sanity_frozen_matrices``
harmful), the confirmation stage, identifiability, the top of the ranking, the DAG and its diff, promotion and
both Parameter Golf claim lines per confirmed change (``claim_snippets``). ``render_markdown`` formats every
number through ``fmt`` so a test can check each cell of report.md against the JSON.

    python scripts/causal/report.py --input results/example/report.json --output /tmp/report.md   # re-render
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import RunInfo, _jsonable, read_json, write_json
from scripts.causal.stats.calibration import CALIBRATION_EXPECTED
from scripts.causal.stats.effect import bytes_per_token_from_runs

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
    "improve_upper": "{:+.5f}",
    "mean_delta_val_bpb": "{:+.5f}",
    "mean_quant_gap_delta": "{:+.5f}",
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
    """ln 2 * bytes per token of the val split, measured from the ok runs (stats/effect.py); None if unknown."""
    try:
        return math.log(2.0) * bytes_per_token_from_runs([r for r in runs if r.get("status") == "ok"])
    except DataFormatError:
        return None



def calibration_check(results: Sequence[Mapping], calibration: Mapping | None = None) -> list[dict]:
    """The gate's self-check: each calibration arm, its check (repeat or arm), what was expected, pass/fail.

    ``calibration`` is ablation_results' own ``calibration`` block (schema 2); without it each calibration row's
    decision is compared with ``CALIBRATION_EXPECTED``.
    """
    out = []
    for r in results:
        name = str(r.get("intervention"))
        expected = CALIBRATION_EXPECTED.get(name)
        if expected is None:
            continue
        check = (calibration or {}).get(name)
        if check and check.get("mode") == "repeat":
            out.append({"intervention": name, "decision": "bit-identical repeat" if check["passed"] else
                        f"repeat differs: {check['mismatches'][:3]}", "expected": ["bit-identical repeat"],
                        "passed": bool(check["passed"]), "mode": "repeat", "seeds": list(check.get("seeds") or [])})
            continue
        out.append({"intervention": name, "decision": r.get("decision"),
                    "expected": list(expected), "passed": r.get("decision") in expected})
    return out


def claim_snippets(payload: Mapping | None) -> list[dict]:
    """Both Parameter Golf claim lines of every confirmed row (``claims``, computed by the analysis)."""
    out = []
    for r in (payload or {}).get("results", []):
        claims = r.get("claims")
        if r.get("decision") == "confirmed" and claims:
            lines = [claims[k]["text"] for k in ("paired_nats", "welch_record") if claims.get(k)]
            out.append({"intervention": r["intervention"], "claims": dict(claims),
                        "text": f"{r['intervention']}:\n" + "\n".join(lines)})
    return out


def build_report(*, info: RunInfo, ablation: Mapping, nats_per_bpb: float | None = None,
                 confirmation: Mapping | None = None, identifiability: Mapping | None = None,
                 ranking: Mapping | None = None, dag: Mapping | None = None, promotion: Mapping | None = None,
                 snippets: Sequence[Mapping] = (), plots: Mapping[str, str] | None = None,
                 cycles: Sequence[Mapping] = (), wall_s: float | None = None, top_n: int = 5,
                 transfer: Mapping | None = None, budget: Mapping | None = None,
                 horizon: Mapping | None = None) -> dict:
    """The report.json payload. ``decisions`` is a verbatim copy of ``ablation['results']``. ``transfer``: the
    screen preset's transfer calibration (``transfer.sensitivity.load_transfer``; None: not measured).
    ``budget``: each arm's artifact bytes at the screen preset and the target scale
    (``screen.target_budget.arm_budgets``)."""
    decisions = [dict(r) for r in ablation.get("results", [])]
    preset = info["preset"] if isinstance(info, Mapping) else info.preset
    return _jsonable({
        "sensitivity": _sensitivity(decisions, ablation.get("effect"), transfer, preset),
        "run": info,
        "test": {"alpha": ablation.get("alpha"), "margin_bpb": ablation.get("margin_bpb"),
                 "correction": ablation.get("correction"), "metric": ablation.get("metric"),
                 "effect": ablation.get("effect"), "family": ablation.get("family"),
                 "family_size": ablation.get("family_size"), "exploratory": ablation.get("exploratory"),
                 "preregistration": ablation.get("preregistration"), "family_tests": ablation.get("family_tests"),
                 "sequential_design": ablation.get("sequential_design"), "note": ablation.get("note"),
                 "power_alpha": ablation.get("power_alpha")},
        "budget": dict(budget) if budget else None,
        "nats_per_bpb": nats_per_bpb,
        "decisions": decisions,
        "delta_nats": {r["intervention"]: delta_nats(r.get("mean_delta_bpb"), nats_per_bpb) for r in decisions},
        "calibration": calibration_check(decisions, ablation.get("calibration")),
        "confirmation": dict(confirmation) if confirmation else None,
        "identifiability": dict(identifiability) if identifiability else None,
        "ranking_top": _ranking_top(ranking, top_n),
        "dag": dict(dag) if dag else None,
        "promotion": dict(promotion) if promotion else None,
        "snippets": [dict(s) for s in snippets],
        "plots": dict(plots or {}),
        "cycles": [dict(c) for c in cycles],
        "wall_s": wall_s,
        "horizon": dict(horizon) if horizon else None,
    })


def _sensitivity(decisions: Sequence[Mapping], effect: Mapping | None, transfer: Mapping | None, preset: str) -> dict:
    """The header block (``transfer.sensitivity``): MDE and power in words, each screened class's transfer."""
    from scripts.causal.transfer.calibration_set import registry_classes
    from scripts.causal.transfer.sensitivity import screen_sensitivity

    return screen_sensitivity(decisions, effect, transfer, preset, registry_classes())


def _ranking_top(ranking: Mapping | None, n: int) -> list[dict]:
    if not ranking:
        return []
    rows = ranking.get("candidates") or ranking.get("ranking") or []
    return [dict(r) for r in rows[:n]]


# ----------------------------------------------------------------------------- markdown rendering

_TABLE_COLUMNS = (
    ("intervention", "intervention"), ("n_pairs", "n pairs"), ("n_failed", "failed"),
    ("mean_delta_bpb", "mean Δ bpb"), ("delta_nats", "Δ nats"), ("ci_low", "95% CI low"),
    ("ci_high", "95% CI high"), ("improve_upper", "improvement UB"), ("p_improve", "raw p (improve)"),
    ("p_harm", "raw p (harm)"), ("p_adjusted", "adjusted p"), ("power", "power"), ("mde", "MDE bpb"),
    ("seeds_needed", "n for power 0.8"), ("mean_delta_val_bpb", "pre-quant Δ"),
    ("mean_quant_gap_delta", "quant gap Δ"), ("rho", "ρ"), ("decision", "decision"),
)


def decision_table(decisions: Sequence[Mapping], nats_per_bpb: float | None) -> list[str]:
    """Markdown table lines, one row per intervention, every number through ``fmt``."""
    lines = ["| " + " | ".join(h for _, h in _TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in _TABLE_COLUMNS) + "|"]
    for r in decisions:
        vals = dict(r, delta_nats=delta_nats(r.get("mean_delta_bpb"), nats_per_bpb),
                    decision=r.get("label") or r.get("decision"))
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
    from scripts.causal.horizon.render import horizon_lines
    from scripts.causal.transfer.sensitivity import sensitivity_lines

    run, test = report["run"], report["test"]
    L: list[str] = [f"# Decision-gate report: {run['run_id']}", ""]
    if test.get("exploratory"):
        devs = (test.get("preregistration") or {}).get("deviations") or "no pre-registration was given"
        L += [f"> **EXPLORATORY**: this analysis deviates from the pre-registration ({devs}); its decisions "
              "cannot be promoted.", ""]
    L += sensitivity_lines(report.get("sensitivity"))
    L += ["## What was run", ""]
    L += [f"- **command**: `{run['command']}`", f"- **started (UTC)**: {run['started_utc']}",
          f"- **git commit**: {run.get('git_commit') or 'unknown'}",
          "- **versions**: " + ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()),
          f"- **backend**: {run['backend']}; **hardware**: {run['hardware']}",
          f"- **preset**: {run['preset']}; **stack**: {run.get('stack') or 'none (the bare preset)'}; "
          f"**cycles**: {run['cycles']}",
          f"- **screen seeds**: {', '.join(map(str, run['seeds']))}; **fresh confirmation seeds**: "
          f"{', '.join(map(str, run['confirm_seeds'])) or 'none'}",
          f"- **interventions**: {', '.join(run['interventions'])}",
          f"- **test**: {test_sentence(test)}",
          f"- **α** = {test['alpha']}, **margin** = {test['margin_bpb']} bpb, **correction** = {test['correction']}",
          f"- **error control**: {error_control(test)}"]
    unregistered = (test.get("preregistration") or {}).get("unregistered") or []
    if unregistered:
        L.append(f"- **not pre-registered** (defaults used): {', '.join(unregistered)}")
    if test.get("metric"):
        L.append(f"- **decision metric**: {test['metric']} (pre-quant Δ and the quantization gap shown beside it)")
    if test.get("effect"):
        L.append(f"- **effect of interest** (power, MDE, null): {test['effect']['name']}")
    if test.get("family") is not None:
        L.append(f"- **multiplicity family** (K = {test.get('family_size')} one-sided tests, calibration arms "
                 f"outside): {', '.join(test['family']) or 'empty'}")
    if report.get("wall_s") is not None:
        L.append(f"- **wall time of this invocation**: {report['wall_s']:.1f} s")
    rs = report.get("runs_summary")
    if rs and rs.get("mean_run_s"):
        L.append(f"- **runs**: {rs['n_runs']} ({rs['n_ok']} ok), {rs['train_eval_s']:.0f} s of training + evaluation, "
                 f"{rs['mean_run_s']:.1f} s per run (as recorded when each run finished)")
    if report.get("stop"):
        L.append(f"- **stopped because**: {report['stop']}")
    L += ["", "## Decisions", "",
          "Δ = metric(treatment) − metric(control, same seed), in the decision metric above; negative is better. "
          f"Δ nats is per token (nats = bpb × {report['nats_per_bpb']:.4f})." if report.get("nats_per_bpb") else
          "Δ = metric(treatment) − metric(control, same seed), in the decision metric above; negative is better.",
          ""]
    L += decision_table(report["decisions"], report.get("nats_per_bpb"))
    if test.get("sequential_design"):
        L += ["", f"Note: {test.get('note') or 'group-sequential decisions; the p-values shown are fixed-n ones'}"]
    reasons = [r for r in report["decisions"] if r.get("message")]
    if reasons:
        L += ["", "Why each decision:", ""]
        L += [f"- `{r['intervention']}` **{r.get('label') or r['decision']}**: {r['message']}" for r in reasons]
    if report["plots"].get("forest"):
        L += ["", f"![forest plot]({report['plots']['forest']})"]
    if report.get("calibration"):
        L += ["", "### Calibration self-check", ""]
        for c in report["calibration"]:
            mark = "passed" if c["passed"] else "FAILED"
            if c.get("mode") == "repeat" or c["expected"] == ["bit-identical repeat"]:
                L.append(f"- `{c['intervention']}`: determinism check, **{c['decision']}** (one repeat of the control, "
                         f"n = 1): {mark}. It shows that same-seed runs are bit-identical here; it is not a test of "
                         "the noise and says nothing about the gate's false-positive rate.")
                continue
            L.append(f"- `{c['intervention']}`: decision **{c['decision']}**, expected {' or '.join(c['expected'])}: "
                     f"{mark}")
        if not all(c["passed"] for c in report["calibration"]):
            L.append("- A failed self-check means the screen's noise or power is not what the gate assumes: "
                     "do not trust its other calls; add seeds or check the runs.")
    L += horizon_lines(report.get("horizon"))
    conf = report.get("confirmation")
    if conf and conf.get("results"):
        L += ["", "## Confirmation on fresh seeds", "",
              f"Seeds {', '.join(map(str, conf.get('seeds', [])))}, correction {conf.get('correction')}, "
              f"α = {conf.get('alpha')}.", ""]
        L += decision_table(conf["results"], report.get("nats_per_bpb"))
    elif conf:
        L += ["", "## Confirmation on fresh seeds", "", conf.get("note", "nothing to confirm")]
    L += _render_causal(report)
    L += budget_lines(report.get("budget"))
    L += _render_promotion(report.get("promotion"))
    if report.get("snippets"):
        L += ["", "## Parameter Golf claim lines (confirmed changes)", "",
              "(a) the README rule, a paired one-sided t of the per-seed differences in nats against 0.005 at "
              "p < 0.01; (b) the maintainers' practice, Welch's one-sided t against the previous record's per-seed "
              "scores at p < 0.25 with a mean over >= 3 seeds (not run without those scores). Both are computed on "
              f"this screen's proxy runs (preset {run['preset']}, {run['backend']}), not on 8xH100 record runs: "
              "they say what the record runs would have to show again, not that a record was set.", ""]
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


def test_sentence(test: Mapping) -> str:
    """The decision rule in words, from the analysis itself (so it cannot drift from what decided)."""
    seq = test.get("sequential_design")
    rule = ("paired differences d = metric(treatment) - metric(control, same seed) on the decision metric; "
            "one-sided paired t-tests for improvement (H1: mean d < -margin), harm (H1: mean d > 0)")
    if seq:
        return (rule.replace("), harm", ") and harm") + f"; group-sequential looks from n0 = {seq.get('n0')} to n_max = {seq.get('n_max')} seeds "
                "(O'Brien-Fleming spending); confirmed needs the improvement bound crossed and no failed treatment "
                "run; no null call")
    return (rule + " and non-superiority (H1: mean d > -effect, behind null); confirmed needs adjusted p < alpha, a "
            "mean improvement >= margin and no failed treatment run (a confirmed gain below the effect of interest "
            "is labelled 'real, but below the record bar'); null needs the data to rule out the effect of interest")


def error_control(test: Mapping) -> str:
    """One statement of the error rate over everything the report claims."""
    alpha, k, corr = test.get("alpha"), test.get("family_size"), test.get("correction")
    fam = test.get("family") or []
    tests = test.get("family_tests")
    if corr == "group_sequential_bonferroni":
        return (f"each of the {k} one-sided improvement and harm tests runs at α/{k} = {alpha / max(k or 1, 1):.3g} "
                f"at every look (Bonferroni), so the probability of any wrong confirmed or harmful call is at most "
                f"α = {alpha}; the p-values and CIs in the table are the fixed-n ones at the final look, descriptive "
                "only")
    if corr == "bh":
        return (f"Benjamini-Hochberg over {k} one-sided tests controls the false discovery rate at {alpha}, not the "
                "family-wise error: its calls are a screen, to be confirmed with Holm on fresh seeds")
    if corr == "none":
        return f"no multiplicity correction: each of the {k} calls is tested at {alpha} on its own"
    if tests and len(tests) == 3:
        return (f"one Holm family of K = {k} one-sided tests ({len(fam)} arms x improvement, harm and "
                f"non-superiority), so the probability that any confirmed, harmful or null call here is wrong is at "
                f"most α = {alpha}; calibration arms are outside it")
    return (f"two Holm families: improvement and harm (K = {k}) and the non-superiority tests behind null "
            f"({len(fam)}), each at α = {alpha}, so the bound over every call here is 2α = {2 * alpha:g}")


def budget_lines(budget: Mapping | None) -> list[str]:
    """The artifact of each arm at the screen preset (measured) and at the target scale (estimated)."""
    if not budget:
        return []
    def b(x: Any) -> str:
        return "n/a" if x is None else f"{int(x):,}"
    L = ["", "## Artifact size at the target scale", "",
         f"Bytes are compressed model + trainer code. At preset `{budget.get('preset')}`: the mean of the runs' "
         f"artifacts. At the target ({budget['target']}): estimated with synthetic weights through the trainer's "
         f"export (screen/budget.py), the change applied as promotion would write it; cap {b(budget['limit'])}.", "",
         f"| arm | at {budget.get('preset')} | at the target | vs the cap |", "|---|---|---|---|"]
    ctl = budget["control"]
    L.append(f"| control | {b(ctl.get('preset_bytes'))} | {b(ctl['target'].get('bytes'))} | "
             f"{ctl['target'].get('status')} |")
    for name, a in budget.get("arms", {}).items():
        L.append(f"| {name} | {b(a.get('preset_bytes'))} | {b(a['target'].get('bytes'))} | {a['target'].get('status')} |")
    return L


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
    if promo.get("note"):
        L += ["", promo["note"]]
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


def with_sensitivity(report: Mapping, transfer_dir: str | Path | None) -> dict:
    """``report`` with its header block recomputed from its decisions and the transfer calibration of its preset
    in ``transfer_dir`` (``transfer.sensitivity``), e.g. after the calibration was (re)measured."""
    from scripts.causal.transfer.sensitivity import load_transfer

    preset = report["run"]["preset"]
    sens = _sensitivity(report["decisions"], (report.get("test") or {}).get("effect"),
                        load_transfer(transfer_dir, preset), preset)
    return {**report, "sensitivity": _jsonable(sens)}


def with_horizon(report: Mapping, horizon_dir: str | Path, out_dir: str | Path) -> dict:
    """``report`` with the horizon block of ``horizon_dir``/horizon.json, its plot path relative to ``out_dir``."""
    block = read_json(Path(horizon_dir) / "horizon.json")
    if block.get("plot"):
        block["plot"] = os.path.relpath(Path(horizon_dir) / block["plot"], Path(out_dir))
    return {**report, "horizon": _jsonable(block)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Re-render report.md from a report.json written by run_pipeline.py.")
    p.add_argument("--input", type=Path, required=True, help="report.json, e.g. results/example/report.json")
    p.add_argument("--output", type=Path, required=True, help="markdown file to write, e.g. /tmp/report.md")
    p.add_argument("--transfer-dir", default=None, metavar="DIR",
                   help="recompute the header's sensitivity block with the transfer calibration in DIR, e.g. "
                        "results/transfer_calibration (default: keep the block report.json has)")
    p.add_argument("--horizon-dir", type=Path, default=None, metavar="DIR",
                   help="add the horizon section (Δ along the horizon, horizon-unstable flags, predictor table) "
                        "from DIR/horizon.json (scripts/causal/horizon_curves.py), e.g. results/horizon")
    p.add_argument("--json-output", type=Path, default=None,
                   help="with --transfer-dir or --reanalyze: also write the updated report.json here")
    p.add_argument("--reanalyze", action="store_true",
                   help="re-derive the decisions from the runs.json beside --input with the current gate (no "
                        "retraining), plus the promotion dry run and the artifact budgets (pipeline/refresh.py)")
    add_debug_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        report = read_json(args.input)
        if args.reanalyze:
            from scripts.causal.pipeline.refresh import refresh

            report = refresh(report, args.input.parent, transfer_dir=args.transfer_dir)
        elif args.transfer_dir is not None:
            report = with_sensitivity(report, args.transfer_dir)
        if args.horizon_dir is not None:
            report = with_horizon(report, args.horizon_dir, args.output.parent)
        if args.json_output is not None and (args.reanalyze or args.transfer_dir is not None
                                             or args.horizon_dir is not None):
            write_json(args.json_output, dict(report))
        args.output.write_text(render_markdown(report), encoding="utf-8")
        print(args.output)
        return 0

    return run_cli(body, debug=args.debug, prog="report.py")

if __name__ == "__main__":
    raise SystemExit(main())
