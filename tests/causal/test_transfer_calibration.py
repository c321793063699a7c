"""Tests for the transfer calibration stage: the calibration set, the agreement scores, the final metric, a run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from scripts.causal.core.schema import CalibrationItem, CandidateIntervention
from scripts.causal.stats.pairing import FINAL_METRIC, metric_value, paired_deltas
from scripts.causal.transfer.agreement import agreement_sentence, score
from scripts.causal.transfer.calibration_set import build_calibration_set


def _row(change, delta, feature, *, to=None, frm=None, direction=1, record="r1", metric="post_quant"):
    return {"change": change, "delta_bpb": delta, "kind": "ablation", "features": [feature], "from_value": frm,
            "to_value": to, "direction": direction, "metric": metric, "record_id": record, "source": "table"}


CANDS = [CandidateIntervention("act_leaky", "activation", "", "leaky_relu2"),
         CandidateIntervention("act_gelu", "activation", "", "gelu"),
         CandidateIntervention("layers_up", "num_layers", "", 11),
         CandidateIntervention("int6", "quant_bits", "", 6),
         CandidateIntervention("sliding", "sliding_window_eval", "", True)]
CLASSES = {"act_leaky": "architecture", "act_gelu": "architecture", "layers_up": "architecture",
           "int6": "quantization_export", "sliding": "evaluation"}


def test_calibration_set_maps_rows_by_level_and_direction():
    records = [{"record_id": "r1", "ablations": [
        _row("+ LeakyReLU(0.5)^2", -0.003, "activation", to="leaky_relu2"),
        _row("relu^2 MLP", -0.02, "activation", to="relu2"),            # no registry level relu2
        _row("10 layers", -0.011, "num_layers", frm=9.0, to=10.0),       # same way as +2 layers
        _row("8 layers", -0.036, "num_layers", frm=9.0, to=8.0, direction=-1),  # the other way: listed
        _row("13 layers", 0.09, "num_layers", frm=11.0, to=13.0),        # same way, past the entry's 9 -> 11
        _row("int6 blocks", 0.0015, "quant_bits", frm=8.0, to=6.0, direction=-1),
        _row("sliding stride 64", -0.033, "sliding_window_eval", to=True, metric="sliding"),
        _row("doc-isolated attention", -0.011, "varlen_attention", to=True),  # no registry entry
    ]}]
    items, unexpressed = build_calibration_set(records, candidates=CANDS, classes=CLASSES)
    got = {(i.intervention, i.change): (round(i.h100_delta, 6), i.in_range, i.transfer_class) for i in items}
    assert got == {
        ("act_leaky", "+ LeakyReLU(0.5)^2"): (-0.003, True, "architecture"),
        ("layers_up", "10 layers"): (-0.011, True, "architecture"),
        ("layers_up", "13 layers"): (0.09, False, "architecture"),
        # int6 lowers quant_bits: the pooled delta (effect of raising bits) is flipped back to the row's +0.0015
        ("int6", "int6 blocks"): (0.0015, True, "quantization_export"),
        ("sliding", "sliding stride 64"): (-0.033, True, "evaluation"),
    }
    reasons = {u["change"]: u["reason"] for u in unexpressed}
    assert "no registry entry for 'relu2'" in reasons["relu^2 MLP"]
    assert "the other direction" in reasons["8 layers"]
    assert "no registry intervention for feature 'varlen_attention'" in reasons["doc-isolated attention"]


def _item(name, klass, h100, record="r"):
    return CalibrationItem(name, klass, "f", record, f"{name} row", h100, "post_quant", None)


def test_score_counts_sign_agreement_on_decisive_rows_and_fits_over_interventions():
    items = [_item("a", "architecture", -0.010), _item("a", "architecture", -0.004, "r2"),
             _item("b", "architecture", 0.005), _item("c", "architecture", -0.001),  # |H100| < 0.002: not counted
             _item("d", "architecture", -0.020), _item("e", "evaluation", -0.030), _item("z", "averaging", 0.01)]
    proxy = {"a": {"mean_delta_bpb": -0.02, "ci_low": -0.03, "ci_high": -0.01, "decision": "confirmed"},
             "b": {"mean_delta_bpb": -0.01}, "c": {"mean_delta_bpb": 0.004}, "d": {"mean_delta_bpb": -0.05},
             "e": {"mean_delta_bpb": -0.02}}
    sc = score(items, proxy)
    arch = sc["classes"]["architecture"]
    # decisive rows: a (x2, agree), b (disagree), d (agree) -> 3 of 4
    assert (arch["k_agree"], arch["n_decisive"], arch["n_rows"]) == (3, 4, 5)
    assert arch["agreement"] == pytest.approx(0.75)
    ci = stats.binomtest(3, 4).proportion_ci(0.95, method="exact")
    assert arch["agreement_ci"] == pytest.approx([ci.low, ci.high])
    assert arch["verdict"] == "poor"  # below the 80% target
    # over interventions: a's two H100 rows are averaged first
    x, y = np.array([-0.02, -0.01, 0.004, -0.05]), np.array([-0.007, 0.005, -0.001, -0.02])
    assert arch["n_interventions"] == 4
    assert arch["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert arch["slope"] == pytest.approx(stats.linregress(x, y).slope)
    assert sc["classes"]["evaluation"]["verdict"] == "too_few_rows"
    assert sc["classes"]["averaging"]["verdict"] == "unmeasured" and sc["not_screened"] == ["z"]
    assert "3 of 4 calibration rows" in agreement_sentence("architecture", arch, "fast")
    assert "not to be trusted" in agreement_sentence("architecture", arch, "fast")
    assert "not measured" in agreement_sentence("averaging", sc["classes"]["averaging"], "fast")
    assert (arch["ceiling_k"], arch["ceiling"]) == (4, 1.0)  # every H100 row of one intervention points one way


def test_ceiling_counts_the_larger_side_of_an_intervention_whose_h100_rows_disagree():
    # "n" measured on three stacks: -0.07, -0.03, +0.09. One proxy delta can agree with two of them at most.
    items = [_item("n", "architecture", -0.07), _item("n", "architecture", -0.03, "r2"),
             _item("n", "architecture", 0.09, "r3"), _item("m", "architecture", -0.004),
             _item("m", "architecture", 0.001, "r2")]  # |H100| < 0.002: outside the ceiling as well
    arch = score(items, {"n": {"mean_delta_bpb": 0.01}, "m": {"mean_delta_bpb": -0.01}})["classes"]["architecture"]
    assert (arch["k_agree"], arch["ceiling_k"], arch["n_decisive"]) == (2, 3, 4)
    assert arch["ceiling"] == pytest.approx(0.75)
    sentence = agreement_sentence("architecture", arch, "fast")
    assert "no proxy can agree with more than 3 of these 4 rows" in sentence


def test_final_metric_takes_the_last_stage_that_ran():
    assert metric_value({"post_quant_val_bpb": 2.5, "sliding_val_bpb": None}, FINAL_METRIC) == 2.5
    assert metric_value({"post_quant_val_bpb": 2.5, "sliding_val_bpb": 2.4}, FINAL_METRIC) == 2.4
    assert metric_value({"post_quant_val_bpb": 2.5, "sliding_val_bpb": 2.4, "ttt_val_bpb": 2.3}, FINAL_METRIC) == 2.3
    assert metric_value({"post_quant_val_bpb": float("nan")}, FINAL_METRIC) is None
    runs = [{"intervention": "control", "arm": "control", "seed": s, "backend": "torch", "status": "ok",
             "post_quant_val_bpb": 2.5 + s / 100, "sliding_val_bpb": None} for s in (1, 2, 3)]
    runs += [{"intervention": "sliding_eval", "arm": "treatment", "seed": s, "backend": "torch", "status": "ok",
              "post_quant_val_bpb": 2.5 + s / 100, "sliding_val_bpb": 2.48 + s / 100} for s in (1, 2, 3)]
    # under the post-quant metric an eval-only change compares a stage with itself; the final metric does not
    assert np.allclose(paired_deltas(runs)["sliding_eval"]["delta"], 0.0)
    assert np.allclose(paired_deltas(runs, metric=FINAL_METRIC)["sliding_eval"]["delta"], -0.02)


@pytest.mark.slow
def test_transfer_calibration_runs_a_small_set_end_to_end(tmp_path, tiny_corpus, one_torch_thread):
    from scripts.causal.transfer_calibration import run

    matrix = tmp_path / "interventions.json"
    matrix.write_text(json.dumps({"schema_version": 2, "records": [{"record_id": "r1", "ablations": [
        _row("+ LeakyReLU(0.5)^2", -0.003, "activation", to="leaky_relu2"),
        _row("sliding stride 64", -0.033, "sliding_window_eval", to=True, metric="sliding"),
        _row("8 layers", -0.036, "num_layers", frm=9.0, to=8.0, direction=-1)]}]}))
    payload = run(matrix_path=matrix, presets=["tiny"], seeds=[1, 2, 3], output_dir=tmp_path / "out", threads=1,
                  progress=False, log=lambda _: None, overrides=tiny_corpus.overrides())
    rows = {r["intervention"]: r for r in payload["presets"]["tiny"]["score"]["rows"]}
    assert set(rows) == {"act_leaky_relu2", "sliding_eval"}
    assert rows["sliding_eval"]["proxy_delta"] < 0  # the sliding score is compared with the control's plain one
    assert any("other direction" in u["reason"] for u in payload["unexpressed"])
    written = json.loads((tmp_path / "out" / "transfer_tiny.json").read_text())
    assert written["classes"]["sliding_eval"]["class"] == "evaluation"
    assert (tmp_path / "out" / "transfer_calibration.md").read_text().startswith("# Proxy-to-H100")
    # a second call reuses every run from the ledger and gives the same scores
    again = run(matrix_path=matrix, presets=["tiny"], seeds=[1, 2, 3], output_dir=tmp_path / "out", threads=1,
                progress=False, log=lambda _: None, overrides=tiny_corpus.overrides())
    assert again["presets"]["tiny"]["score"] == payload["presets"]["tiny"]["score"]


def test_report_header_states_mde_power_and_each_class_agreement(tmp_path):
    from scripts.causal.core.schema import write_json
    from scripts.causal.transfer.sensitivity import load_transfer, screen_sensitivity, sensitivity_lines

    write_json(tmp_path / "transfer_fast.json", {"preset": "fast", "classes": {
        "architecture": {"agreement": 0.5, "k_agree": 4, "n_decisive": 8, "verdict": "poor", "agreement_ci": [0.16, 0.84]},
        "evaluation": {"agreement": 0.9, "k_agree": 27, "n_decisive": 30, "verdict": "good", "agreement_ci": [0.73, 0.98]}}})
    transfer = load_transfer(tmp_path, "fast")
    assert load_transfer(tmp_path, "small_long") is None
    decisions = [{"intervention": "act_leaky_relu2", "mde": 0.025, "power": 0.01},
                 {"intervention": "sliding_eval", "mde": 0.031, "power": 0.02},
                 {"intervention": "aa", "mde": 0.5, "power": 0.0}]  # calibration arms are left out
    s = screen_sensitivity(decisions, {"bpb": 0.003, "name": "record bar"}, transfer, "fast",
                           {"act_leaky_relu2": "architecture", "sliding_eval": "evaluation"})
    assert (s["mde_min"], s["mde_max"], s["power_max"]) == (0.025, 0.031, 0.02)
    text = "\n".join(sensitivity_lines(s))
    assert "MDE) is 0.0250-0.0310 bpb" in text and "says nothing about an effect of 0.0030 bpb" in text
    assert "architecture changes agreed in sign with H100 in 4 of 8 calibration rows at `fast`" in text
    assert "not to be trusted from the proxy" in text.split("architecture changes")[1].split("\n")[0]
    assert "not to be trusted" not in text.split("evaluation changes")[1].split("\n")[0]
    none = "\n".join(sensitivity_lines(screen_sensitivity(decisions, None, None, "screen", {})))
    assert "no calibration for this preset" in none and "--presets screen" in none


def test_preset_specs_take_the_first_n_seeds():
    from scripts.causal.core.errors import ConfigError
    from scripts.causal.transfer_calibration import preset_seeds

    assert preset_seeds("fast", (1, 2, 3, 4, 5)) == ("fast", (1, 2, 3, 4, 5))
    assert preset_seeds("small_long@3", (1, 2, 3, 4, 5)) == ("small_long", (1, 2, 3))
    for bad in ("small_long@2", "small_long@6", "small_long@x"):
        with pytest.raises(ConfigError, match="NAME@N"):
            preset_seeds(bad, (1, 2, 3, 4, 5))


def test_record_track_rows_are_scored_apart():
    import dataclasses

    items = [dataclasses.replace(_item("a", "architecture", -0.01), track="track_10min_16mb"),
             dataclasses.replace(_item("b", "architecture", 0.01), track="track_non_record_16mb")]
    sc = score(items, {"a": {"mean_delta_bpb": -0.02}, "b": {"mean_delta_bpb": -0.02}})
    assert (sc["classes"]["architecture"]["k_agree"], sc["classes"]["architecture"]["n_decisive"]) == (1, 2)
    rec = sc["record_track"]["classes"]["architecture"]
    assert (rec["k_agree"], rec["n_decisive"]) == (1, 1)


def test_final_metric_analysis_shows_the_pre_quant_delta_beside_it():
    from scripts.causal.stats.analysis import analyze

    runs = []
    for s in (1, 2, 3, 4, 5):
        base = {"seed": s, "backend": "torch", "status": "ok", "val_bpb": 2.5 + s / 100}
        runs.append({**base, "intervention": "control", "arm": "control", "post_quant_val_bpb": 2.501 + s / 100})
        runs.append({**base, "intervention": "sliding_eval", "arm": "treatment", "post_quant_val_bpb": 2.501 + s / 100,
                     "sliding_val_bpb": 2.481 + s / 100 + (s % 2) * 1e-4})
    row = analyze(runs, metric=FINAL_METRIC, alpha=0.01, correction="holm", margin_bpb=0.0,
                  effect_bpb=0.003)["results"][0]
    assert row["mean_delta_bpb"] == pytest.approx(-0.02 + 6e-5, abs=1e-9)  # sliding vs the control's round trip
    assert row["mean_delta_val_bpb"] == 0.0  # an eval-only change leaves the pre-quant score untouched
