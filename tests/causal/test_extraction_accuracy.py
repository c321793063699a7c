"""Tests for scripts/causal/extraction_accuracy.py: the committed matrix against the verified evidence table (ablation
typing) and the hand-labelled features."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.causal.core.schema import read_json
from scripts.causal.extraction_accuracy import main, merge_truths, score, type_matches, values_equal

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


def test_typing_is_scored_on_found_rows():
    truth = {"records": {"a": {"ablations": [
        {"change": "+ XSA", "delta_bpb": -0.003, "kind": "ablation", "features": ["xsa"], "direction": 1},
        {"change": "vs PR #1", "delta_bpb": -0.01, "kind": "record_vs_base"},
        {"change": "LR 0.02", "delta_bpb": -0.002, "kind": "sweep_unmapped"},
        {"change": "unfound", "delta_bpb": 0.05, "kind": "headline"}]}}}
    pred = {"records": [{"record_id": "a", "features": {}, "ablations": [
        {"change": "+ XSA", "delta_bpb": -0.003, "kind": "ablation", "features": ["xsa"], "direction": -1},
        {"change": "vs PR #1", "delta_bpb": -0.01, "kind": "record_vs_base", "features": []},
        {"change": "LR", "delta_bpb": -0.002, "kind": "sweep_unmapped", "features": []}]}]}
    rep = score(pred, truth)
    assert rep.ablation_recall == 0.75 and rep.n_typed == 3
    assert rep.typing_accuracy == pytest.approx(2 / 3)  # XSA found but with the wrong direction
    assert any("typed ablation ['xsa'] -1 != ablation ['xsa'] 1" in m for m in rep.mismatches)
    assert type_matches({"kind": "multi_feature", "features": ["a", "b"]}, {"kind": "multi_feature"})


def test_merge_truths_rejects_a_record_labelled_twice():
    one = {"records": {"a": {"ablations": []}}}
    assert merge_truths([one, {"records": {"b": {}}}])["records"].keys() == {"a", "b"}
    with pytest.raises(ValueError, match="more than one"):
        merge_truths([one, one])


def test_truth_fixture_covers_at_least_ten_records():
    truth = read_json(TRUTH)
    assert len(truth["records"]) >= 10


def test_committed_matrix_meets_the_feature_targets_on_the_hand_labels():
    rep = score(read_json(REPO / "results" / "interventions.json"), read_json(TRUTH))
    assert rep.n_missing == 0
    assert rep.val_bpb_exact >= 0.95
    assert rep.feature_agreement >= 0.90
    assert rep.feature_agreement_non_baseline >= 0.80


def test_committed_matrix_typing_against_the_verified_table_as_measured():
    """The figures the closing note and README quote; these pin the measurement so a change that lowers either is
    seen. The records after the cutoff are no longer unseen: the experiment-log rules (extract.run_logs) were
    written while reading the XNOR study, which holds 50 of their 84 single changes; without it nothing after the
    cutoff moved (14/14 claims right, 30/34 found, before and after those rules)."""
    from scripts.causal.evidence.table import load_table
    from scripts.causal.extract.verified_score import CUTOFF, score_typing

    pred, table = read_json(REPO / "results" / "interventions.json")["records"], load_table()
    before = {k: v for k, v in table.items() if (v.date or "") <= CUTOFF}
    pre, post, every = (score_typing(pred, before), score_typing(pred, table, after=CUTOFF),
                        score_typing(pred, table))
    assert pre.precision >= 0.99 and pre.recall >= 0.74   # 41/41, 46/62
    assert every.precision >= 0.98 and every.recall >= 0.81   # 89/90, 119/146
    assert post.precision >= 0.97 and post.recall >= 0.86    # 48/49, 73/84
    assert every.n_single_change >= 140 and pre.n_records + post.n_records == every.n_records == 48


@pytest.mark.parametrize("batch, right, claims, found, singles", [("batch1", 54, 54, 57, 68),
                                                                  ("batch2", 52, 53, 51, 76),
                                                                  ("batch3", 49, 50, 62, 103),
                                                                  ("batch4", 39, 39, 46, 73),
                                                                  ("batch5", 47, 47, 56, 94),
                                                                  ("batch6", 34, 34, 39, 116),
                                                                  ("batch7", 34, 34, 41, 89)])
def test_the_miner_on_synthetic_records_as_measured(batch, right, claims, found, singles):
    """Seven batches of twelve synthetic record folders, each written by a helper that did not read the miner
    (data/synthetic_records/README.md). First looks: 35/44 right, 38/65 found; 16/24, 20/76; 26/35, 32/103;
    20/20, 26/73; 28/33, 37/94; 25/29, 28/116; 34/35, 41/89. The figures pinned here are after the rules those looks prompted (in sample since)."""
    from scripts.causal.evidence.table import load_table
    from scripts.causal.extract.matrix import extract
    from scripts.causal.extract.verified_score import score_typing

    root = Path(__file__).parent / "data" / "synthetic_records" / batch
    got = score_typing(extract([root / "records"])["records"], load_table(root / "verified"))
    assert (got.n_records, got.n_single_change) == (12, singles)
    assert got.n_right >= right and got.n_claims - got.n_right <= claims - right and got.n_found >= found


def test_cli_prints_a_report(capsys):
    assert main(["--truth", str(TRUTH), "--pred", str(REPO / "results" / "interventions.json")]) == 0
    out = capsys.readouterr().out
    assert '"val_bpb_exact"' in out and '"after_2026-04-03"' in out and '"precision"' in out
    with pytest.raises(SystemExit):
        main([])
