"""Tests for scripts/causal/pipeline/ladder.py: successive halving over rungs, claims only at the last rung."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from scripts.causal.core.errors import ConfigError
from scripts.causal.core.schema import PipelineOptions, Rung
from scripts.causal.pipeline import ladder as lad


def _row(name, decision, mean, unstable=None):
    return {"intervention": name, "decision": decision, "mean_delta_bpb": mean, "n_pairs": 3,
            "ci_low": mean - 0.01, "ci_high": mean + 0.01, "horizon_unstable": unstable}


def test_advance_drops_harmful_and_null_and_keeps_the_best_half():
    rows = [_row("a", "inconclusive", -0.002), _row("b", "confirmed", -0.02), _row("c", "harmful", 0.05),
            _row("d", "null", 0.0), _row("e", "inconclusive", -0.001)]
    up, why = lad.advance(rows)
    assert up == ["b", "a", "e"]  # ceil(5 / 2) = 3 may move up, best mean Δ first
    assert why == {"c": "harmful at this rung", "d": "null at this rung"}
    up, why = lad.advance(rows[:2] + [_row("f", "inconclusive", 0.01)])
    assert up == ["b", "a"] and why["f"].startswith("cut by the halving cap (2 of 3 move up")


def _opts(tmp_path, **kw):
    return PipelineOptions(run_id="t", output_dir=str(tmp_path), preset="tiny", backend="torch", seeds=(1, 2, 3),
                           confirm_seeds=(4, 5, 6), interventions=("a", "b", "c", "d"), **kw)


def test_run_ladder_screens_each_rung_on_fresh_seeds_and_claims_only_at_the_last(tmp_path, monkeypatch):
    monkeypatch.setitem(lad.LADDERS, "t", (Rung("r1", "tiny", {}, (1, 2, 3)),
                                           Rung("r2", "tiny", {"iterations": 24}, (4, 5, 6))))
    decisions = {"r1": {"a": ("inconclusive", -0.01), "b": ("harmful", 0.2), "c": ("confirmed", -0.03),
                        "d": ("null", 0.0)},
                 "r2": {"a": ("null", 0.0), "c": ("confirmed", -0.02)}}
    calls = []

    def screen(ropts, name, arms, seeds, overrides, out_dir):
        rung = name.split("-", 1)[1]
        calls.append((rung, list(arms), tuple(seeds), overrides, ropts.preset))
        runs = [SimpleNamespace(wall_s=2.0) for _ in range((len(arms) + 1) * len(seeds))]
        rows = [_row(n, *decisions[rung][n], unstable=False if rung == "r2" else None) for n in arms]
        return SimpleNamespace(runs=runs), {"results": rows}

    payload = lad.run_ladder(_opts(tmp_path), "t", screen=screen, log=lambda m: None)
    assert calls == [("r1", ["a", "b", "c", "d"], (1, 2, 3), {}, "tiny"),
                     ("r2", ["c", "a"], (4, 5, 6), {"iterations": 24}, "tiny")]
    assert payload["claims"] == {"a": {"decision": "null", "mean_delta_bpb": 0.0, "horizon_unstable": False},
                                 "c": {"decision": "confirmed", "mean_delta_bpb": -0.02, "horizon_unstable": False}}
    assert payload["rungs"][0]["stopped"] == {"b": "harmful at this rung", "d": "null at this rung"}
    # 15 runs x 2 s at rung 1 + 9 x 2 s at rung 2, over the 4 candidates that entered
    assert payload["cost_s_per_candidate"] == pytest.approx((30 + 18) / 4)
    saved = json.loads((tmp_path / "ladder.json").read_text())
    assert saved["schema_version"] == 1 and "## Claims (last rung only)" in (tmp_path / "ladder.md").read_text()


def test_run_ladder_refuses_reused_seeds_unknown_ladders_and_no_candidates(tmp_path, monkeypatch):
    monkeypatch.setitem(lad.LADDERS, "bad", (Rung("r1", "tiny", {}, (1, 2, 3)), Rung("r2", "tiny", {}, (3, 4, 5))))
    with pytest.raises(ConfigError, match=r"rung r2 reuses seeds \[3\]"):
        lad.run_ladder(_opts(tmp_path), "bad", screen=None, log=print)
    with pytest.raises(ConfigError, match="--ladder 'nope' is not one of"):
        lad.run_ladder(_opts(tmp_path), "nope", screen=None, log=print)
    with pytest.raises(ConfigError, match="--ladder needs its candidates: pass --interventions"):
        lad.run_ladder(dataclasses.replace(_opts(tmp_path), interventions=()), "tiny", screen=None, log=print)


def test_every_shipped_ladder_uses_fresh_seeds_per_rung_and_ends_at_a_longer_rung():
    for name, rungs in lad.LADDERS.items():
        seeds = [s for r in rungs for s in r.seeds]
        assert len(seeds) == len(set(seeds)), name
    assert lad.LADDERS["h100"][-1].executor == "torchrun" and lad.LADDERS["h100"][-1].preset == "baseline"
