"""Tests for promote.py. Every test works on a COPY (tmp_path); the real train_gpt.py is never written."""
from __future__ import annotations

import json
import shutil

import pytest

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import TRAIN_GPT
from scripts.causal.promote import (
    BEGIN,
    EMPTY_BLOCK,
    END,
    current_entries,
    load_module,
    main,
    promote,
    promotion_entries,
    revert,
)


def row(name, decision="confirmed", delta=-0.0123, p=0.0021):
    return {"intervention": name, "decision": decision, "mean_delta_bpb": delta, "ci_low": delta - 0.003,
            "ci_high": delta + 0.003, "p_adjusted": p, "n_pairs": 5}


RESULTS = {"schema_version": 1, "alpha": 0.01, "correction": "holm", "screen": {"screen_id": "s42"},
           "results": [row("act_leaky_relu2"), row("mlp_mult_3", delta=-0.02, p=0.0005),
                       row("act_gelu", decision="null", delta=-0.001, p=0.8),
                       row("qk_gain_5", decision="harmful", delta=0.01, p=0.001)]}
OVERRIDES = {"act_leaky_relu2": {"activation": "leaky_relu2"}, "mlp_mult_3": {"mlp_mult": 3},
             "act_gelu": {"activation": "gelu"}, "qk_gain_5": {"qk_gain_init": 5.0}}


@pytest.fixture
def mini(tmp_path, fixtures_dir):
    dst = tmp_path / "train_gpt.py"
    shutil.copy(fixtures_dir / "promote" / "mini_train_gpt.py", dst)
    return dst


def test_dry_run_is_default_and_writes_nothing(mini):
    before = mini.read_text()
    diff = promote(RESULTS, train_gpt=mini, overrides=OVERRIDES)
    assert mini.read_text() == before
    assert diff.startswith("--- a/train_gpt.py\n+++ b/train_gpt.py\n")
    assert "+    'activation': 'leaky_relu2',  # screen=s42 intervention=act_leaky_relu2" in diff
    assert "+    'mlp_mult': 3,  # screen=s42 intervention=mlp_mult_3 delta=-0.02000 bpb" in diff
    assert "gelu" not in diff.replace("leaky_relu2", "") and "qk_gain" not in diff


def test_apply_promotes_only_confirmed_and_the_copy_imports(mini):
    promote(RESULTS, train_gpt=mini, overrides=OVERRIDES, apply=True)
    mod = load_module(mini)
    assert mod.PROMOTED_DEFAULTS == {"activation": "leaky_relu2", "mlp_mult": 3}
    cfg = mod.preset_config("baseline")
    assert (cfg.activation, cfg.mlp_mult, cfg.matrix_lr) == ("leaky_relu2", 3, 0.04)
    line = [ln for ln in mini.read_text().splitlines() if "'activation'" in ln][0]
    assert "CI95=[-0.01530, -0.00930]" in line and "p_adj=0.0021 (holm)" in line and "delta=-0.01230 bpb" in line
    assert [e["key"] for e in current_entries(mini.read_text())] == ["activation", "mlp_mult"]


def test_refuses_anything_not_confirmed(mini):
    for name, decision in (("act_gelu", "null"), ("qk_gain_5", "harmful")):
        with pytest.raises(ConfigError, match=f"refusing to promote '{name}': its decision is '{decision}'"):
            promote(RESULTS, train_gpt=mini, overrides=OVERRIDES, interventions=[name])
    with pytest.raises(ConfigError, match="'nope' is not in the results"):
        promotion_entries(RESULTS, interventions=["nope"], overrides=OVERRIDES)


def test_conflicting_confirmed_overrides_are_an_error(mini):
    res = {**RESULTS, "results": [row("act_leaky_relu2"), row("act_silu")]}
    ov = {"act_leaky_relu2": {"activation": "leaky_relu2"}, "act_silu": {"activation": "silu"}}
    with pytest.raises(ConfigError, match="conflicting overrides for 'activation'"):
        promote(res, train_gpt=mini, overrides=ov)


