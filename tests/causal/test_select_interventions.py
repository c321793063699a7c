"""Tests for scripts/causal/select_interventions.py (and dag/evidence.py): precision pooling of a weak prior,
verified single-change rows, within-lineage contrasts and screen results; no cross-record association; the stack;
ordering, reasons, pairs."""
from __future__ import annotations

import math

import pytest

from scripts.causal.core.schema import CandidateIntervention, EvidenceEntry
from scripts.causal.dag import evidence as ev
from scripts.causal.dag.effects import pool_verified
from scripts.causal.select_interventions import (
    as_candidates,
    main,
    pool,
    rank_candidates,
    registry_candidates,
    registry_classes,
)

CANDS = [("ema_0997", "ema", "EMA weights", True), ("xsa_last4", "xsa", "XSA", True),
         ("act_gelu", "activation", "GELU", "gelu"), ("act_leaky_relu2", "activation", "leaky", "leaky_relu2"),
         ("matrix_lr_half", "", "lr x0.5"), ("ln_scale", "ln_scale", "ln scale", True)]


_EXACT = {"xsa": "xsa_last4", "ema": "ema_0997", "ln_scale": "ln_scale", "smeargate": "smear_gate", "swa": "swa",
          "activation": "act_leaky_relu2"}  # the registry entry a test row is verified as (None: no entry named)


def _row(change, delta, feature, **kw):
    """A verified single-change entry (its record is set by ``_matrix``): on/off features default False -> True."""
    direction = kw.pop("direction", 1)
    frm, to = kw.pop("from_value", not direction > 0), kw.pop("to_value", direction > 0)
    return dict(klass="single_change", change=change, knob=feature, from_value=frm, to_value=to,
                intervention=kw.pop("intervention", _EXACT.get(feature)),
                delta_bpb=delta, delta_nats=None, delta_stated=str(delta), metric=kw.pop("metric", "post_quant"),
                stack="", stack_record=None, reference="previous row", seeds=kw.pop("n_seeds", None),
                hardware=kw.pop("hardware", "8xH100"), quote=change, file="README.md", line=1, **kw)


def _matrix(*rows_per_record, features=None, track="track_10min_16mb"):
    """Verified rows by knob: one record per list of rows, each on the control stack unless ``features`` say."""
    entries, records = [], []
    for i, rows in enumerate(rows_per_record):
        records.append({"record_id": f"r{i}", "track": track, "features": dict(features or {})})
        entries += [EvidenceEntry(record_id=f"r{i}", id=j + 1, track=track, **r) for j, r in enumerate(rows)]
    return pool_verified(entries, records)


def test_pool_is_precision_weighted():
    mu, sd = pool([("a", -0.01, 0.01)], prior_sd=0.01)
    assert mu == pytest.approx(-0.005) and sd == pytest.approx(0.01 / math.sqrt(2))
    assert pool([], prior_sd=0.02) == (0.0, pytest.approx(0.02))


