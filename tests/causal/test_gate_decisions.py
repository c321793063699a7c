"""The gate says only what the data show: inconclusive vs null, the pre-registration, calibration, the ledger."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import Preregistration
from scripts.causal.screen.ledger import Ledger
from scripts.causal.statistical_analysis import analyze, load_runs, main, record_decisions
from scripts.causal.stats.calibration import aa_repeat_check
from scripts.causal.stats.effect import bytes_per_token_from_runs, nats_to_bpb, record_bar_bpb
from scripts.causal.stats.power import power_one_sided

BPT = 2.5  # bytes per token of the synthetic val split


def rows(control, treatments, *, seeds=None, gap=0.0):
    seeds = list(range(11, 11 + len(control))) if seeds is None else seeds

    def row(name, arm, s, v):
        return {"intervention": name, "arm": arm, "seed": s, "backend": "torch", "status": "ok", "val_bpb": v,
                "post_quant_val_bpb": v + gap, "val_loss": v * math.log(2.0) * BPT}
    out = [row("control", "control", s, float(c)) for s, c in zip(seeds, control, strict=True)]
    for name, vals in treatments.items():
        out += [row(name, "treatment", s, float(v)) for s, v in zip(seeds, vals, strict=True)]
    return out


def by_name(payload):
    return {r["intervention"]: r for r in payload["results"]}


@pytest.fixture
def example(fixtures_dir):
    return load_runs(fixtures_dir / "statistics" / "example_cycle1_runs.json")


def test_powerless_model_dim_up_is_inconclusive_with_the_seeds_it_needs(example):
    out = analyze(example)
    r = by_name(out)["model_dim_up"]
    # post-quant delta +0.0008 bpb, CI [-0.0097, +0.0113]: far too wide to rule out the record bar
    assert r["decision"] == "inconclusive" and r["n_pairs"] == 5
    assert r["mean_delta_bpb"] == pytest.approx(0.000800, abs=5e-6)
    assert r["ci_low"] == pytest.approx(-0.00968, abs=5e-5) and r["ci_high"] == pytest.approx(0.01128, abs=5e-5)
    assert out["family"] == ["ema_0997", "model_dim_up"] and out["family_size"] == 6  # no calibration arm in K
    assert out["power_alpha"] == pytest.approx(0.01 / 6)
    eff = out["effect"]["bpb"]
    assert eff == pytest.approx(0.005 / (math.log(2) * 2.44262), rel=1e-5) and "record bar" in out["effect"]["name"]
    assert r["mde"] == pytest.approx(0.02959, abs=5e-5) and r["power"] == pytest.approx(0.0071, abs=5e-4)  # K = 6
    assert r["seeds_needed"] == 121
    # cross-check with statsmodels: n solving power 0.8 at the effect, per-test level alpha/K
    n_sm = TTestPower().solve_power(effect_size=eff / r["sd_delta"], alpha=0.01 / 6, power=0.8, alternative="larger")
    assert math.ceil(n_sm) == 121
    assert "116 more seed(s) (n=121)" in r["message"]
    assert by_name(out)["ema_0997"]["decision"] == "harmful"


def test_clear_null_at_high_n():
    rng = np.random.default_rng(5)
    c = 1.5 + 0.01 * rng.standard_normal(40)
    t = c + 0.0002 * rng.standard_normal(40)  # tight around 0, sd of d = 0.0002 bpb
    out = analyze(rows(c, {"x": t}), alpha=0.01)
    r = by_name(out)["x"]
    eff = record_bar_bpb(BPT)
    assert r["decision"] == "null" and r["improve_upper"] < eff
    assert r["ci_low"] > -eff and r["p_adjusted_null"] < 0.01
    # the same mean with the noise of a small screen is inconclusive, not null
    small = analyze(rows(c[:5], {"x": c[:5] + 0.004 * rng.standard_normal(5)}), alpha=0.01)
    assert by_name(small)["x"]["decision"] == "inconclusive"


def test_null_equals_upper_bound_rule_without_correction():
    rng = np.random.default_rng(8)
    for _ in range(30):
        c = 1.5 + 0.01 * rng.standard_normal(8)
        t = c + rng.normal(0.0, 0.002) + 0.001 * rng.standard_normal(8)
        r = by_name(analyze(rows(c, {"x": t}), correction="none"))["x"]
        if r["decision"] in ("null", "inconclusive"):
            assert (r["decision"] == "null") == (r["improve_upper"] < record_bar_bpb(BPT))


def test_mismatched_alpha_is_refused_and_exploratory_says_so(tmp_path, capsys):
    data = {"schema_version": 1, "screen": {"screen_id": "s1", "seeds": [11, 12, 13, 14, 15], "alpha": 0.01,
                                            "margin_bpb": 0.0, "correction": "holm", "metric": "post_quant_val_bpb",
                                            "interventions": ["aa", "x"]},
            "runs": rows([1.5, 1.52, 1.49, 1.51, 1.5], {"x": [1.45, 1.47, 1.44, 1.46, 1.45], "aa": [1.5] * 5})}
    with pytest.raises(ConfigError, match=r"alpha: registered 0.01, requested 0.05.*--exploratory"):
        analyze(data, alpha=0.05)
    with pytest.raises(ConfigError, match=r"metric: registered 'post_quant_val_bpb', requested 'val_bpb'"):
        analyze(data, metric="val_bpb")
    assert analyze(data, alpha=0.01)["exploratory"] is False  # the registered value is fine
    loose = analyze(data, alpha=0.05, exploratory=True)
    assert loose["exploratory"] is True and loose["alpha"] == 0.05
    assert loose["preregistration"]["deviations"] == [{"field": "alpha", "registered": 0.01, "used": 0.05}]
    inp = tmp_path / "runs.json"
    inp.write_text(json.dumps(data))
    assert main(["--input", str(inp), "--output", str(tmp_path / "a.json"), "--alpha", "0.05"]) == 1
    assert "--exploratory" in capsys.readouterr().err
    assert main(["--input", str(inp), "--output", str(tmp_path / "a.json"), "--alpha", "0.05", "--exploratory"]) == 0
    assert "EXPLORATORY" in capsys.readouterr().out


def test_unregistered_seed_or_treatment_is_refused():
    base = rows([1.5, 1.52, 1.49, 1.51], {"x": [1.45, 1.47, 1.44, 1.46], "y": [1.5, 1.5, 1.5, 1.5]})
    with pytest.raises(DataFormatError, match=r"seeds \[14\] that were not pre-registered"):
        analyze({"screen": {"seeds": [11, 12, 13], "interventions": ["x", "y"]}, "runs": base})
    with pytest.raises(DataFormatError, match=r"treatments \['y'\] are neither in the pre-registered family"):
        analyze({"screen": {"seeds": [11, 12, 13, 14], "interventions": ["x"]}, "runs": base})


def test_prereg_argument_and_family_from_header():
    data = rows([1.5, 1.52, 1.49, 1.51, 1.5], {"x": [1.4, 1.42, 1.39, 1.41, 1.4], "sanity_frozen_matrices":
                                               [2.0, 2.02, 1.99, 2.01, 2.0], "aa": [1.5, 1.52, 1.49, 1.51, 1.5]})
    out = analyze(data, prereg=Preregistration(alpha=0.01, family=("x",), seeds=(11, 12, 13, 14, 15)))
    res = by_name(out)
    assert out["family_size"] == 3 and out["exploratory"] is False and out["preregistration"]["source"] == "argument"
    assert res["x"]["in_family"] and not res["aa"]["in_family"] and res["sanity_frozen_matrices"]["calibration"]
    assert res["sanity_frozen_matrices"]["decision"] == "harmful"
    # bit-identical aa on a deterministic backend: the repeat check, field by field
    assert out["calibration"]["aa"]["mode"] == "repeat" and out["calibration"]["aa"]["passed"]
    assert out["calibration"]["sanity_frozen_matrices"]["passed"]


def test_aa_repeat_check_is_bit_for_bit():
    r = rows([1.5], {"aa": [1.5]})
    assert aa_repeat_check(r)["passed"] and aa_repeat_check(r)["seeds"] == [11]
    r[1]["post_quant_val_bpb"] = 1.5 + 1e-15
    res = aa_repeat_check(r)
    assert not res["passed"] and res["mismatches"][0]["field"] == "post_quant_val_bpb"
    assert not aa_repeat_check(rows([1.5], {"x": [1.5]}))["passed"]  # nothing to compare is not a pass


def test_metric_default_is_post_quant_and_gap_is_reported():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    data = rows(c, {"x": [v - 0.01 for v in c]})
    for row, e in zip((r for r in data if r["arm"] == "treatment"), [0.001, -0.001, 0.0005, 0.0, -0.0005],
                      strict=True):
        row["post_quant_val_bpb"] = row["val_bpb"] + 0.03 + e  # hurts quantization: worse after round trip
    r = by_name(analyze(data))["x"]
    assert r["mean_delta_bpb"] == pytest.approx(0.02) and r["decision"] == "harmful"
    assert r["mean_delta_val_bpb"] == pytest.approx(-0.01) and r["mean_quant_gap_delta"] == pytest.approx(0.03)


def test_effect_conversion_and_bytes_per_token():
    assert nats_to_bpb(0.005, bytes_per_token=2.44) == pytest.approx(0.005 / (math.log(2) * 2.44))
    assert record_bar_bpb(2.44) == pytest.approx(0.002956, abs=1e-6)  # "about 0.003 bpb at sp1024"
    assert bytes_per_token_from_runs(rows([1.5], {})) == pytest.approx(BPT)
    bad = rows([1.5, 1.6], {})
    bad[1]["val_loss"] *= 1.01
    with pytest.raises(DataFormatError, match="disagree on bytes per token"):
        bytes_per_token_from_runs(bad)
    with pytest.raises(DataFormatError, match="pass the effect of interest explicitly"):
        bytes_per_token_from_runs([{"val_bpb": 1.0}])


def test_decisions_are_written_to_the_ledger(tmp_path, example):
    out = analyze(example)
    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.register_screen("example-cycle1-screen", {"seeds": [11, 12, 13, 14, 15]})
        assert record_decisions(led, out) == 4
        got = {d["intervention"]: d for d in led.decisions("example-cycle1-screen")}
    assert got["model_dim_up"]["decision"] == "inconclusive"
    assert got["model_dim_up"]["result"]["analysis"]["metric"] == "post_quant_val_bpb"


def test_power_at_effect_of_interest_is_exact():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    t = [v - 0.001 + e for v, e in zip(c, [0.002, -0.002, 0.001, 0.0, -0.001], strict=True)]
    r = by_name(analyze(rows(c, {"x": t}), effect_bpb=0.004))["x"]
    assert r["power"] == pytest.approx(power_one_sided(effect=0.004, sigma=r["sd_delta"], n=5, alpha=0.01 / 3),
                                       rel=1e-12)


def test_aa_repeat_run_is_decided_by_its_bit_identity_check():
    import math

    from scripts.causal.stats.analysis import analyze

    def row(name, arm, seed, v):
        return {"intervention": name, "arm": arm, "seed": seed, "backend": "torch", "status": "ok", "val_bpb": v,
                "post_quant_val_bpb": v, "val_loss": v * math.log(2) * 2.44}

    runs = [row("control", "control", s, 2.0 + 0.01 * s) for s in (1, 2, 3)]
    runs += [row("x", "treatment", s, 2.0 + 0.01 * s - 0.001 * (s % 2)) for s in (1, 2, 3)]
    header = {"screen_id": "s", "seeds": [1, 2, 3], "interventions": ["aa", "x"], "alpha": 0.01, "margin_bpb": 0.0,
              "correction": "holm", "metric": "post_quant_val_bpb", "aa_mode": "repeat"}
    same = analyze({"screen": header, "runs": runs + [row("aa", "treatment", 1, 2.01)]})
    aa = next(r for r in same["results"] if r["intervention"] == "aa")
    assert aa["decision"] == "determinism_check" and aa["label"] == "bit-identical repeat"
    assert "bit-identical repeat" in aa["reason"] and same["calibration"]["aa"]["passed"]
    off = analyze({"screen": header, "runs": runs + [row("aa", "treatment", 1, 2.0100001)]})
    aa = next(r for r in off["results"] if r["intervention"] == "aa")
    assert aa["label"] == "repeat differs" and "not bit-reproducible" in aa["reason"]
    assert [r["intervention"] for r in same["results"] if r["in_family"]] == ["x"]
