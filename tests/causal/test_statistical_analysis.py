"""Tests for statistical_analysis.py and power.py: reference values, invariants and the acceptance simulations."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.core.schema import PooledSigma
from scripts.causal.statistical_analysis import (
    adjust_pvalues,
    analyze,
    bh_adjust,
    holm_adjust,
    main,
    paired_deltas,
    pooled_sigma_from_aa,
    pooled_sigma_from_screens,
)
from scripts.causal.stats.paired_tests import wilcoxon_p as _wilcoxon_p
from scripts.causal.stats.power import mde_one_sided, power_one_sided

# R's `sleep` data: extra sleep (hours) for 10 patients under drug 1 (group 1) and drug 2 (group 2).
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def rows_from(control, treatments: dict, *, backend="torch", seeds=None):
    seeds = list(range(11, 11 + len(control))) if seeds is None else seeds
    runs = [{"intervention": "control", "arm": "control", "seed": s, "backend": backend, "status": "ok",
             **metrics(c)} for s, c in zip(seeds, control, strict=True)]
    for name, vals in treatments.items():
        runs += [{"intervention": name, "arm": "treatment", "seed": s, "backend": backend, "status": "ok",
                  **metrics(v)} for s, v in zip(seeds, vals, strict=True)]
    return runs


BYTES_PER_TOKEN = 2.5


def metrics(bpb):
    """Both metrics equal (no quantization gap) and a val_loss consistent with BYTES_PER_TOKEN."""
    return {"val_bpb": float(bpb), "post_quant_val_bpb": float(bpb),
            "val_loss": float(bpb) * math.log(2.0) * BYTES_PER_TOKEN}


def simulate_screen(rng, *, effects: dict, n=5, sigma_c=0.01, sigma_t=0.01, base_sd=0.05):
    """Shared control per seed: c = b + e_c, t = b + effect + e_t, so d = effect + e_t - e_c."""
    base = 1.5 + base_sd * rng.standard_normal(n)
    control = base + sigma_c * rng.standard_normal(n)
    treats = {name: base + eff + sigma_t * rng.standard_normal(n) for name, eff in effects.items()}
    return rows_from(control, treats)


def by_name(payload):
    return {r["intervention"]: r for r in payload["results"]}


# --- reference values ------------------------------------------------------------------------


def test_sleep_matches_r_paired_t():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833,
    # 95 percent CI -2.4598858 -0.7001142, mean difference -1.58; cor(g1, g2) = 0.7951702.
    r = by_name(analyze(rows_from(SLEEP_2, {"drug1": SLEEP_1}), alpha=0.05, correction="none"))["drug1"]
    assert r["n_pairs"] == 10 and r["df"] == 9
    assert r["mean_delta_bpb"] == pytest.approx(-1.58, abs=1e-12)
    assert r["t_improve"] == pytest.approx(-4.0621, abs=5e-5)
    assert r["p_improve"] == pytest.approx(0.002833 / 2, abs=5e-7)
    assert r["ci_low"] == pytest.approx(-2.4598858, abs=1e-7)
    assert r["ci_high"] == pytest.approx(-0.7001142, abs=1e-7)
    assert r["rho"] == pytest.approx(0.7951702, abs=1e-7)
    assert r["p_harm"] == pytest.approx(1 - 0.002833 / 2, abs=5e-7)


def test_pvalues_match_scipy_ttest_rel_and_margin_shift():
    rng = np.random.default_rng(3)
    c = 1.4 + 0.05 * rng.standard_normal(7)
    t = c - 0.004 + 0.003 * rng.standard_normal(7)
    margin = 0.001
    r = by_name(analyze(rows_from(c, {"x": t}), margin_bpb=margin, correction="none"))["x"]
    assert r["p_harm"] == pytest.approx(stats.ttest_rel(t, c, alternative="greater").pvalue, rel=1e-10)
    assert r["p_improve"] == pytest.approx(
        stats.ttest_1samp(t - c + margin, 0.0, alternative="less").pvalue, rel=1e-10)
    # the (1 - 2 alpha) interval ends where the one-sided tests at alpha flip
    ci = stats.ttest_rel(t, c).confidence_interval(0.98)
    assert (r["ci_consistent_low"], r["ci_consistent_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_holm_matches_hand_values_and_statsmodels():
    # hand / R: p.adjust(c(.01,.02,.03,.04,.05), "holm") = .05 .08 .09 .09 .09 ; "BH" = .05 x 5
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    np.testing.assert_allclose(holm_adjust(p), [0.05, 0.08, 0.09, 0.09, 0.09], atol=1e-12)
    np.testing.assert_allclose(bh_adjust(p), [0.05] * 5, atol=1e-12)
    rng = np.random.default_rng(0)
    for k in (1, 2, 7, 20):
        q = rng.uniform(size=k) ** 3
        np.testing.assert_allclose(holm_adjust(q), multipletests(q, method="holm")[1], atol=1e-14,
                                   err_msg=f"k={k} p={q}")
        # the trap: statsmodels' default is Holm-Sidak, which is NOT what we use
    q = np.array([0.001, 0.01, 0.02])
    assert not np.allclose(multipletests(q)[1], holm_adjust(q))


def test_unknown_correction_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown correction 'bonferoni'; valid choices: \['bh', 'holm', 'none'\]"):
        analyze(rows_from([1, 1, 1], {"x": [1, 1, 1]}), correction="bonferoni")
    with pytest.raises(ConfigError, match="valid choices"):
        adjust_pvalues([0.1], method="hs")
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        adjust_pvalues([1.2], method="holm")


def test_wilcoxon_exact_matches_scipy_and_floor():
    rng = np.random.default_rng(1)
    for n in range(1, 13):
        x = rng.standard_normal(n) + 0.5
        for alt in ("less", "greater"):
            assert _wilcoxon_p(x, alt) == pytest.approx(
                stats.wilcoxon(x, alternative=alt, method="exact").pvalue, abs=1e-12)
    assert _wilcoxon_p(-np.arange(1.0, 6.0), "less") == pytest.approx(2 ** -5)


def test_power_and_mde_match_statsmodels():
    for es, n, a in [(1.0, 5, 0.01), (3.0, 5, 0.0005), (0.5, 20, 0.05)]:
        ref = TTestPower().power(effect_size=es, nobs=n, alpha=a, alternative="larger")
        assert power_one_sided(effect=es * 0.01, sigma=0.01, n=n, alpha=a) == pytest.approx(ref, abs=1e-9)
    ref = TTestPower().solve_power(nobs=5, alpha=0.01, power=0.8, alternative="larger")
    assert mde_one_sided(sigma=0.02, n=5, alpha=0.01, margin=0.001) == pytest.approx(0.001 + 0.02 * ref, rel=1e-6)
    with pytest.raises(ConfigError, match="at least 2 pairs"):
        power_one_sided(effect=1, sigma=1, n=1, alpha=0.01)


# --- the gate ---------------------------------------------------------------------------------


def test_family_is_every_intervention_times_three_tests():
    """Issue 21 item 12: improvement, harm AND non-superiority (null) in one Holm family (K = 3m), so one FWER
    statement covers every call the report makes (on main the null tests were a second family: bound 2 alpha)."""
    rng = np.random.default_rng(5)
    runs = simulate_screen(rng, effects={"a": -0.02, "b": 0.0, "c": 0.015, "d": 0.0})
    out = analyze(runs, alpha=0.01)
    res = out["results"]
    assert out["family_size"] == 12 and out["family_tests"] == ["improve", "harm", "null"]
    raw = [p for r in res for p in (r["p_improve"], r["p_harm"], r["p_null"])]
    adj = holm_adjust(raw)
    got = [p for r in res for p in (r["p_adjusted_improve"], r["p_adjusted_harm"], r["p_adjusted_null"])]
    np.testing.assert_allclose(got, adj, atol=1e-15)
    assert out["power_alpha"] == pytest.approx(0.01 / 12)


def test_direction_aware_harmful_is_not_confirmed():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    better = [x - 0.05 + e for x, e in zip(c, [0.001, -0.002, 0.0015, 0.0, -0.001], strict=True)]
    worse = [x + 0.05 + e for x, e in zip(c, [0.001, -0.002, 0.0015, 0.0, -0.001], strict=True)]
    res = by_name(analyze(rows_from(c, {"better": better, "worse": worse}), alpha=0.01))
    assert res["better"]["decision"] == "confirmed" and res["better"]["direction"] == "improve"
    assert res["worse"]["decision"] == "harmful" and res["worse"]["direction"] == "harm"
    assert res["worse"]["p_adjusted"] == res["worse"]["p_adjusted_harm"] < 0.01
    assert res["better"]["p_adjusted"] == res["better"]["p_adjusted_improve"] < 0.01
    assert res["better"]["ci_high"] < 0 < res["worse"]["ci_low"]


def test_margin_blocks_small_improvements():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    t = [x - 0.01 + e for x, e in zip(c, [0.0001, -0.0002, 0.00015, 0.0, -0.0001], strict=True)]
    assert by_name(analyze(rows_from(c, {"x": t})))["x"]["decision"] == "confirmed"
    r = by_name(analyze(rows_from(c, {"x": t}), margin_bpb=0.02))["x"]
    assert r["decision"] != "confirmed" and r["p_improve"] > 0.5


def test_weak_evidence_is_inconclusive_with_the_seeds_it_needs():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    t = [x + e for x, e in zip(c, [-0.004, -0.001, -0.003, 0.001, -0.002], strict=True)]
    r = by_name(analyze(rows_from(c, {"x": t})))["x"]
    # p_improve 0.052 was "suggestive" before; it shows nothing at alpha = 0.01
    assert r["p_improve"] == pytest.approx(0.05227, abs=1e-5) and r["decision"] == "inconclusive"
    sd = float(np.std(np.array(t) - np.array(c), ddof=1))
    effect = 0.005 / (math.log(2.0) * BYTES_PER_TOKEN)  # the record bar in bpb
    assert r["power"] == pytest.approx(power_one_sided(effect=effect, sigma=sd, n=5, alpha=0.01 / 3), rel=1e-9)
    need = r["seeds_needed"]
    assert power_one_sided(effect=effect, sigma=sd, n=need, alpha=0.01 / 3) >= 0.8
    assert power_one_sided(effect=effect, sigma=sd, n=need - 1, alpha=0.01 / 3) < 0.8
    assert f"{need - 5} more seed(s) (n={need})" in r["message"] and "MDE" in r["message"]


def test_two_pairs_are_inconclusive_and_stay_in_the_family():
    r = by_name(analyze(rows_from([1.5, 1.6], {"x": [1.4, 1.51]})))["x"]
    assert r["decision"] == "inconclusive" and r["df"] == 1
    assert r["p_adjusted"] == 1.0 and "only 2 valid pair(s)" in r["message"]
    # the registered family keeps its size: an untested member enters Holm with p = 1
    assert analyze(rows_from([1.5, 1.6], {"x": [1.4, 1.51]}))["family_size"] == 3


def test_bit_identical_aa_is_a_determinism_check_and_cannot_be_pooled():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    r = by_name(analyze(rows_from(c, {"aa": c})))["aa"]
    assert r["decision"] == "determinism_check" and r["label"] == "bit-identical repeat"
    assert r["p_improve"] is None and r["p_harm"] is None and r["zero_variance"]
    assert r["sd_delta"] == 0.0 and r["wilcoxon_min_p"] == 1.0
    with pytest.raises(ConfigError, match="bit-identical"):
        analyze(rows_from(c, {"aa": c, "x": c}), pool_aa=True)


def test_failed_and_diverged_pairs_are_counted_never_dropped():
    c = [1.50, 1.52, 1.49, 1.51, 1.50, 1.53]
    t = [x - 0.05 + e for x, e in zip(c, [0.001, -0.002, 0.0015, 0.0, -0.001, 0.0005], strict=True)]
    runs = rows_from(c, {"x": t, "y": t})
    for row in runs:
        if row["intervention"] == "x" and row["seed"] == 12:
            row.update(status="diverged", val_bpb=None, error="loss is nan at step 40")
        if row["arm"] == "control" and row["seed"] == 16:
            row.update(status="failed", val_bpb=None, error="OOM")
    res = by_name(analyze(runs))
    x, y = res["x"], res["y"]
    assert x["n_pairs"] == 4 and x["n_failed"] == 2 and y["n_pairs"] == 5 and y["n_failed"] == 1
    assert x["failed_treatment_seeds"] == [12] and y["failed_treatment_seeds"] == []
    assert {(f["seed"], f["arm"], f["status"]) for f in x["failed_pairs"]} == {
        (12, "treatment", "diverged"), (16, "control", "failed")}
    # x improves strongly on the valid seeds, but an unstable change is never confirmed
    assert x["p_adjusted_improve"] < 0.01 and x["decision"] == "inconclusive"
    assert "failed on seeds [12]" in x["message"] and "2 failed pair(s)" in x["message"]
    assert y["decision"] == "confirmed"


def test_missing_arm_mixed_backends_duplicates():
    runs = rows_from([1.5, 1.6, 1.7], {"x": [1.4, 1.5, 1.6]})
    runs.append({"intervention": "control", "arm": "control", "seed": 99, "backend": "torch", "status": "ok",
                 "val_bpb": 1.5})
    r = by_name(analyze(runs))["x"]
    assert r["n_missing"] == 1 and r["missing_seeds"] == [99] and "only one arm" in r["message"]
    mixed = runs + rows_from([1.5, 1.6, 1.7], {"x": [1.4, 1.5, 1.6]}, backend="mlx")
    with pytest.raises(DataFormatError, match="mix backends"):
        analyze(mixed)
    assert by_name(analyze(mixed, backend="mlx"))["x"]["n_pairs"] == 3
    with pytest.raises(DataFormatError, match="duplicate treatment row for intervention 'x', seed 11"):
        analyze(runs + [dict(runs[3])])
    with pytest.raises(DataFormatError, match=r"runs\[0\]: missing field 'seed'"):
        analyze([{"intervention": "control", "arm": "control"}])


def test_pooled_sigma_honest_df():
    ps = pooled_sigma_from_aa([[0.01, -0.01, 0.0], [0.02, 0.0]])
    # SS = 2e-4 + 2e-4, df = 2 + 1
    assert ps.df == 3 and ps.sigma == pytest.approx(math.sqrt(4e-4 / 3))
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    t = [x - 0.01 + e for x, e in zip(c, [0.002, -0.002, 0.001, 0.0, -0.001], strict=True)]
    r = by_name(analyze(rows_from(c, {"x": t}), aa_sigma=ps, correction="none", effect_bpb=0.005))["x"]
    d = np.array(t) - np.array(c)
    var = (4 * d.var(ddof=1) + 3 * ps.sigma ** 2) / 7
    assert r["df"] == 7 and r["sigma_source"] == "pooled_aa"
    assert r["p_improve"] == pytest.approx(stats.t.cdf(d.mean() / math.sqrt(var / 5), 7), rel=1e-10)
    assert isinstance(ps, PooledSigma)
    # power/MDE use the pooled df with the actual number of pairs in the noncentrality
    lam = 0.005 / math.sqrt(var) * math.sqrt(5)
    assert r["power"] == pytest.approx(stats.nct.sf(stats.t.ppf(1 - 0.01, 7), 7, lam), rel=1e-8)
    # from earlier screens' runs: one group per screen, df = sum(n_g - 1)
    s1 = rows_from([1.5, 1.6, 1.7], {"aa": [1.51, 1.59, 1.70]})
    s2 = rows_from([1.5, 1.6, 1.7, 1.8], {"aa": [1.50, 1.61, 1.71, 1.79], "x": [1, 1, 1, 1]})
    pooled = pooled_sigma_from_screens([s1, {"runs": s2}])
    d1, d2 = np.array([0.01, -0.01, 0.0]), np.array([0.0, 0.01, 0.01, -0.01])
    ss = ((d1 - d1.mean()) ** 2).sum() + ((d2 - d2.mean()) ** 2).sum()
    assert pooled.df == 5 and pooled.sigma == pytest.approx(math.sqrt(ss / 5), rel=1e-9)


def test_wilcoxon_floor_is_reported():
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    r = by_name(analyze(rows_from(c, {"x": [v - 0.1 for v in c]})))["x"]
    assert r["wilcoxon_min_p"] == 2 ** -5 and r["wilcoxon_can_reach_alpha"] is False
    assert "Wilcoxon floor 2^-5" in r["message"]


def test_metric_choice_and_paired_deltas():
    runs = rows_from([1.5, 1.6, 1.7], {"x": [1.4, 1.5, 1.6]})
    for row in runs:
        row["post_quant_val_bpb"] = row["val_bpb"] + (0.2 if row["arm"] == "treatment" else 0.0)
    pd_ = paired_deltas(runs, metric="post_quant_val_bpb")["x"]
    np.testing.assert_allclose(pd_["delta"], [0.1, 0.1, 0.1])
    with pytest.raises(ConfigError, match="unknown metric"):
        analyze(runs, metric="train_loss")


# --- acceptance simulations --------------------------------------------------------------------


def test_aa_screens_familywise_error_at_most_alpha():
    """1000 A/A screens of 10 interventions x 5 seeds: P(any confirmed/harmful) <= alpha + 3 MC SE."""
    rng = np.random.default_rng(20240601)
    alpha, n_screens = 0.01, 1000
    hits = 0
    for _ in range(n_screens):
        out = analyze(simulate_screen(rng, effects={f"i{j}": 0.0 for j in range(10)}), alpha=alpha)
        hits += any(r["decision"] in ("confirmed", "harmful") for r in out["results"])
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_screens)
    assert hits / n_screens <= bound, f"FWER {hits / n_screens:.4f} > {bound:.4f}"


def test_planted_three_sigma_effect_confirmed_at_expected_power():
    """One -3 sigma_d effect among 3 nulls, 5 seeds: confirmed at the exact Bonferroni-step power of Holm."""
    rng = np.random.default_rng(7)
    sigma_d = math.sqrt(0.01 ** 2 + 0.01 ** 2)
    reps, alpha = 800, 0.01
    effects = {"planted": -3 * sigma_d, "n1": 0.0, "n2": 0.0, "n3": 0.0}
    got = sum(by_name(analyze(simulate_screen(rng, effects=effects), alpha=alpha))["planted"]["decision"]
              == "confirmed" for _ in range(reps)) / reps
    # Holm rejects the planted hypothesis (almost always the smallest p) iff p < alpha / K, K = 12
    expected = power_one_sided(effect=3.0, sigma=1.0, n=5, alpha=alpha / 12)
    assert 0.3 < expected < 0.6
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / reps) + 0.01, (got, expected)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_round_trip_and_error(tmp_path, capsys):
    c = [1.50, 1.52, 1.49, 1.51, 1.50]
    runs = rows_from(c, {"worse": [v + 0.05 + 0.001 * i for i, v in enumerate(c)]})
    inp = tmp_path / "runs.json"
    inp.write_text(json.dumps({"schema_version": 1, "screen": {"screen_id": "s1", "seeds": [11, 12, 13, 14, 15],
                                                               "alpha": 0.05}, "runs": runs}))
    out = tmp_path / "ablation_results.json"
    assert main(["--input", str(inp), "--output", str(out), "--alpha", "0.05"]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 2 and data["alpha"] == 0.05 and data["correction"] == "holm"
    assert data["exploratory"] is False and data["preregistration"]["source"] == "runs.json header"
    assert set(data["preregistration"]["unregistered"]) == {"effect_bpb", "effect_nats", "correction", "metric",
                                                           "aa_mode", "family", "margin_bpb", "pool_aa",
                                                           "sequential", "stack"}
    keys = {"intervention", "n_pairs", "n_failed", "mean_delta_bpb", "sd_delta", "ci_low", "ci_high", "p_improve",
            "p_harm", "p_adjusted", "decision", "mde", "power", "rho"}
    assert keys <= set(data["results"][0]) and data["results"][0]["decision"] == "harmful"
    assert data["screen"]["screen_id"] == "s1"
    assert main(["--input", str(inp), "--output", str(out), "--correction", "sidak"]) == 1
    assert "valid choices: ['bh', 'holm', 'none']" in capsys.readouterr().err


def test_module_help_runs():
    for cmd in ([sys.executable, "-m", "scripts.causal.statistical_analysis", "--help"],
                [sys.executable, str(REPO_ROOT / "scripts/causal/statistical_analysis.py"), "--help"]):
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "--margin-bpb" in proc.stdout


def test_cli_on_hand_written_screen_fixture(fixtures_dir, tmp_path):
    """aa (bit-identical) null, frozen matrices harmful, a change with one diverged seed counted and not confirmed."""
    out = tmp_path / "ablation_results.json"
    assert main(["--input", str(fixtures_dir / "statistics" / "runs.json"), "--output", str(out)]) == 0
    res = by_name(json.loads(out.read_text()))
    assert res["aa"]["decision"] == "determinism_check" and res["aa"]["mean_delta_bpb"] == 0.0
    assert res["sanity_frozen_matrices"]["decision"] == "harmful"
    assert res["sanity_frozen_matrices"]["mean_delta_bpb"] == pytest.approx(0.41204, abs=1e-9)  # 0.412 + mean noise 0.00004
    lr = res["act_leaky_relu2"]
    assert lr["n_pairs"] == 4 and lr["n_failed"] == 1 and lr["failed_treatment_seeds"] == [13]
    assert lr["decision"] == "inconclusive" and "failed on seeds [13]" in lr["message"]


@pytest.mark.parametrize("method", ["holm", "bh", "none"])
def test_adjustment_invariants(method):
    rng = np.random.default_rng(11)
    for k in (1, 3, 20):
        p = rng.uniform(size=k) ** 2
        adj = adjust_pvalues(p, method=method)
        order = np.argsort(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0), (method, p, adj)
        assert np.all(np.diff(adj[order]) >= -1e-15), (method, p, adj)  # monotone in the raw p
        assert np.all(adjust_pvalues(p, method="bh") <= adjust_pvalues(p, method="holm") + 1e-15)