def test_three_concordant_rows_beat_a_prior_only_change_and_a_contradicting_row_lowers_it_as_expected():
    three = [[_row("+ XSA", -0.003, "xsa")] for _ in range(3)]  # three records, one row each
    pooled3 = _matrix(*three)
    pooled4 = _matrix(*three, [_row("+ XSA", +0.003, "xsa")])
    cands = [("xsa_last4", "xsa", "XSA", True), ("ln_scale", "ln_scale", "", True)]
    out3 = rank_candidates(cands, ablations=pooled3)
    out4 = rank_candidates(cands, ablations=pooled4)
    assert [c["name"] for c in out3["candidates"]] == ["xsa_last4", "ln_scale"]
    # the expected amount: precision weights of N(0, 0.01^2) and rows of sd sqrt(TAU^2 + SEED_SD^2)
    # the expected amount: precision weights of N(0, 0.01^2) and rows of variance TAU^2 + SEED_SD^2, plus (four
    # rows that disagree) the DerSimonian-Laird between-record variance: Q = w * sum((x - mean)^2), k - 1 = 3
    v = ev.TAU**2 + ev.SEED_SD**2
    w0, w = 1 / 0.01**2, 1 / v
    q = w * (3 * (-0.003 + 0.0015) ** 2 + (0.003 + 0.0015) ** 2)
    tau2 = (q - 3) / (4 * w - 4 * w**2 / (4 * w))
    w4 = 1 / (v + tau2)
    mu3, mu4 = 3 * w * -0.003 / (w0 + 3 * w), (3 * w4 * -0.003 + w4 * 0.003) / (w0 + 4 * w4)
    x3 = next(c for c in out3["candidates"] if c["name"] == "xsa_last4")
    x4 = next(c for c in out4["candidates"] if c["name"] == "xsa_last4")
    assert x3["mean_delta_bpb"] == pytest.approx(mu3) and x3["sd"] == pytest.approx((w0 + 3 * w) ** -0.5)
    assert x4["mean_delta_bpb"] == pytest.approx(mu4) and x4["sd"] == pytest.approx((w0 + 4 * w4) ** -0.5)
    assert x4["mean_delta_bpb"] - x3["mean_delta_bpb"] == pytest.approx(mu4 - mu3)
    assert (mu3, mu4) == (pytest.approx(-0.0029635, abs=1e-6), pytest.approx(-0.0014670, abs=1e-6))
    assert "between-record spread tau" in x4["reason"] and x4["p_beats"] < x3["p_beats"]
    assert x3["consistent_gain"] and x3["p_beats"] > 0.8
    assert "3 leaderboard row(s)" in x3["reason"] and "r2: '+ XSA' -0.0030" in x3["reason"]
    assert "the candidate's exact change" in x3["reason"]
    ln = next(c for c in out3["candidates"] if c["name"] == "ln_scale")
    assert ln["evidence"] == [] and "prior only" in ln["reason"] and ln["score"] < x3["score"]


def test_exploration_bonus_never_lifts_prior_only_above_consistent_evidence():
    # a weak but consistent gain (one row, far stack) still ranks above a very wide prior-only candidate
    pooled = _matrix([_row("+ XSA", -0.004, "xsa", metric="ttt")], features={"num_layers": 11, "ema": True, "xsa": True})
    out = rank_candidates([("wide", "num_layers", "", None), ("xsa_last4", "xsa", "", True)], ablations=pooled,
                          prior_strength={"num_layers": 5.0, "xsa": 0.5}, kappa=10.0)
    x = next(c for c in out["candidates"] if c["name"] == "xsa_last4")
    wide = next(c for c in out["candidates"] if c["name"] == "wide")
    assert wide["score"] > x["score"]  # the bonus alone would put it first ...
    assert x["consistent_gain"] and out["candidates"][0]["name"] == "xsa_last4"  # ... the evidence rule does not
    assert "3 features from control" in x["reason"] and "metric ttt" in x["reason"]


def test_row_discounts_for_seeds_metric_distance_track_and_hardware():
    base = math.sqrt(ev.TAU**2 + ev.SEED_SD**2)
    pooled = _matrix([_row("+ XSA", -0.002, "xsa", n_seeds=3, metric="ttt")], features={"ema": True},
                     track="track_non_record_16mb")
    items, _ = ev.leaderboard_items(CandidateIntervention("xsa_last4", "xsa", "", True), pooled["xsa"])
    want = ev.METRIC_FACTOR["ttt"] * (1 + ev.DISTANCE_STEP) * ev.NON_RECORD_FACTOR * math.sqrt(
        ev.TAU**2 + ev.SEED_SD**2 / 3)
    assert items[0].sd == pytest.approx(want) and items[0].sd > base
    one_gpu = _matrix([_row("+ XSA", -0.002, "xsa", n_seeds=3, metric="ttt", hardware="1xH100")],
                      features={"ema": True}, track="track_non_record_16mb")
    (item,), _ = ev.leaderboard_items(CandidateIntervention("xsa_last4", "xsa", "", True), one_gpu["xsa"])
    assert item.sd == pytest.approx(want * ev.OTHER_HARDWARE_FACTOR) and "1xH100" in item.label


