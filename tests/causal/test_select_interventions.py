"""Tests for scripts/causal/select_interventions.py: pooling, exclusions, pairs and reasons."""
from __future__ import annotations

import math

import pytest

from scripts.causal.core.schema import CandidateIntervention
from scripts.causal.select_interventions import as_candidates, pool, rank_candidates, registry_candidates

CANDS = [("ema_0997", "ema", "EMA weights"), ("xsa_last4", "xsa", "XSA"), ("act_gelu", "activation", "GELU", "gelu"),
         ("act_leaky_relu2", "activation", "leaky", "leaky_relu2"), ("matrix_lr_half", "", "lr x0.5"),
         ("ln_scale", "ln_scale", "ln scale")]
ABLATIONS = {"ema": {"n": 2, "mean": -0.004, "sd": 0.002, "rows": [{"change": "EMA", "delta_bpb": -0.003},
                                                                    {"change": "EMA", "delta_bpb": -0.005}]},
             "activation": {"n": 1, "mean": -0.003, "sd": None,
                            "rows": [{"change": "LeakyReLU^2", "delta_bpb": -0.003}]}}


def test_pool_is_precision_weighted():
    mu, sd = pool([("a", -0.01, 0.01)], prior_sd=0.01)
    assert mu == pytest.approx(-0.005) and sd == pytest.approx(0.01 / math.sqrt(2))
    assert pool([], prior_sd=0.02) == (0.0, pytest.approx(0.02))


def test_ranking_uses_evidence_and_gives_reasons():
    out = rank_candidates(CANDS, ablations=ABLATIONS, prior_sd=0.01)
    by = {c["name"]: c for c in out["candidates"]}
    assert len(out["candidates"]) >= 5
    ema = by["ema_0997"]
    exp_mu, exp_sd = pool([("ablations", -0.004, 0.002 / math.sqrt(2))], prior_sd=0.01)
    assert ema["mean_delta_bpb"] == pytest.approx(exp_mu) and ema["sd"] == pytest.approx(exp_sd)
    assert "2 leaderboard ablation(s)" in ema["reason"]
    # a categorical level only takes the ablation rows that name it
    assert by["act_leaky_relu2"]["evidence"][0]["source"] == "ablations"
    assert by["act_gelu"]["evidence"] == [] and "prior only" in by["act_gelu"]["reason"]
    assert [c["rank"] for c in out["candidates"]] == list(range(1, len(out["candidates"]) + 1))
    ucbs = [c["ucb"] for c in out["candidates"]]
    assert ucbs == sorted(ucbs, reverse=True)


def test_settled_candidates_are_left_out():
    ledger = [{"intervention": "ema_0997", "decision": "confirmed", "mean_delta_bpb": -0.01},
              {"intervention": "xsa_last4", "decision": "harmful", "mean_delta_bpb": 0.01},
              {"intervention": "ln_scale", "decision": "suggestive", "mean_delta_bpb": -0.002,
               "ci_low": -0.006, "ci_high": 0.002}]
    out = rank_candidates(CANDS, ledger=ledger)
    names = {c["name"] for c in out["candidates"]}
    assert "ema_0997" not in names and "xsa_last4" not in names
    assert {e["name"]: e["reason"] for e in out["excluded"]} == {
        "ema_0997": "confirmed by our experiments", "xsa_last4": "refuted: harmful in our experiments"}
    ln = next(c for c in out["candidates"] if c["name"] == "ln_scale")
    assert ln["evidence"][0]["source"] == "experiments"
    assert ln["evidence"][0]["sd"] == pytest.approx(0.008 / (2 * 1.96))


def test_never_tried_pairs_are_ranked():
    ident = {"never_tried_pairs": [["ema", "ln_scale"]], "verdict": {"status": "identified"}, "per_feature": {}}
    out = rank_candidates(CANDS, ablations=ABLATIONS, identifiability=ident)
    pair = next(c for c in out["candidates"] if "+" in c["name"])
    assert set(pair["features"]) == {"ema", "ln_scale"}
    assert "never tried together" in pair["reason"]


def test_observational_evidence_ignored_when_under_identified():
    effects = {"ema": {"column": "ema", "feature": "ema", "estimate": -0.02, "se": 0.005, "unit": "0 -> 1",
                       "n": 40, "reliable": True}}
    used = rank_candidates(CANDS, effects=effects, identifiability={"verdict": {"status": "identified"}})
    ignored = rank_candidates(CANDS, effects=effects, identifiability={"verdict": {"status": "under_identified"}})
    ema_used = next(c for c in used["candidates"] if c["name"] == "ema_0997")
    ema_ignored = next(c for c in ignored["candidates"] if c["name"] == "ema_0997")
    assert ema_used["evidence"][0]["source"] == "observational"
    assert ema_ignored["evidence"] == [] and "ignored" in ema_ignored["reason"]


def test_numeric_effect_is_scaled_to_the_candidate_value():
    effects = {"logit_softcap": {"column": "logit_softcap", "feature": "logit_softcap", "estimate": 0.01,
                                 "se": 0.002, "unit": "+1 SD (5)", "scale": 5.0, "n": 40, "reliable": True}}
    out = rank_candidates([("softcap_20", "logit_softcap", "", 20.0)], effects=effects, prior_sd=1.0)
    ev = out["candidates"][0]["evidence"][0]
    assert ev["mean"] == pytest.approx(0.01 * (20.0 - 30.0) / 5.0)  # baseline 30 -> 20 is -2 SD


def test_expert_strength_widens_the_prior():
    from scripts.causal.dag.expert import load_expert
    from scripts.causal.select_interventions import expert_strengths

    st = expert_strengths(load_expert())
    assert st["quant_gap"] == pytest.approx(0.95)
    assert st["quant_bits"] == pytest.approx(0.9 * 0.95)         # quant_bits -> quant_gap -> val_bpb
    assert st["num_layers"] == pytest.approx(0.95 * 0.85)        # via params, the strongest path
    out = rank_candidates([("a", "quant_bits", ""), ("b", "orthogonal_init", "")], prior_strength=st)
    sds = {c["name"]: c["sd"] for c in out["candidates"]}
    assert sds["a"] == pytest.approx(0.01 * (0.5 + st["quant_bits"]))
    assert out["candidates"][0]["name"] == "a" and "expert path strength" in out["candidates"][0]["reason"]


def test_numeric_ablations_are_not_used_as_evidence():
    abl = {"num_layers": {"n": 4, "mean": -0.01, "sd": 0.002, "rows": []}}
    out = rank_candidates([("more_layers", "num_layers", "", 11)], ablations=abl)
    c = out["candidates"][0]
    assert c["evidence"] == [] and "direction of change unknown" in c["reason"]


def test_candidate_inputs_and_registry():
    cands = as_candidates([CandidateIntervention("a", "ema"), ("b", "xsa", "d"), {"name": "c", "feature": None}])
    assert [c.name for c in cands] == ["a", "b", "c"] and cands[2].feature == ""
    reg = registry_candidates()
    assert len(reg) >= 5 and all(c.name not in ("aa", "sanity_frozen_matrices") for c in reg)