def test_merge_with_existing_block_and_revert(mini):
    original = mini.read_text()
    promote(RESULTS, train_gpt=mini, overrides=OVERRIDES, apply=True)
    assert promote(RESULTS, train_gpt=mini, overrides=OVERRIDES) == ""  # same values: nothing to do
    res2 = {**RESULTS, "results": [row("act_silu")]}
    with pytest.raises(ConfigError, match="already promoted as 'leaky_relu2'.*--revert first"):
        promote(res2, train_gpt=mini, overrides={"act_silu": {"activation": "silu"}})
    assert "-PROMOTED_DEFAULTS: dict[str, object] = {\n" in revert(train_gpt=mini)
    revert(train_gpt=mini, apply=True)
    assert mini.read_text() == original and EMPTY_BLOCK in original
    assert load_module(mini).PROMOTED_DEFAULTS == {}


def test_block_must_exist_once(mini):
    mini.write_text(mini.read_text() + "\n" + EMPTY_BLOCK + "\n")
    with pytest.raises(DataFormatError, match="expected exactly one PROMOTED DEFAULTS block"):
        promote(RESULTS, train_gpt=mini, overrides=OVERRIDES)


def test_cli_dry_run_apply_revert(mini, tmp_path, capsys):
    results = tmp_path / "ablation_results.json"
    results.write_text(json.dumps(RESULTS))
    ov = tmp_path / "overrides.json"
    ov.write_text(json.dumps(OVERRIDES))
    before = mini.read_text()
    assert main(["--results", str(results), "--train-gpt", str(mini), "--overrides-json", str(ov)]) == 0
    assert "+    'mlp_mult': 3," in capsys.readouterr().out and mini.read_text() == before
    assert main(["--results", str(results), "--train-gpt", str(mini), "--overrides-json", str(ov),
                 "--interventions", "act_gelu"]) == 1
    assert "only 'confirmed' interventions can be promoted" in capsys.readouterr().err
    assert main(["--results", str(results), "--train-gpt", str(mini), "--overrides-json", str(ov), "--apply"]) == 0
    assert load_module(mini).PROMOTED_DEFAULTS == {"activation": "leaky_relu2", "mlp_mult": 3}
    capsys.readouterr()
    assert main(["--revert", "--apply", "--train-gpt", str(mini)]) == 0
    assert mini.read_text() == before
    assert main(["--revert", "--train-gpt", str(mini)]) == 0
    assert "no change" in capsys.readouterr().out


def test_real_train_gpt_copy_promotes_through_the_registry(tmp_path):
    """A copy of the real train_gpt.py: registry overrides, apply, re-import, defaults carry the values."""
    dst = tmp_path / "train_gpt.py"
    shutil.copy(TRAIN_GPT, dst)
    res = {**RESULTS, "results": [row("act_leaky_relu2"), row("matrix_lr_half")]}
    promote(res, train_gpt=dst, apply=True, screen_id="cpu-fast-1")
    mod = load_module(dst)
    base = mod.Hyperparameters()
    assert mod.PROMOTED_DEFAULTS == {"activation": "leaky_relu2", "matrix_lr": base.matrix_lr * 0.5}
    for cfg in (mod.preset_config("baseline"), mod.Hyperparameters.from_env({})):
        assert cfg.activation == "leaky_relu2" and cfg.matrix_lr == pytest.approx(base.matrix_lr * 0.5)
    assert "screen=cpu-fast-1 intervention=matrix_lr_half" in dst.read_text()
    revert(train_gpt=dst, apply=True)
    assert dst.read_text() == TRAIN_GPT.read_text()


def test_promotion_copies_the_block_into_the_mlx_twin(tmp_path):
    """The twin beside train_gpt.py gets the same block (diff shows both files); revert restores both."""
    dst, twin = tmp_path / "train_gpt.py", tmp_path / "train_gpt_mlx.py"
    shutil.copy(TRAIN_GPT, dst)
    shutil.copy(TRAIN_GPT.with_name("train_gpt_mlx.py"), twin)
    twin_before = twin.read_text()
    res = {**RESULTS, "results": [row("act_leaky_relu2")]}
    diff = promote(res, train_gpt=dst, apply=False, screen_id="s1")
    assert "+++ b/train_gpt.py" in diff and "+++ b/train_gpt_mlx.py" in diff and twin.read_text() == twin_before
    promote(res, train_gpt=dst, apply=True, screen_id="s1")
    block = lambda text: text[text.index(BEGIN):text.index(END)]  # noqa: E731
    assert block(twin.read_text()) == block(dst.read_text()) and "leaky_relu2" in block(dst.read_text())
    revert(train_gpt=dst, apply=True)
    assert twin.read_text() == twin_before and dst.read_text() == TRAIN_GPT.read_text()