def test_distance_is_counted_from_the_control_stack():
    entries = [EvidenceEntry(record_id="r0", id=1, track="track_10min_16mb", **_row("+ XSA", -0.002, "xsa"))]
    records = [{"record_id": "r0", "features": {"num_layers": 11, "ema": True}}]
    assert pool_verified(entries, records)["xsa"]["rows"][0]["distance"] == 2                     # vs the baseline
    near = pool_verified(entries, records, control={"num_layers": 11, "ema": True, "xsa": False})
    assert near["xsa"]["rows"][0]["distance"] == 0                                               # vs its own stack


def test_numeric_rows_use_their_direction():
    rows = [_row("11L vs 9L", -0.004, "num_layers", from_value=9, to_value=11, intervention="num_layers_plus2"),
            _row("8L vs 9L", 0.006, "num_layers", from_value=9, to_value=8, direction=-1)]
    pooled = _matrix(rows[:1], rows[1:])
    items, _ = ev.leaderboard_items(CandidateIntervention("num_layers_plus2", "num_layers", "", 11),
                                    pooled["num_layers"])
    assert [round(i.mean, 6) for i in items] == [-0.004, -0.006]  # removing a layer hurt: adding helps
    assert items[0].sd == pytest.approx(math.sqrt(ev.TAU**2 + ev.SEED_SD**2))                    # 9 -> 11: exact
    assert items[1].sd == pytest.approx(items[0].sd * ev.REVERSED_FACTOR * ev.OUT_OF_RANGE_FACTOR)  # 9 -> 8
    fewer, _ = ev.leaderboard_items(CandidateIntervention("num_layers_minus2", "num_layers", "", 7),
                                    pooled["num_layers"])
    assert [round(i.mean, 6) for i in fewer] == [0.004, 0.006]


def test_categorical_level_takes_only_its_own_rows():
    pooled = _matrix([_row("+ LeakyReLU(0.5)^2", -0.002, "activation", from_value="relu2", to_value="leaky_relu2")])
    out = rank_candidates(CANDS, ablations=pooled)
    by = {c["name"]: c for c in out["candidates"]}
    assert by["act_leaky_relu2"]["evidence"][0]["source"] == "leaderboard"
    assert by["act_gelu"]["evidence"] == []
    assert by["act_leaky_relu2"]["rank"] == 1


def test_screen_decisions_confirmed_leaves_null_and_harmful_lower_inconclusive_stays():
    ledger = [{"intervention": "ema_0997", "decision": "confirmed", "mean_delta_bpb": -0.01},
              {"intervention": "xsa_last4", "decision": "harmful", "mean_delta_bpb": 0.004, "ci_low": 0.001,
               "ci_high": 0.007},
              {"intervention": "ln_scale", "decision": "inconclusive", "mean_delta_bpb": -0.002,
               "ci_low": -0.006, "ci_high": 0.002}]
    out = rank_candidates(CANDS, ledger=ledger)
    by = {c["name"]: c for c in out["candidates"]}
    assert "ema_0997" not in by and out["excluded"][0]["name"] == "ema_0997"
    assert by["xsa_last4"]["rank"] == len(by) and "our screen says harmful" in by["xsa_last4"]["reason"]
    ln = by["ln_scale"]
    assert ln["evidence"][0]["source"] == "experiments" and ln["evidence"][0]["sd"] == pytest.approx(0.008 / 3.92)
    assert "inconclusive" in ln["reason"] and "not measured on enough verified rows" in ln["reason"]
    assert "not measured" in out["transfer"]


def test_transfer_agreement_widens_screen_evidence():
    ledger = [{"intervention": "ln_scale", "decision": "inconclusive", "mean_delta_bpb": -0.002,
               "ci_low": -0.006, "ci_high": 0.002}]
    out = rank_candidates(CANDS, ledger=ledger, transfer={"normalisation": 0.5},
                          classes={"ln_scale": "normalisation"})
    ln = next(c for c in out["candidates"] if c["name"] == "ln_scale")
    assert ln["evidence"][0]["sd"] == pytest.approx(0.008 / 3.92 / 0.5)
    assert "agreement of class 'normalisation' 0.50" in ln["reason"]
    few = rank_candidates(CANDS, ledger=ledger, transfer={"normalisation": {"agreement": 0.0, "verdict": "too_few_rows"}},
                          classes={"ln_scale": "normalisation"})
    ln_few = next(c for c in few["candidates"] if c["name"] == "ln_scale")     # 0 of 1 row: no discount at all
    assert ln_few["evidence"][0]["sd"] == pytest.approx(0.008 / 3.92) and "not measured on enough" in ln_few["reason"]
    with pytest.raises(ValueError, match="must lie in"):
        rank_candidates(CANDS, ledger=ledger, transfer={"normalisation": 1.5}, classes={"ln_scale": "normalisation"})


