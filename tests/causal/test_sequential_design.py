"""Tests for sequential_design.py: OBF spending, MC-calibrated t boundaries, type-I error, allocation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.statistical_analysis import analyze
from scripts.causal.stats.sequential import (
    design_at_looks,
    design_group_sequential,
    first_crossing,
    obf_spending,
    simulate_sequential,
    t_paths,
)
from scripts.causal.stats.sequential_plan import sequential_payload, sequential_plan


def test_obf_spending_hand_values():
    # alpha(t) = 2 - 2 Phi(z_{0.975} / sqrt(t)); t = 0.5: 2 - 2 Phi(1.959964 / 0.707107 = 2.771808) = 0.005575
    assert float(obf_spending(1.0, 0.05)) == pytest.approx(0.05, abs=1e-12)
    assert float(obf_spending(0.5, 0.05)) == pytest.approx(2 - 2 * stats.norm.cdf(2.771808), abs=1e-7)
    assert float(obf_spending(0.5, 0.05)) == pytest.approx(0.005575, abs=2e-6)
    s = obf_spending(np.linspace(0.05, 1, 20), 0.01)
    assert np.all(np.diff(s) > 0) and float(obf_spending(0.0, 0.05)) == 0.0


def test_t_paths_match_scipy():
    x = np.random.default_rng(0).standard_normal((4, 7))
    t = t_paths(x, (3, 5, 7))
    for i in range(4):
        for j, n in enumerate((3, 5, 7)):
            assert t[i, j] == pytest.approx(stats.ttest_1samp(x[i, :n], 0.0).statistic, rel=1e-10)


def test_design_is_deterministic_and_final_bound_above_fixed_critical():
    a = design_group_sequential(n0=3, n_max=10, alpha=0.05, n_sim=50_000, seed=1)
    b = design_group_sequential(n0=3, n_max=10, alpha=0.05, n_sim=50_000, seed=1)
    assert a == b and a.looks == tuple(range(3, 11))
    assert a.t_bounds[-1] > stats.t.ppf(0.95, 9)  # OBF pays a little at the end for the interim looks
    assert all(x > y for x, y in zip(a.t_bounds, a.t_bounds[1:], strict=False))
    tiny = design_group_sequential(n0=3, n_max=10, alpha=0.0005, n_sim=50_000, seed=1)
    assert tiny.t_bounds[0] == math.inf  # spend below one simulated path: no rejection at that look
    with pytest.raises(ConfigError, match="n0=2 must be >= 3"):
        design_group_sequential(n0=2, n_max=10, alpha=0.05)


def test_type_one_error_per_test_at_most_alpha():
    """Fresh null paths (seed != design seed): one-sided crossing rate <= alpha + 3 MC SE, and not far below."""
    alpha = 0.05
    design = design_group_sequential(n0=3, n_max=10, alpha=alpha, n_sim=200_000, seed=0)
    n_paths = 200_000
    oc = simulate_sequential(design, effect_sd=0.0, n_paths=n_paths, seed=99)
    se = math.sqrt(alpha * (1 - alpha) / n_paths)
    for p in (oc["p_confirm"], oc["p_harm"]):
        assert p <= alpha + 3 * se and p >= alpha - 6 * se, oc


def _rows(deltas: dict, seeds, *, failed=()):
    runs = [{"intervention": "control", "arm": "control", "seed": s, "backend": "torch", "status": "ok",
             "post_quant_val_bpb": 1.5} for s in seeds]
    for name, d in deltas.items():
        runs += [{"intervention": name, "arm": "treatment", "seed": s, "backend": "torch",
                  "status": "failed" if (name, s) in failed else "ok", "post_quant_val_bpb": 1.5 + float(v)}
                 for s, v in zip(seeds, d, strict=False)]
    return runs


def test_screen_familywise_error_through_the_allocation_api():
    """A/A screens of 3 arms run through sequential_plan round by round: FWER <= alpha + 3 MC SE."""
    alpha, m, n_screens, seeds = 0.05, 3, 200, list(range(100, 108))
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(n_screens):
        full = {f"i{j}": 0.01 * rng.standard_normal(8) for j in range(m)}
        used = {name: 3 for name in full}
        while True:
            rows = [r for r in _rows(full, seeds) if r["arm"] == "control" or r["seed"] in
                    seeds[: used[r["intervention"]]]]
            state = sequential_plan(rows, seeds=seeds, family=list(full), alpha=alpha, n_sim=50_000)
            if state["done"]:
                break
            for name, nxt in state["next"].items():
                used[name] += len(nxt)
        hits += any(r["status"] in ("confirmed", "harmful") for r in state["results"].values())
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_screens)
    assert hits / n_screens <= bound, (hits, n_screens)


def test_sequential_plan_decides_and_allocates():
    d_good = [-0.10, -0.11, -0.09, -0.10, -0.1, -0.1]
    d_bad = [0.10, 0.11, 0.09, 0.1, 0.1, 0.1]
    d_null = [0.01, -0.02, 0.015, -0.01, 0.0, 0.01]
    seeds = list(range(11, 17))
    kw = {"seeds": seeds, "alpha": 0.1, "n_sim": 50_000}  # alpha / (2 x 3 arms) per test
    state = sequential_plan(_rows({"good": d_good[:4], "bad": d_bad[:4], "null": d_null[:4]}, seeds[:4]),
                            family=["good", "bad", "null"], **kw)
    res = state["results"]
    assert res["good"]["status"] == "confirmed" and res["bad"]["status"] == "harmful"
    assert res["good"]["looks"] == [3, 4] and res["good"]["bound"] < 10
    assert res["null"]["status"] == "continue" and state["next"] == {"null": [15]}
    assert state["next_control_seeds"] == [15] and not state["done"]
    final = sequential_plan(_rows({"null": d_null}, seeds), family=["null"], **kw)
    assert final["results"]["null"]["status"] == "undecided" and final["done"]
    # a margin larger than the effect blocks confirmation
    m = sequential_plan(_rows({"good": d_good}, seeds), family=["good"], margin_bpb=0.2, **kw)
    assert m["results"]["good"]["status"] == "undecided"
    # a failed treatment seed: one look fewer (no new pair), and it blocks confirmation
    f = sequential_plan(_rows({"good": d_good}, seeds, failed={("good", 13)}), family=["good"], **kw)
    assert f["results"]["good"]["status"] == "blocked" and f["results"]["good"]["looks"][0] == 3
    # runs off the registered order are refused
    with pytest.raises(DataFormatError, match="must run a prefix of the registered seed order"):
        sequential_plan(_rows({"good": d_good[:3]}, [11, 12, 14]), family=["good"], **kw)


def test_boundaries_at_looks_taken_do_not_change_later():
    a = design_at_looks((3, 5), n_max=10, alpha=0.01, n_sim=50_000, seed=0)
    b = design_at_looks((3, 5, 6, 9), n_max=10, alpha=0.01, n_sim=50_000, seed=0)
    assert a.t_bounds == b.t_bounds[:2] and a.spent == b.spent[:2]
    with pytest.raises(ConfigError, match="must be increasing valid-pair counts"):
        design_at_looks((3, 3), n_max=10, alpha=0.01)


def test_sequential_payload_is_promotable_shape():
    d_good = [-0.10, -0.11, -0.09, -0.10, -0.1, -0.1]
    seeds = list(range(11, 17))
    rows = _rows({"good": d_good[:4]}, seeds[:4])
    for r in rows:
        r["val_bpb"] = r["post_quant_val_bpb"]
    plan = sequential_plan(rows, seeds=seeds, family=["good"], alpha=0.1, n_sim=50_000)
    analysis = analyze(rows, alpha=0.1, effect_bpb=0.003, interventions=["good"])
    out = sequential_payload(analysis, plan)
    assert out["correction"] == "group_sequential_bonferroni" and out["results"][0]["decision"] == "confirmed"
    assert "at look n=3" in out["results"][0]["reason"]


def test_first_crossing_signs():
    design = design_group_sequential(n0=3, n_max=5, alpha=0.05, n_sim=20_000, seed=0)
    c = np.asarray(design.t_bounds)
    t = np.array([[-(c[0] + 1), 0, 0], [0, c[1] + 1, 0], [0, 0, 0]])
    first, sign = first_crossing(t, design)
    assert first.tolist() == [0, 1, -1] and sign.tolist() == [-1, 1, 0]


def test_non_binding_futility_keeps_type_one_error_and_costs_little_power():
    alpha, eff = 0.05, 1.0
    plain = design_group_sequential(n0=3, n_max=10, alpha=alpha, n_sim=100_000, seed=0)
    fut = design_group_sequential(n0=3, n_max=10, alpha=alpha, n_sim=100_000, seed=0, futility_effect_sd=eff,
                                  beta_futility=0.1)
    assert fut.t_bounds == plain.t_bounds and fut.f_bounds[-1] == 0.0 and max(fut.f_bounds) > 0
    n_paths = 100_000
    se = math.sqrt(alpha * (1 - alpha) / n_paths)
    h0_fut = simulate_sequential(fut, effect_sd=0.0, n_paths=n_paths, seed=11)
    h0_plain = simulate_sequential(plain, effect_sd=0.0, n_paths=n_paths, seed=11)
    assert h0_fut["p_confirm"] <= alpha + 3 * se and h0_fut["p_confirm"] <= h0_plain["p_confirm"]
    assert h0_fut["mean_n"] < h0_plain["mean_n"] - 1.0  # nulls stop early
    h1_fut = simulate_sequential(fut, effect_sd=eff, n_paths=n_paths, seed=12)
    h1_plain = simulate_sequential(plain, effect_sd=eff, n_paths=n_paths, seed=12)
    assert h1_plain["p_confirm"] - h1_fut["p_confirm"] <= 0.1 + 0.01
    flat = [0.001, -0.001, 0.0005, -0.0005, 0.0002, 0.0, 0.0, 0.0, 0.0, 0.0]
    state = sequential_plan(_rows({"flat": flat[:6]}, range(11, 17)), seeds=range(11, 21), family=["flat"],
                            alpha=2 * alpha, futility_effect_sd=eff, beta_futility=0.1, n_sim=100_000)
    assert state["results"]["flat"]["status"] == "futile" and state["next"] == {}
