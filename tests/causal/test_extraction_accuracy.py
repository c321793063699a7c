"""Tests for scripts/causal/extraction_accuracy.py, and the committed matrix scored against the hand labels."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.causal.core.schema import read_json
from scripts.causal.extraction_accuracy import main, score, values_equal

REPO = Path(__file__).resolve().parents[2]
TRUTH = Path(__file__).parent / "data" / "labels" / "truth.json"


def test_values_equal_types():
    assert values_equal(3, 3.0) and values_equal(None, None) and values_equal("Brotli", "brotli")
    assert not values_equal(True, 1) and not values_equal(None, 0) and not values_equal(1.58, 1.0)


def test_score_counts_each_metric():
    truth = {"records": {"a": {"val_bpb": 1.2, "features": {"num_layers": 9, "xsa": True},
                               "ablations": [{"change": "x", "delta_bpb": -0.003}, {"change": "y", "delta_bpb": 0.001}]}}}
    pred = {"records": [{"record_id": "a", "val_bpb": 1.2000004, "features": {"num_layers": 9, "xsa": False},
                         "ablations": [{"change": "x!", "delta_bpb": -0.00305, "source": "t"}]}]}
    rep = score(pred, truth)
    assert rep.val_bpb_exact == 1.0 and rep.feature_agreement == 0.5
    assert rep.feature_agreement_non_baseline == 0.0 and rep.ablation_recall == 0.5
    assert any("xsa" in m for m in rep.mismatches)


def test_truth_fixture_covers_at_least_ten_records():
    truth = read_json(TRUTH)
    assert len(truth["records"]) >= 10


def test_committed_matrix_meets_the_targets_on_the_hand_labels():
    rep = score(read_json(REPO / "results" / "interventions.json"), read_json(TRUTH))
    assert rep.n_missing == 0
    assert rep.val_bpb_exact >= 0.95
    assert rep.feature_agreement >= 0.90
    assert rep.feature_agreement_non_baseline >= 0.80
    assert rep.ablation_recall >= 0.70


def test_cli_prints_a_report(capsys):
    assert main(["--truth", str(TRUTH), "--pred", str(REPO / "results" / "interventions.json")]) == 0
    assert '"val_bpb_exact"' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([])
