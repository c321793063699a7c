"""Tests for promote.py on a COPY of train_gpt.py (tmp_path); the real file is never written."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import TRAIN_GPT
from scripts.causal.promote import (
    EMPTY_BLOCK,
    compose,
    current_entries,
    load_module,
    main,
    promote,
    revert,
)
from scripts.causal.statistical_analysis import analyze
from scripts.causal.stats.confirmation import analyze_confirmation, plan_confirmation

C = [1.50, 1.52, 1.49, 1.51, 1.50, 1.53, 1.48]
NOISE = [0.0004, -0.0003, 0.0002, 0.0, -0.0002]


def screen(effects: dict, *, preset="fast", correction="holm", seeds=(11, 12, 13, 14, 15), failed=(), extra=None):
    """runs.json payload of a screen on ``preset``: each treatment = control + effect (+ small noise)."""
    base = tg.preset_config(preset).to_dict()
    from scripts.causal.screen.registry import resolve_overrides

    tested = {n: resolve_overrides(n, tg.preset_config(preset)) for n in effects}
    runs = []
    for s, c in zip(seeds, C, strict=False):
        runs.append(_row("control", "control", s, c))
        for i, (name, eff) in enumerate(effects.items()):
            r = _row(name, "treatment", s, c + eff + NOISE[(s + i) % 5])
            if (name, s) in failed:
                r.update(status="failed", val_bpb=None, post_quant_val_bpb=None, error="RuntimeError: boom")
            runs.append(r)
    header = {"screen_id": "s42", "preset": preset, "backend": "torch", "seeds": list(seeds),
              "interventions": list(effects), "base_config": base, "treatment_overrides": tested,
              "alpha": 0.01, "margin_bpb": 0.0, "correction": correction, "metric": "post_quant_val_bpb",
              **(extra or {})}
    return {"schema_version": 1, "screen": header, "runs": runs}


def _row(name, arm, seed, v):
    return {"intervention": name, "arm": arm, "seed": seed, "backend": "torch", "status": "ok", "val_bpb": v,
            "post_quant_val_bpb": v, "val_loss": v * math.log(2) * 2.44}


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "train_gpt.py"
    shutil.copy(TRAIN_GPT, dst)
    return dst


def test_promoting_mlp_mult_3_reaches_every_entry_point(copy):
    res = analyze(screen({"mlp_mult_3": -0.02, "act_gelu": 0.0}))
    assert {r["intervention"]: r["decision"] for r in res["results"]}["mlp_mult_3"] == "confirmed"
    before = copy.read_text()
    diff = promote(res, train_gpt=copy, check_budget=False)  # MLP x3 at the baseline is over 16 MB (own test)
    assert copy.read_text() == before  # dry run by default
    assert ("+    'mlp_mult': ('set', 3),  # tested on preset=fast backend=torch stack=none base_overrides=none: "
            "2 -> 3; screen=s42") in diff
    promote(res, train_gpt=copy, apply=True, check_budget=False)
    mod, orig = load_module(copy), tg
    assert mod.Hyperparameters().mlp_mult == 3 and mod.Hyperparameters.from_env({}).mlp_mult == 3
    for name in mod.PRESETS:
        assert mod.preset_config(name).mlp_mult == 3
        assert mod.Hyperparameters.from_env({"PRESET": name}).mlp_mult == 3
        # nothing else moves
        assert mod.preset_config(name).with_overrides(mlp_mult=2) == \
            mod.Hyperparameters().with_overrides(orig.preset_config(name).to_dict())
    # env and explicit overrides still come last
    assert mod.Hyperparameters.from_env({"PRESET": "fast", "MLP_MULT": "2"}).mlp_mult == 2
    assert mod.preset_config("tiny", mlp_mult=4).mlp_mult == 4
    # revert restores the file byte for byte
    revert(train_gpt=copy, apply=True)
    assert copy.read_text() == before and EMPTY_BLOCK in before


def test_relative_change_is_recorded_relative_to_its_preset(copy):
    res = analyze(screen({"num_layers_plus2": -0.02}))
    promote(res, train_gpt=copy, apply=True, check_budget=False)
    mod = load_module(copy)
    assert mod.PROMOTED_DEFAULTS == {"num_layers": ("add", 2)}
    # tested 4 -> 6 on fast: fast gets exactly the tested value; others get the same change
    assert mod.preset_config("fast").num_layers == 6
    assert mod.Hyperparameters().num_layers == 11 and mod.preset_config("tiny").num_layers == 4
    line = [ln for ln in copy.read_text().splitlines() if "'num_layers'" in ln][0]
    assert "tested on preset=fast backend=torch stack=none base_overrides=none: 4 -> 6" in line
    assert "(holm) n=5" in line
    # promoting the same result again keeps one line
    promote(res, train_gpt=copy, apply=True, check_budget=False)
    assert len(current_entries(copy.read_text())) == 1
    # a second +2 screened on the promoted baseline (control 6 on fast) composes to +4
    res2 = analyze(screen({"num_layers_plus2": -0.02}, extra={"base_config": mod.preset_config("fast").to_dict(),
                                                               "treatment_overrides": {"num_layers_plus2":
                                                                                       {"num_layers": 8}}}))
    promote(res2, train_gpt=copy, apply=True, check_budget=False)
    assert load_module(copy).PROMOTED_DEFAULTS == {"num_layers": ("add", 4)}


def test_refusals_say_why(copy):
    none = analyze(screen({"mlp_mult_3": -0.02}, correction="none"))
    with pytest.raises(ConfigError, match="correction='none' does not control the family-wise error"):
        promote(none, train_gpt=copy)
    bh = analyze(screen({"mlp_mult_3": -0.02, "act_gelu": 0.0}, correction="bh"))
    assert bh["results"][0]["decision"] == "confirmed"
    with pytest.raises(ConfigError, match="BH screen controls only the false discovery rate"):
        promote(bh, train_gpt=copy)
    failed = analyze(screen({"mlp_mult_3": -0.02}, seeds=(11, 12, 13, 14, 15, 16, 17),
                            failed={("mlp_mult_3", 16), ("mlp_mult_3", 17)}))
    with pytest.raises(ConfigError, match=r"treatment failed or diverged on seeds \[16, 17\]"):
        promote(failed, train_gpt=copy, interventions=["mlp_mult_3"])
    loose = analyze(screen({"mlp_mult_3": -0.02}), alpha=0.05, exploratory=True)
    with pytest.raises(ConfigError, match="the analysis was exploratory"):
        promote(loose, train_gpt=copy, interventions=["mlp_mult_3"])
    good = analyze(screen({"mlp_mult_3": -0.02, "act_gelu": 0.0}))
    with pytest.raises(ConfigError, match=r"writes \{'mlp_mult': 4\}, but the screen tested \{'mlp_mult': 3\}"):
        promote(good, train_gpt=copy, overrides={"mlp_mult_3": {"mlp_mult": 4}}, check_budget=False)
    with pytest.raises(ConfigError, match="its decision is 'null'"):
        promote(good, train_gpt=copy, interventions=["act_gelu"])
    with pytest.raises(ConfigError, match="schema 2 payload"):
        promote({"schema_version": 1, "correction": "holm", "results": []}, train_gpt=copy, interventions=["x"])
    assert "mlp_mult" in promote(good, train_gpt=copy, overrides={"mlp_mult_3": {"mlp_mult": 3}},
                                 check_budget=False)


def test_bh_screen_then_holm_confirmation_on_fresh_seeds_is_promotable(copy):
    bh = analyze(screen({"mlp_mult_3": -0.02, "act_gelu": 0.0}, correction="bh"))
    plan = plan_confirmation(bh, n_confirm=5)
    confirm = screen({"mlp_mult_3": -0.02}, seeds=plan.seeds)
    out = analyze_confirmation(confirm, plan)
    assert out["stage"] == "confirmation" and out["results"][0]["decision"] == "confirmed"
    diff = promote(out, train_gpt=copy, check_budget=False)
    assert "('set', 3)" in diff and "screen=s42 confirmation" in diff


def test_compose_rules():
    assert compose(("add", 2), ("add", 2)) == ("add", 4)
    assert compose(("mul", 0.5), ("mul", 0.5)) == ("mul", 0.25)
    assert compose(("set", 3), ("add", 1)) == ("set", 4)
    with pytest.raises(ConfigError, match="cannot compose"):
        compose(("add", 2), ("mul", 2.0))


def test_block_must_exist_once(copy):
    copy.write_text(copy.read_text().replace(EMPTY_BLOCK, ""))
    with pytest.raises(DataFormatError, match="expected exactly one PROMOTED DEFAULTS block"):
        revert(train_gpt=copy)


def test_cli_dry_run_apply_revert(copy, tmp_path, capsys):
    res = analyze(screen({"qk_gain_4": -0.02}))  # same parameter count as the baseline: within the cap's error
    path = tmp_path / "ablation_results.json"
    path.write_text(json.dumps(res, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
    before = copy.read_text()
    assert main(["--results", str(path), "--train-gpt", str(copy)]) == 0
    assert "('set', 4.0)" in capsys.readouterr().out and copy.read_text() == before
    assert main(["--results", str(path), "--train-gpt", str(copy), "--apply"]) == 0
    assert load_module(copy).PROMOTED_DEFAULTS == {"qk_gain_init": ("set", 4.0)}
    assert main(["--revert", "--train-gpt", str(copy), "--apply"]) == 0
    assert copy.read_text() == before
    assert main(["--train-gpt", str(copy)]) == 1
    assert "--results is required" in capsys.readouterr().err