def test_rows_of_one_record_count_once():
    rows = [_row("+ LeakyReLU^2", -0.002, "activation", from_value="relu2", to_value="leaky_relu2"),
            _row("LeakyReLU^2 delivers", -0.003, "activation", from_value="relu2", to_value="leaky_relu2",
                 metric="unknown")]
    pooled = _matrix(rows)
    (item,), _ = ev.leaderboard_items(CandidateIntervention("act_leaky_relu2", "activation", "", "leaky_relu2"),
                                      pooled["activation"])
    assert item.mean == pytest.approx(-0.0025) and item.sd == pytest.approx(math.sqrt(ev.TAU**2 + ev.SEED_SD**2))
    assert item.label.startswith("one record, 2 rows")


def test_scale_limited_evidence_carries_the_caveat():
    pooled = _matrix([_row("EMA", -0.0006, "ema")])
    ema = next(c for c in rank_candidates(CANDS, ablations=pooled)["candidates"] if c["name"] == "ema_0997")
    assert "scale caveat" in ema["reason"] and "proxy" in ema["reason"]


def test_never_tried_pairs_are_ranked_with_an_interaction_prior():
    pooled = _matrix([_row("EMA", -0.003, "ema"), _row("+ LN scale", -0.002, "ln_scale")])
    ident = {"never_tried_pairs": [["ema", "ln_scale"]], "verdict": {"status": "identified"}, "per_feature": {}}
    out = rank_candidates(CANDS, ablations=pooled, identifiability=ident)
    assert all("+" not in c["name"] for c in out["candidates"])
    pair = out["combinations"][0]
    assert set(pair["features"]) == {"ema", "ln_scale"} and "never tried together" in pair["reason"]
    a, b = (next(c for c in out["candidates"] if c["name"] == n) for n in ("ema_0997", "ln_scale"))
    inter = 0.25 * min(-a["mean_delta_bpb"], -b["mean_delta_bpb"])
    assert pair["mean_delta_bpb"] == pytest.approx(a["mean_delta_bpb"] + b["mean_delta_bpb"] + inter)
    assert pair["sd"] == pytest.approx(math.sqrt(a["sd"] ** 2 + b["sd"] ** 2 + 0.003**2))
    assert len(pair["parts"]) == 2 and pair["parts"][0]["evidence"] and pair["runnable"]


def test_combinations_reach_features_without_a_registry_intervention():
    pooled = _matrix([_row("+ SWA", -0.002, "swa"), _row("+ XSA", -0.003, "xsa")])
    ident = {"never_tried_pairs": [["swa", "xsa"], ["swa", "activation"]], "verdict": {"status": "identified"}}
    out = rank_candidates(CANDS, ablations=pooled, identifiability=ident)
    by = {c["name"]: c for c in out["combinations"]}
    assert set(by) == {"xsa_last4+add_swa", "act_gelu+add_swa"}  # activation's part: its best candidate
    assert not by["xsa_last4+add_swa"]["runnable"]
    assert out["combinations"][0]["name"] == "xsa_last4+add_swa"  # both parts have evidence of gain
    swa = next(p for p in by["xsa_last4+add_swa"]["parts"] if p["name"] == "add_swa")
    assert "r0: '+ SWA' -0.0020" in swa["evidence"][0]


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


def test_candidate_inputs_and_registry():
    cands = as_candidates([CandidateIntervention("a", "ema"), ("b", "xsa", "d"), {"name": "c", "feature": None}])
    assert [c.name for c in cands] == ["a", "b", "c"] and cands[2].feature == ""
    reg = registry_candidates()
    assert len(reg) >= 5 and all(c.name not in ("aa", "sanity_frozen_matrices") for c in reg)
    assert registry_classes()["act_leaky_relu2"] == "activation"


