"""Tests for scripts/causal/dag/identifiability.py: what the leaderboard alone can separate."""
from __future__ import annotations

import json

import pytest

from scripts.causal.core.schema import EvidenceEntry, read_json
from scripts.causal.dag.identifiability import (
    check_identifiability,
    lineage_contrasts,
    main,
    stated_base,
    welch_contrast,
)


@pytest.fixture
def records(fixtures_dir):
    return read_json(fixtures_dir / "dag" / "lineage.json")["records"]


def _entry(knob: str, klass: str = "single_change", **kw) -> EvidenceEntry:
    base = dict(record_id="r9", id=1, klass=klass, change=f"+ {knob}", knob=knob, from_value=False, to_value=True,
                intervention=None, delta_bpb=-0.002, delta_nats=None, delta_stated="-0.002", metric="post_quant",
                stack="", stack_record=None, reference="previous row", seeds=1, hardware="8xH100", quote="q",
                file="README.md", line=1)
    return EvidenceEntry(**{**base, **kw})


def test_only_a_stated_base_counts_never_the_nearest_earlier_record(records):
    assert stated_base(records, 1) == 0          # r2 names PR 1
    assert stated_base(records, 4) == 0          # r5 names PR 1
    assert stated_base(records, 3) is None       # r4 names no base: the nearest earlier record is not one
    assert stated_base(records, 5) is None       # r6 names an unknown PR


def test_lineage_contrasts_need_one_feature_and_seeds_for_an_interval(records):
    found = {(c["record_id"], c["feature"]): c for c in lineage_contrasts(records)}
    assert set(found) == {("r2_ema", "ema"), ("r5_swa", "swa")}    # r3 changes four features against r2
    assert all(c["contrast"] is None for c in found.values())       # no per-seed scores: no interval
    seeded = [dict(r) for r in records]
    seeded[0]["seeds"] = [{"seed": s, "val_bpb": v} for s, v in ((1, 1.2000), (2, 1.2010), (3, 1.1990))]
    seeded[1]["seeds"] = [{"seed": s, "val_bpb": v} for s, v in ((1, 1.1950), (2, 1.1960), (3, 1.1940))]
    (c,) = [c for c in lineage_contrasts(seeded) if c["record_id"] == "r2_ema"]
    w = c["contrast"]
    assert w["delta_bpb"] == pytest.approx(-0.005)
    assert w["ci_low"] < -0.005 < w["ci_high"] < 0     # Welch: se = sqrt(2 * 1e-6 / 3), df = 4
    assert w["ci_high"] == pytest.approx(-0.005 + 2.776445 * (2e-6 / 3) ** 0.5, rel=1e-4)
    assert "not for" not in c["adjusts_for"] and "canonical features" in c["does_not_adjust_for"]


def test_welch_contrast_refuses_one_seed():
    assert welch_contrast([1.0], [1.1, 1.2]) is None
    assert welch_contrast([1.0, 1.0], [1.0, 1.0]) is None


def test_a_feature_adopted_in_date_order_is_not_separable_without_single_change_rows():
    recs = [{"record_id": f"r{i}", "date": f"2026-03-{i + 10}", "track": "t", "base_prs": [],
             "features": {"ema": i >= 3, "xsa": i >= 3, "swa": i % 2 == 1}} for i in range(8)]
    out = check_identifiability(recs)
    ema = out["per_feature"]["ema"]
    assert ema["date_association"]["rho"] == pytest.approx(0.8452, abs=1e-4)   # Pearson of date rank and tied presence rank
    assert ema["separable"] is False and ema["co_occurs_with"] == ["xsa"]
    assert any(c.startswith("date") for c in ema["cross_record_confounders"])
    assert out["verdict"]["status"] == "separable_for_none" and out["verdict"]["separable_features"] == []
    assert "No cross-record association is used as an effect" in out["verdict"]["statement"]
    with_rows = check_identifiability(recs, verified=[_entry("ema"), _entry("swa", klass="bundle")])
    assert with_rows["per_feature"]["ema"]["separable_by"] == ["verified single-change rows"]
    assert with_rows["per_feature"]["swa"]["separable"] is False      # a bundle row separates nothing
    assert with_rows["verdict"]["separable_features"] == ["ema"]


def test_never_tried_pairs(records):
    never = {tuple(sorted(p)) for p in check_identifiability(records)["never_tried_pairs"]}
    assert ("ema", "swa") in never and ("ema", "xsa") not in never


def test_cli_writes_json(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "ident.json"
    evidence = tmp_path / "verified"
    evidence.mkdir()
    (evidence / "r1_baseline.json").write_text(json.dumps({
        "schema_version": 1, "record_id": "r1_baseline", "track": "t", "date": "2026-03-01", "files_read": [],
        "no_ablation_statements": True, "note": "scores only", "entries": []}))
    assert main(["--input", str(fixtures_dir / "dag" / "lineage.json"), "--evidence", str(evidence),
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["verdict"]["status"] == "separable_for_none"
    assert "identifiability:separable_for_none" in capsys.readouterr().out
    assert main(["--input", str(tmp_path / "missing.json"), "--out", str(out)]) == 1
