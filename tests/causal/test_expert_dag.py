"""Tests for scripts/causal/dag/expert.py: the curated DAG loads, and bad files fail with clear messages."""
from __future__ import annotations

import copy

import pytest

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import INTERVENTION_FEATURES, read_json
from scripts.causal.dag.expert import CANONICAL_FEATURES, DEFAULT_EXPERT, load_expert, parse_expert


def test_committed_expert_dag_is_valid_and_large_enough():
    dag = load_expert(DEFAULT_EXPERT)
    assert len(dag.nodes) >= 15
    assert {n.tier for n in dag.nodes} == {0, 1, 2}
    assert all(e.rationale and 0 <= e.strength <= 1 for e in dag.edges)
    # The seed pipeline's bug: node names that do not match the matrix. Tier 0 must use the canonical keys.
    assert {n.name for n in dag.nodes if n.tier == 0} <= set(INTERVENTION_FEATURES)
    g = dag.graph()
    for chain in (("vocab_size", "params"), ("params", "artifact_bytes"), ("quant_bits", "quant_gap"),
                  ("quant_gap", "val_bpb")):
        assert g.has_edge(*chain)
    assert g.out_degree("val_bpb") == 0


def test_canonical_features_match_the_matrix_schema():
    assert tuple(CANONICAL_FEATURES) == tuple(INTERVENTION_FEATURES)


@pytest.fixture
def raw():
    return read_json(DEFAULT_EXPERT)


def test_edge_into_an_earlier_tier_is_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["edges"].append({"source": "params", "target": "num_layers", "strength": 0.5, "rationale": "backwards"})
    with pytest.raises(DataFormatError, match=r"params->num_layers goes from tier 1 to tier 0"):
        parse_expert(bad, source="x.json")


def test_edge_leaving_target_is_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["edges"].append({"source": "val_bpb", "target": "params", "strength": 0.5, "rationale": "nope"})
    with pytest.raises(DataFormatError, match="leaves 'val_bpb'"):
        parse_expert(bad, source="x.json")


def test_non_canonical_tier0_name_is_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["nodes"].append({"name": "SmearGate", "tier": 0, "kind": "binary"})
    with pytest.raises(DataFormatError, match="'SmearGate' is not a canonical feature"):
        parse_expert(bad, source="x.json")


def test_missing_rationale_and_unknown_node_are_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["edges"].append({"source": "ema", "target": "quant_gap", "strength": 0.5, "rationale": " "})
    with pytest.raises(DataFormatError, match="needs a one-line 'rationale'"):
        parse_expert(bad)
    bad = copy.deepcopy(raw)
    bad["edges"].append({"source": "ema", "target": "nowhere", "strength": 0.5, "rationale": "x"})
    with pytest.raises(DataFormatError, match="unknown node 'nowhere'"):
        parse_expert(bad)


def test_cycle_within_mediators_is_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["edges"].append({"source": "steps", "target": "params", "strength": 0.1, "rationale": "loop"})
    with pytest.raises(DataFormatError, match="cycle"):
        parse_expert(bad)
