"""report.json / report.md from hand-written fixtures: same numbers in both, every section present."""
from __future__ import annotations

import numpy as np
import pytest

from scripts.causal import report as rep
from scripts.causal.core.schema import RunInfo, read_json
from scripts.causal.stats.claims import claim_lines


def _info(**kw) -> RunInfo:
    base = dict(run_id="fixture", started_utc="2026-01-01T00:00:00Z", command="run_pipeline.py --fast",
                git_commit="abc123", versions={"python": "3.11", "torch": "2.13.0"}, backend="torch",
                hardware="Linux x86_64, 2 CPU cores", preset="tiny", seeds=(11, 12, 13), confirm_seeds=(21, 22, 23),
                interventions=("aa", "sanity_frozen_matrices", "mlp_mult_3", "gelu", "silu"),
                test="one-sided paired t on val_bpb, Holm across the screen", alpha=0.01, margin_bpb=0.0,
                correction="holm", cycles=1)
    return RunInfo(**{**base, **kw})


@pytest.fixture
def ablation(fixtures_dir):
    return read_json(fixtures_dir / "pipeline" / "ablation_results.json")


def test_fmt_and_nats():
    assert rep.fmt("mean_delta_bpb", -0.0061) == "-0.00610"
    assert rep.fmt("p_adjusted", 4.8e-05) == "4.8e-05"
    assert rep.fmt("rho", None) == "n/a" and rep.fmt("mde", float("nan")) == "n/a"
    assert rep.delta_nats(-0.01, 0.5) == pytest.approx(-0.005)
    # nats per bpb = val_loss / val_bpb = ln 2 * bytes per token; failed runs are ignored
    runs = [{"status": "ok", "val_loss": 2.0, "val_bpb": 1.0}, {"status": "ok", "val_loss": 2.2, "val_bpb": 1.1},
            {"status": "failed", "val_loss": 9.0, "val_bpb": 1.0}]
    assert rep.nats_per_bpb_from_runs(runs) == pytest.approx(2.0)
    runs[1]["val_loss"] = 3.3  # a different val split: no single conversion
    assert rep.nats_per_bpb_from_runs(runs) is None


def test_markdown_table_equals_ablation_results(ablation, tmp_path):
    report = rep.build_report(info=_info(), ablation=ablation, nats_per_bpb=1.7, plots={"forest": "plots/forest.png"})
    md_path, json_path = rep.write_report(report, tmp_path)
    stored = read_json(json_path)
    assert stored["decisions"] == ablation["results"]  # verbatim copy
    rows = rep.parse_decision_table(md_path.read_text())
    assert [r["intervention"] for r in rows] == [r["intervention"] for r in ablation["results"]]
    for cell, src in zip(rows, ablation["results"], strict=True):
        for field in ("n_pairs", "n_failed", "mean_delta_bpb", "ci_low", "ci_high", "p_improve", "p_harm",
                      "p_adjusted", "power", "mde", "rho", "decision"):
            assert cell[field] == rep.fmt(field, src[field]), (src["intervention"], field)
        assert cell["delta_nats"] == rep.fmt("delta_nats", src["mean_delta_bpb"] * 1.7)
        if src["mean_delta_bpb"] is not None:
            assert float(cell["mean_delta_bpb"]) == pytest.approx(src["mean_delta_bpb"], abs=5e-6)


def test_calibration_self_check(ablation):
    checks = {c["intervention"]: c for c in rep.calibration_check(ablation["results"])}
    assert checks["aa"]["passed"] and checks["sanity_frozen_matrices"]["passed"]
    bad = [dict(r, decision="confirmed") if r["intervention"] == "aa" else r for r in ablation["results"]]
    assert not {c["intervention"]: c for c in rep.calibration_check(bad)}["aa"]["passed"]


CONFIRMED = {"results": [{"intervention": "gelu", "decision": "confirmed", "claims": claim_lines(
    {"delta": np.array([-0.012, -0.010, -0.011]), "control": np.array([1.21, 1.22, 1.20]),
     "treatment": np.array([1.198, 1.21, 1.189])}, bytes_per_token=2.44)},
    {"intervention": "silu", "decision": "inconclusive", "claims": None}]}


def test_claim_snippets_carry_both_named_lines():
    snips = rep.claim_snippets(CONFIRMED)
    assert [s["intervention"] for s in snips] == ["gelu"]
    text = snips[0]["text"]
    assert "(a) paired t vs 0.005 nats (README rule)" in text
    assert "(b) Welch t vs the previous record (maintainers' practice): not run" in text  # issue 21 item 9
    assert "[3 seed" not in text and "df=2" in text


def test_all_sections_rendered(ablation):
    report = rep.build_report(
        info=_info(), ablation=ablation, nats_per_bpb=1.7,
        confirmation={"seeds": [21, 22, 23], "alpha": 0.01, "correction": "holm", "results": ablation["results"][3:4]},
        identifiability={"verdict": "under-identified", "n_single_change": 4},
        ranking={"candidates": [{"name": "gelu", "score": 0.01, "reason": "ablation rows say -0.004"}]},
        dag={"png": "plots/dag.png", "diff": {"added": [{"text": "xsa --> val_bpb"}], "removed": []}},
        promotion={"applied": False, "promoted": ["gelu"], "diff": "-a\n+b"},
        snippets=rep.claim_snippets(CONFIRMED),
        plots={"forest": "plots/forest.png", "loss_gelu": "plots/loss_gelu.png"}, wall_s=12.5)
    md = rep.render_markdown(report)
    for text in ("## What was run", "git commit**: abc123", "## Decisions", "Calibration self-check",
                 "## Confirmation on fresh seeds", "## Identifiability", "under-identified", "## Top of the ranking",
                 "ablation rows say", "![DAG](plots/dag.png)", "xsa --> val_bpb", "## Promotion", "```diff",
                 "Parameter Golf claim lines", "README rule", "![loss_gelu](plots/loss_gelu.png)", "invocation**: 12.5 s"):
        assert text in md, text


def test_cli_rerenders_the_committed_example_identically(tmp_path):
    from scripts.causal.core.paths import REPO_ROOT

    example = REPO_ROOT / "results" / "example"
    if not (example / "report.json").is_file():
        pytest.skip("no committed example")
    assert rep.main(["--input", str(example / "report.json"), "--output", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text() == (example / "report.md").read_text()
    stored = read_json(example / "ablation_results.json")["results"]
    assert read_json(example / "report.json")["decisions"] == stored


def test_cli_recomputes_the_sensitivity_block_from_a_transfer_calibration(ablation, tmp_path):
    from scripts.causal.core.schema import write_json

    report = rep.build_report(info=_info(preset="fast"), ablation=ablation, nats_per_bpb=1.7)
    assert report["sensitivity"]["transfer_source"] is None  # no calibration given: said to be unmeasured
    rep.write_report(report, tmp_path)
    write_json(tmp_path / "cal" / "transfer_fast.json", {"preset": "fast", "classes": {
        "architecture": {"agreement": 0.9, "k_agree": 9, "n_decisive": 10, "verdict": "good", "agreement_ci": [0.55, 1.0]}}})
    assert rep.main(["--input", str(tmp_path / "report.json"), "--output", str(tmp_path / "r.md"),
                     "--transfer-dir", str(tmp_path / "cal"), "--json-output", str(tmp_path / "r.json")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert "agreed in sign with H100 in 9 of 10 verified calibration rows at `fast`" in md
    assert md.index("What this screen can and cannot say") < md.index("## What was run")
    assert read_json(tmp_path / "r.json")["sensitivity"]["transfer_source"].endswith("transfer_fast.json")