def test_cli_rejects_a_bad_transfer_file(tmp_path, capsys):
    bad = tmp_path / "transfer.json"
    bad.write_text('{"schema_version": 1, "agreement": 0.5}')
    assert main(["--transfer", str(bad), "--out", str(tmp_path / "r.json")]) != 0
    assert "needs a 'classes' object" in capsys.readouterr().err


def test_numeric_row_of_another_stretch_is_discounted_and_only_the_exact_one_is_not():
    rows = [_row("Softcap = 10", -0.003, "logit_softcap", from_value=15, to_value=10, direction=-1),
            _row("Softcap 30 -> 20", -0.002, "logit_softcap", from_value=30, to_value=20, direction=-1,
                 intervention="logit_softcap_20")]
    pooled = _matrix(rows[:1], rows[1:])
    far, near = ev.leaderboard_items(CandidateIntervention("logit_softcap_20", "logit_softcap", "", 20.0),
                                     pooled["logit_softcap"])[0]
    base = math.sqrt(ev.TAU**2 + ev.SEED_SD**2)
    assert (far.mean, near.mean) == (pytest.approx(-0.003), pytest.approx(-0.002))
    assert far.sd == pytest.approx(base * ev.OUT_OF_RANGE_FACTOR) and "another stretch" in far.label
    assert near.sd == pytest.approx(base) and "exact change" in near.label


def test_another_level_of_a_categorical_knob_is_no_evidence_and_a_reverse_row_is_flipped():
    rows = [_row("relu2 -> gelu", 0.004, "activation", from_value="relu2", to_value="gelu"),
            _row("leaky -> relu2 (ablated out)", 0.003, "activation", from_value="leaky_relu2", to_value="relu2")]
    pooled = _matrix(rows)
    items, _ = ev.leaderboard_items(CandidateIntervention("act_leaky_relu2", "activation", "", "leaky_relu2"),
                                    pooled["activation"])
    (item,) = items
    assert item.mean == pytest.approx(-0.003) and "other way round" in item.label


def test_a_verified_variant_of_the_change_enters_discounted():
    pooled = _matrix([_row("+ XSA on the last 3 layers", -0.002, "xsa", intervention=None)])
    (item,), _ = ev.leaderboard_items(CandidateIntervention("xsa_last4", "xsa", "", True), pooled["xsa"])
    assert item.sd == pytest.approx(math.sqrt(ev.TAU**2 + ev.SEED_SD**2) * ev.OUT_OF_RANGE_FACTOR)
    assert "a variant of the candidate's change" in item.label


def test_a_candidate_in_the_control_stack_is_not_recommended():
    from scripts.causal.select_interventions import in_stack_reasons

    names = [c.name for c in registry_candidates()]
    reasons = in_stack_reasons("11l_ema_leaky", "fast", names)
    assert "muon_wd_004" in reasons and "already part of stack" in reasons["muon_wd_004"]
    assert "act_leaky_relu2" in reasons and "muoneq_r" not in reasons
    out = rank_candidates(registry_candidates(), in_stack=reasons)
    ranked = {c["name"] for c in out["candidates"]}
    assert "muon_wd_004" not in ranked and "muoneq_r" in ranked
    (ex,) = [e for e in out["excluded"] if e["name"] == "muon_wd_004"]
    assert ex["in_stack"] and ex["reason"].startswith("in the stack")
    assert in_stack_reasons(None, "fast", names) == {}


def test_committed_ranking_puts_leaderboard_gains_above_prior_only():
    from pathlib import Path

    from scripts.causal.core.schema import read_json

    ranking = read_json(Path(__file__).resolve().parents[2] / "dags" / "cycle_0" / "ranking.json")
    cands = ranking["candidates"]
    prior_only = [c["rank"] for c in cands if not c["evidence"]]
    gains = [c for c in cands if any(e["source"] == "leaderboard" for e in c["evidence"])
             and all(e["mean"] < 0 for e in c["evidence"] if e["source"] == "leaderboard")]
    assert "act_leaky_relu2" in {c["name"] for c in gains}
    assert all(c["rank"] < min(prior_only) for c in gains)
    assert all("scale caveat" in c["reason"] for c in cands if c["name"] == "ema_0997")
