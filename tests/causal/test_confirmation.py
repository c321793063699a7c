"""Tests for confirmation.py: fresh-seed confirmation plan and the Fieller transfer ratio."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.causal.core.errors import ConfigError
from scripts.causal.statistical_analysis import analyze
from scripts.causal.stats.confirmation import (
    analyze_confirmation,
    fieller_ratio,
    plan_confirmation,
    platform_transfer,
)


def _m(v):
    return {"val_bpb": v, "post_quant_val_bpb": v, "val_loss": v * math.log(2.0) * 2.5}


def screen_rows(effects: dict, seeds, *, rng, sd=0.002):
    runs = []
    for s in seeds:
        c = 1.5 + 0.03 * rng.standard_normal()
        runs.append({"intervention": "control", "arm": "control", "seed": s, "backend": "torch", "status": "ok",
                     **_m(c)})
        runs += [{"intervention": k, "arm": "treatment", "seed": s, "backend": "torch", "status": "ok",
                  **_m(c + e + sd * rng.standard_normal())} for k, e in effects.items()]
    return runs


EFFECTS = {"win": -0.02, "meh": 0.0, "bad": 0.02}


def test_two_stage_plan_uses_fresh_seeds_and_holm():
    rng = np.random.default_rng(0)
    screen = analyze(screen_rows(EFFECTS, range(11, 16), rng=rng), correction="bh", alpha=0.05)
    plan = plan_confirmation(screen, screen_seeds=[11, 12, 13, 14, 15, 16], n_confirm=5)
    assert plan.interventions == ("win",) and plan.seeds == (17, 18, 19, 20, 21)
    assert plan.correction == "holm" and plan.screen_correction == "bh" and plan.alpha == 0.05
    with pytest.raises(ConfigError, match=r"confirmation seeds \[13, 15\] were already used by the screen"):
        plan_confirmation(screen, confirm_seeds=[13, 15, 99])
    runs = screen_rows({"win": -0.02}, plan.seeds, rng=rng)
    out = analyze_confirmation(runs, plan)
    assert out["correction"] == "holm" and out["confirm_seeds"] == [17, 18, 19, 20, 21]
    assert out["stage"] == "confirmation" and out["screen_correction"] == "bh" and not out["exploratory"]
    assert out["preregistration"]["family"] == ["win"] and out["preregistration"]["source"] == "confirmation plan"
    assert [r["intervention"] for r in out["results"]] == ["win"] and out["results"][0]["decision"] == "confirmed"
    with pytest.raises(ConfigError, match=r"confirm runs use screening seeds \[11\]"):
        analyze_confirmation(screen_rows({"win": -0.02}, [11, 17, 18], rng=rng), plan)


def test_fieller_endpoints_solve_the_pivot():
    a, se_a, b, se_b, q = 2.0, 0.5, 1.0, 0.1, 1.96
    lo, hi, kind = fieller_ratio(a, se_a, b, se_b, q=q)
    assert kind == "bounded" and lo < a / b < hi
    for r in (lo, hi):
        assert abs(a - r * b) == pytest.approx(q * math.sqrt(se_a ** 2 + r ** 2 * se_b ** 2), rel=1e-10)
    # proxy effect not distinguishable from 0 at this level: no bounded interval
    assert fieller_ratio(2.0, 0.5, 0.1, 0.1, q=1.96)[2] in ("unbounded", "exclusive")


def test_platform_transfer_sign_and_ratio():
    rng = np.random.default_rng(1)
    proxy = analyze(screen_rows({"x": -0.02, "y": 0.01}, range(5), rng=rng))
    target = analyze(screen_rows({"x": -0.01, "y": -0.01}, range(5), rng=rng))
    res = {t.intervention: t for t in platform_transfer(proxy, target)}
    assert res["x"].sign_agree and not res["y"].sign_agree
    assert res["x"].ratio == pytest.approx(res["x"].target_mean / res["x"].proxy_mean)
    assert res["x"].ratio_ci_kind == "bounded" and res["x"].ratio_ci_low < res["x"].ratio < res["x"].ratio_ci_high
