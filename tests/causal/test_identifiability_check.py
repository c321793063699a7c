"""Tests for scripts/causal/dag/identifiability.py on a hand-written lineage fixture."""
from __future__ import annotations

import json

import pytest

from scripts.causal.core.schema import read_json
from scripts.causal.dag.identifiability import check_identifiability, find_base, main


@pytest.fixture
def records(fixtures_dir):
    return read_json(fixtures_dir / "dag" / "lineage.json")["records"]


def test_bases_from_lineage_then_nearest_earlier(records):
    assert find_base(records, 1) == (0, "base_prs")
    assert find_base(records, 3) == (2, "nearest_earlier")   # no base_prs: r3 is the latest earlier record
    assert find_base(records, 0) == (None, "none")
    assert find_base(records, 5) == (None, "none")           # unknown PR and no date


def test_counts_pairs_and_verdict(records):
    out = check_identifiability(records)
    assert out["n_records"] == 6 and out["n_with_base"] == 4
    assert out["n_single_change"] == 3        # r2 (ema), r4 (qat), r5 (swa)
    assert out["n_ge3_changes"] == 1          # r3 changes num_layers, xsa, bigram_hash, smeargate
    pairs = {tuple(sorted((p["a"], p["b"]))) for p in out["always_co_occur"]}
    assert pairs == {("bigram_hash", "smeargate"), ("smeargate", "xsa"), ("bigram_hash", "xsa")}
    never = {tuple(sorted(p)) for p in out["never_tried_pairs"]}
    assert ("ema", "swa") in never and ("ema", "xsa") not in never
    v = out["verdict"]
    assert v["status"] == "partially_identified"
    assert v["identified_features"] == ["ema", "qat", "swa"]
    assert v["under_identified_features"] == ["bigram_hash", "smeargate", "xsa"]
    assert "ablations" in v["lean_on"]
    assert out["per_feature"]["xsa"]["confounded_with"] == ["bigram_hash", "smeargate"]


def test_under_identified_when_everything_changes_together():
    recs = [{"record_id": f"r{i}", "date": f"2026-03-0{i + 1}", "track": "t", "base_prs": [],
             "features": {"ema": i % 2 == 1, "xsa": i % 2 == 1, "swa": i % 2 == 1}} for i in range(6)]
    out = check_identifiability(recs)
    assert out["n_single_change"] == 0 and out["n_ge3_changes"] == 5
    assert out["verdict"]["status"] == "under_identified"
    assert out["verdict"]["lean_on"] == ["ablations", "experiments"]


def test_cli_writes_json(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "ident.json"
    assert main(["--input", str(fixtures_dir / "dag" / "lineage.json"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["verdict"]["status"] == "partially_identified"
    assert "identifiability:partially_identified" in capsys.readouterr().out
    assert main(["--input", str(tmp_path / "missing.json"), "--out", str(out)]) == 1
