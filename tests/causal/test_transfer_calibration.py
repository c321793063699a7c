"""Tests for the transfer calibration stage: the calibration set, the agreement scores, the final metric, a run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from scripts.causal.core.schema import CalibrationItem
from scripts.causal.stats.pairing import FINAL_METRIC, metric_value, paired_deltas
from scripts.causal.transfer.agreement import agreement_sentence, score
from scripts.causal.transfer.calibration_set import build_calibration_set


def _entry(i, klass, knob, frm, to, delta, *, intervention=None, hardware="8xH100", record="r1", metric="post_quant"):
    return {"id": i, "class": klass, "change": f"row {i}", "knob": knob, "from": frm, "to": to,
            "intervention": intervention, "delta_bpb": delta, "delta_nats": None, "delta_stated": str(delta),
            "metric": metric, "stack": "", "stack_record": None, "reference": "previous row", "seeds": 1,
            "hardware": hardware, "quote": f"| row {i} | {delta} |", "file": "README.md", "line": i}


def _table(tmp_path, entries, record="2026-03-20_R1"):
    d = tmp_path / "verified"
    d.mkdir(exist_ok=True)
    (d / f"{record}.json").write_text(json.dumps({
        "schema_version": 1, "record_id": record, "track": "track_10min_16mb", "date": "2026-03-20",
        "files_read": ["README.md"], "no_ablation_statements": False, "note": "", "entries": entries}))
    return d


def test_calibration_set_takes_only_verified_single_changes_the_registry_makes_exactly(tmp_path):
    from scripts.causal.evidence.table import load_table

    d = _table(tmp_path, [
        _entry(1, "single_change", "activation", "relu2", "leaky_relu2", -0.003, intervention="act_leaky_relu2"),
        _entry(2, "single_change", "num_layers", 11, 9, 0.011, intervention="num_layers_plus2"),   # the other way
        _entry(3, "bundle", "num_layers", 10, 13, 0.09),                                           # +3 and MLP 4x->3x
        _entry(4, "quoted_estimate", None, None, None, -0.07),                                     # "reported as"
        _entry(5, "single_change", "sliding_window_eval", False, True, -0.033, intervention="sliding_eval",
               metric="sliding", hardware="1xH100"),
        _entry(6, "single_change", "mlp_mult", 3, 4, -0.008),                                      # no registry 3->4
    ])
    items, left = build_calibration_set(load_table(d))
    got = {i.entry: (i.intervention, round(i.h100_delta, 6), i.transfer_class, i.reversed) for i in items}
    assert got == {"2026-03-20_R1#1": ("act_leaky_relu2", -0.003, "architecture", False),
                   "2026-03-20_R1#2": ("num_layers_plus2", -0.011, "architecture", True),   # sign-flipped
                   "2026-03-20_R1#5": ("sliding_eval", -0.033, "evaluation [1xH100]", False)}  # own class
    assert all(i.quote.startswith("| row") and i.source.startswith("README.md:") for i in items)
    reasons = {u["entry"].split("#")[1]: u["reason"] for u in left}
    assert "a bundle entry says nothing about one change" in reasons["3"]
    assert "quoted_estimate" in reasons["4"] and "no registry intervention makes this change" in reasons["6"]


def _item(name, klass, h100, record="r", hardware="8xH100"):
    return CalibrationItem(name, klass, "f", record, f"{name} row", h100, "post_quant", None, hardware=hardware)


def test_rows_off_8xh100_stay_out_of_the_overall_figure():
    items = [_item("a", "architecture", -0.01), _item("b", "architecture [1xH100]", 0.01, hardware="1xH100")]
    sc = score(items, {"a": {"mean_delta_bpb": -0.02}, "b": {"mean_delta_bpb": -0.02}})
    assert (sc["overall"]["k_agree"], sc["overall"]["n_decisive"]) == (1, 1)
    assert sc["classes"]["architecture [1xH100]"]["n_decisive"] == 1


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
    assert "3 of 4 verified calibration rows" in agreement_sentence("architecture", arch, "fast")
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

    d = _table(tmp_path, [
        _entry(1, "single_change", "activation", "relu2", "leaky_relu2", -0.003, intervention="act_leaky_relu2"),
        _entry(2, "single_change", "sliding_window_eval", False, True, -0.033, intervention="sliding_eval",
               metric="sliding"),
        _entry(3, "bundle", "num_layers", 9, 8, 0.036)])
    kw = dict(evidence_dir=d, presets=["tiny"], seeds=[1, 2, 3], output_dir=tmp_path / "out", threads=1,
              progress=False, log=lambda _: None, overrides=tiny_corpus.overrides())
    payload = run(**kw)
    rows = {r["intervention"]: r for r in payload["presets"]["tiny"]["score"]["rows"]}
    assert set(rows) == {"act_leaky_relu2", "sliding_eval"}
    assert rows["sliding_eval"]["proxy_delta"] < 0  # the sliding score is compared with the control's plain one
    assert rows["sliding_eval"]["quote"].startswith("| row 2") and rows["sliding_eval"]["source"] == "README.md:2"
    assert any("bundle" in u["reason"] for u in payload["left_out"])
    written = json.loads((tmp_path / "out" / "transfer_tiny.json").read_text())
    assert written["classes"]["sliding_eval"]["class"] == "evaluation"
    md = (tmp_path / "out" / "transfer_calibration.md").read_text()
    assert md.startswith("# Proxy-to-H100") and "| row 1 | -0.003 |".replace("|", "\\|") in md
    # a second call reuses every run from the ledger and gives the same scores
    assert run(**kw)["presets"]["tiny"]["score"] == payload["presets"]["tiny"]["score"]
    # without the ledger, the committed runs.json is reused (same cell, same config hash): nothing is trained
    (tmp_path / "out" / "ledger.sqlite").unlink()
    logs: list[str] = []
    again = run(**{**kw, "reuse_only": ["tiny"], "log": logs.append})
    assert again["presets"]["tiny"]["score"] == payload["presets"]["tiny"]["score"]
    assert any("9 runs reused" in line for line in logs) and any("0 runs executed" in line for line in logs)


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
    assert "architecture changes agreed in sign with H100 in 4 of 8 verified calibration rows at `fast`" in text
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
