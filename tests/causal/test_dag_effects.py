"""Tests for scripts/causal/dag/effects.py: change mapping, ablation pooling, graph merge, back-door effects."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from scripts.causal.core.schema import PagEdge
from scripts.causal.dag.effects import (
    adjustment_set,
    causal_graph,
    combine_graphs,
    map_change,
    observational_effect,
    pool_ablations,
)
from scripts.causal.dag.expert import ExpertDag, ExpertEdge, ExpertNode
from scripts.causal.dag.prepare import PreparedMatrix


@pytest.mark.parametrize("change, features, sign", [
    ("+ LoRA TTT", ["lora_ttt"], 1),
    ("EMA", ["ema"], 1),
    ("No EMA: EMA still hurts", ["ema"], 1),  # "No EMA:" labels the bullet; the sentence says what EMA does
    ("No EMA at all", ["ema"], -1),
    ("SmearGate: blends each position", ["smeargate"], 1),
    ("+ Stride (chunk=256)", ["sliding_window_eval"], 1),
    ("+ Doc-isolated", [], 1),  # document-isolated eval windows: not varlen attention in training
    ("+ SWA_start_frac=0.4", ["swa"], 1),
    ("Batch Size = 65536", [], 1),
    ("1337", [], 1),
    ("GPTQ-lite", ["gptq"], 1),
    ("LeakyReLU(0.5)^2", ["activation"], 1),
])
def test_map_change(change, features, sign):
    feats, s = map_change(change)
    assert sorted(feats) == sorted(features)
    assert s == sign


def test_pool_ablations_pools_per_feature_and_reports_unmapped():
    recs = [{"record_id": "a", "ablations": [{"change": "EMA", "delta_bpb": -0.004},
                                             {"change": "no EMA", "delta_bpb": 0.002},
                                             {"change": "1337", "delta_bpb": -0.001},
                                             {"change": "+ XSA + EMA", "delta_bpb": -0.01},
                                             {"change": "Byte best (10min)", "delta_bpb": 0.5},
                                             {"change": "EMA", "delta_bpb": None}]}]
    pooled, unmapped = pool_ablations(recs)
    assert list(pooled) == ["ema"]
    assert pooled["ema"]["n"] == 2
    assert pooled["ema"]["mean"] == pytest.approx(-0.003)
    assert pooled["ema"]["sd"] == pytest.approx(np.std([-0.004, -0.002], ddof=1))
    assert {u["change"]: u["kind"] for u in unmapped} == {
        "1337": "fragment", "+ XSA + EMA": "multi_feature", "Byte best (10min)": "no_delta", "EMA": "no_delta"}
    # each evidence row keeps what the ranking discounts by
    row = pooled["ema"]["rows"][1]
    assert (row["reported_delta_bpb"], row["direction"], row["record_id"]) == (0.002, -1, "a")


def test_pool_ablations_reads_typed_rows_and_uses_their_direction():
    recs = [{"record_id": "r", "features": {"num_layers": 11, "ema": True},
             "ablations": [{"change": "11L vs 9L", "delta_bpb": -0.004, "source": "README prose", "kind": "ablation",
                            "features": ["num_layers"], "from_value": 9, "to_value": 11, "direction": 1},
                           {"change": "10L vs 11L", "delta_bpb": 0.002, "source": "README prose", "kind": "ablation",
                            "features": ["num_layers"], "from_value": 11, "to_value": 10, "direction": -1},
                           {"change": "Improvement: 0.1144 nats", "delta_bpb": -0.06, "source": "README prose",
                            "kind": "headline"}]}]
    pooled, unmapped = pool_ablations(recs)
    assert [r["delta_bpb"] for r in pooled["num_layers"]["rows"]] == [-0.004, -0.002]
    assert pooled["num_layers"]["rows"][0]["distance"] == 2  # num_layers and ema differ from the baseline
    assert [u["kind"] for u in unmapped] == ["headline"]


EXPERT = ExpertDag(
    nodes=(ExpertNode("ema", 0, "binary"), ExpertNode("xsa", 0, "binary"), ExpertNode("quant_bits", 0, "numeric"),
           ExpertNode("quant_gap", 1, "numeric"), ExpertNode("val_bpb", 2, "numeric")),
    edges=(ExpertEdge("quant_bits", "quant_gap", 0.9, "r"), ExpertEdge("quant_gap", "val_bpb", 0.9, "r"),
           ExpertEdge("ema", "val_bpb", 0.5, "r")),
)


def test_combine_labels_sources():
    data = [PagEdge("quant_bits", "quant_gap", "tail", "arrow"),   # agrees with the expert
            PagEdge("val_bpb", "ema", "tail", "arrow"),             # reversed: conflict
            PagEdge("ema", "xsa", "circle", "circle")]              # data only
    boot = {("quant_bits", "quant_gap"): {"frequency": 0.9}, ("ema", "val_bpb"): {"frequency": 0.4},
            ("ema", "xsa"): {"frequency": 0.7}}
    rows = {(r["a"], r["b"]): r for r in combine_graphs(EXPERT, data, boot, feature_of={})}
    assert rows[("quant_bits", "quant_gap")]["source"] == "both"
    assert rows[("quant_bits", "quant_gap")]["bootstrap_frequency"] == 0.9
    assert rows[("ema", "val_bpb")]["source"] == "conflict"
    assert rows[("ema", "xsa")]["source"] == "data" and rows[("ema", "xsa")]["type"] == "ema o-o xsa"
    assert rows[("quant_gap", "val_bpb")]["source"] == "expert"
    assert rows[("quant_gap", "val_bpb")]["rationale"] == "r"


def test_adjustment_set_uses_latent_for_undirected_data_edge():
    g = causal_graph(EXPERT, [PagEdge("ema", "xsa", "circle", "circle"), PagEdge("xsa", "val_bpb", "tail", "arrow")])
    assert any(n.startswith("L[") for n in g)
    z, valid = adjustment_set(g, "ema", {"ema", "xsa", "quant_bits", "quant_gap", "val_bpb"})
    assert valid and z == ["xsa"]
    z, valid = adjustment_set(g, "quant_bits", {"ema", "xsa", "quant_bits", "quant_gap", "val_bpb"})
    assert valid and z == []  # a root with no back-door path


def test_adjustment_set_reports_invalid_when_confounder_unobserved():
    g = nx.DiGraph([("U", "x"), ("U", "val_bpb"), ("x", "val_bpb")])
    z, valid = adjustment_set(g, "x", {"x", "val_bpb"})
    assert not valid


def test_observational_effect_removes_confounding():
    rng = np.random.default_rng(0)
    n = 400
    c = rng.integers(0, 2, n).astype(float)
    x = (rng.random(n) < 0.2 + 0.6 * c).astype(float)
    y = 1.2 - 0.05 * x + 0.2 * c + 0.01 * rng.normal(size=n)
    m = PreparedMatrix(np.column_stack([c, x, y]), ("c", "x", "val_bpb"), (0, 0, 2),
                       {"c": "c", "x": "x", "val_bpb": "val_bpb"}, tuple(map(str, range(n))), (), (), ())
    naive = observational_effect(m, "x", [])
    adjusted = observational_effect(m, "x", ["c"])
    assert naive["estimate"] > 0.0  # confounded: the wrong sign
    assert adjusted["estimate"] == pytest.approx(-0.05, abs=0.005)
    assert adjusted["ci_low"] < -0.05 < adjusted["ci_high"] and adjusted["n"] == n
    assert adjusted["adjustment_set"] == ["c"] and adjusted["unit"] == "0 -> 1"
