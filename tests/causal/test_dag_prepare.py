"""Tests for scripts/causal/dag/prepare.py: encoding, null handling and column cleaning before FCI."""
from __future__ import annotations

import numpy as np
import pytest

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.paths import RESULTS_DIR
from scripts.causal.core.schema import read_json
from scripts.causal.dag.prepare import REGIME, build_matrix, clean_columns, estimate_params


def _records(n=12):
    recs = []
    for i in range(n):
        recs.append({
            "record_id": f"r{i}", "val_bpb": 1.2 - 0.01 * i, "pre_quant_bpb": None, "post_quant_bpb": None,
            "artifact_bytes": 15_000_000 + 1000 * i,
            "features": {
                "num_layers": 9 + (i % 3), "model_dim": 512, "mlp_mult": 2, "vocab_size": 1024,
                "ema": i % 2 == 0, "swa": i % 2 == 0,          # swa duplicates ema
                "qat": i % 2 == 1,                               # complement of ema
                "smeargate": i in (3, 7, 9), "muon": True,      # muon constant
                "xsa": i == 5,                                   # near-constant (1 row differs)
                "ttt": None,                                     # all null
                "warmdown_iters": None if i < 3 else 1000 + 100 * i,
                "activation": "gelu" if i % 4 == 0 else ("leaky_relu2" if i % 4 == 1 else None),
            },
        })
    return recs


def test_constant_duplicate_null_columns_are_dropped_with_reasons():
    m = build_matrix(_records())
    reasons = {d["column"]: d["reason"] for d in m.dropped}
    assert reasons["ttt"] == "all null"
    assert reasons["muon"].startswith("constant")
    assert reasons["model_dim"].startswith("constant")
    assert reasons["swa"] == "exact duplicate of ema"
    assert reasons["qat"].startswith("complement of ema")
    assert reasons["xsa"].startswith("near-constant (1 of 12")
    # params is a monotone function of num_layers here: identical ranks, so it is dropped as singular
    assert "singular" in reasons["params"]
    assert reasons["quant_gap"] == "all null"
    for col in ("ttt", "muon", "swa", "xsa", "qat"):
        assert col not in m.columns
    assert not np.isnan(m.data).any()
    # the FCI input has variance in every column (the seed pipeline fed an all-zero matrix)
    assert (m.data.var(axis=0) > 0).all()


def test_nulls_are_imputed_explicitly():
    m = build_matrix(_records())
    imputed = {d["column"]: d for d in m.imputed}
    assert imputed["warmdown_iters"]["n"] == 3 and "median" in imputed["warmdown_iters"]["strategy"]
    assert "reference level 'relu2'" in imputed["activation"]["strategy"]
    col = m.column("warmdown_iters")
    assert col[0] == pytest.approx(np.median([1000 + 100 * i for i in range(3, 12)]))
    # categorical -> one indicator per non-reference level
    assert "activation=gelu" in m.columns and "activation=leaky_relu2" in m.columns
    assert m.feature_of["activation=gelu"] == "activation"


def test_mostly_null_numeric_column_is_dropped():
    recs = _records()
    for r in recs[:8]:
        r["features"]["warmdown_iters"] = None
    m = build_matrix(recs)
    assert any(d["column"] == "warmdown_iters" and "8 of 12 values null" in d["reason"] for d in m.dropped)


def test_tiers_and_experiment_rows():
    rows = [{"intervention": "control", "feature": None, "value": None, "val_bpb": 2.10, "seed": s, "arm": "control"}
            for s in (1, 2, 3)]
    rows += [{"intervention": "ema_0997", "feature": "ema", "value": True, "val_bpb": 2.08, "seed": s,
              "arm": "treatment"} for s in (1, 2, 3)]
    m = build_matrix(_records(), experiment_rows=rows)
    tiers = dict(zip(m.columns, m.tiers, strict=True))
    assert tiers[REGIME] == 0 and tiers["val_bpb"] == 2 and tiers["artifact_bytes"] == 1 and tiers["ema"] == 0
    assert m.n == 18
    assert m.column(REGIME).sum() == 6
    assert m.column("val_bpb")[-1] == 2.08  # the real measured value


def test_experiment_rows_that_cannot_be_placed_are_excluded_with_reasons():
    rows = [{"intervention": "control", "feature": None, "value": None, "val_bpb": 2.1, "seed": 1, "arm": "control"},
            {"intervention": "matrix_lr_half", "feature": None, "value": None, "val_bpb": 2.2, "seed": 1,
             "arm": "treatment"},
            {"intervention": "model_dim_up", "feature": "model_dim", "value": 144, "val_bpb": 2.0, "seed": 1,
             "arm": "treatment"},
            {"intervention": "model_dim_up", "feature": "model_dim", "value": 144, "control_value": 128,
             "val_bpb": 2.0, "seed": 2, "arm": "treatment"}]
    m = build_matrix(_records(), experiment_rows=rows)
    reasons = [e["reason"] for e in m.excluded_rows]
    assert len(reasons) == 2
    assert "no canonical feature" in reasons[0] and "without control_value" in reasons[1]
    assert m.n == 14


def test_bad_experiment_row_and_too_few_rows():
    with pytest.raises(DataFormatError, match=r"experiment_rows\[0\]: missing fields \['seed', 'arm'\]"):
        build_matrix(_records(), experiment_rows=[{"intervention": "x", "feature": "ema", "value": 1, "val_bpb": 2.0}])
    with pytest.raises(DataFormatError, match="has 2 usable rows"):
        build_matrix(_records(2))


def test_rank_collinear_column_is_dropped():
    # two disjoint indicator levels and their union: the ranks of the union are an affine function of the
    # ranks of the two levels, so the rank correlation matrix is singular
    rng = np.random.default_rng(0)
    level = rng.integers(0, 3, size=40)
    a, b = (level == 1).astype(float), (level == 2).astype(float)
    data = np.column_stack([a, b, a + b, rng.normal(size=40)])
    keep, dropped = clean_columns(data, ["a", "b", "a_or_b", "val_bpb"])
    assert keep == ["a", "b", "val_bpb"]
    assert dropped == [{"column": "a_or_b", "reason": "linearly dependent on earlier columns (singular)"}]


def test_params_estimate():
    assert estimate_params({"num_layers": 9, "model_dim": 512, "mlp_mult": 2, "vocab_size": 1024,
                            "tied_embeddings": True}) == 9 * (4 * 512**2 + 4 * 512**2) + 1024 * 512
    assert estimate_params({"num_layers": 9}) is None


@pytest.mark.skipif(not (RESULTS_DIR / "interventions.json").is_file(), reason="real matrix not built yet")
def test_real_matrix_has_variance():
    m = build_matrix(read_json(RESULTS_DIR / "interventions.json")["records"])
    assert m.n >= 20 and len(m.columns) >= 10
    assert (m.data.var(axis=0) > 0).all()
    assert m.column("val_bpb").std() > 0
