"""Tests for scripts/causal/screen/registry.py: registry content, preset validity, and that each
intervention really changes the training computation (torch always, MLX when importable)."""
from __future__ import annotations

import importlib.util
import math

import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.screen import registry as reg

CANONICAL_FEATURES = {
    "num_layers", "model_dim", "mlp_mult", "vocab_size", "train_seq_len", "tied_embeddings", "activation",
    "smeargate", "bigram_hash", "value_embeddings", "xsa", "partial_rope", "ln_scale", "unet_skips",
    "depth_recurrence", "parallel_residuals", "qk_gain", "logit_softcap", "muon", "muon_weight_decay", "muoneq_r",
    "ema", "swa", "qat", "quant_bits", "gptq", "compression", "sliding_window_eval", "ttt", "lora_ttt",
    "ngram_cache", "warmdown_iters", "fp16_embed", "orthogonal_init", "attention_gate", "caseops",
    "varlen_attention",
}
REQUIRED = {
    "act_leaky_relu2", "act_gelu", "act_silu", "act_sin2", "logit_softcap_20", "logit_softcap_15", "model_dim_up",
    "num_layers_plus2", "mlp_mult_3", "qk_gain_4", "qk_gain_5", "partial_rope", "ln_scale", "xsa_last4",
    "ema_0997", "matrix_lr_half", "matrix_lr_double", "loss_hard_tokens", "loss_mtp", "aa", "sanity_frozen_matrices",
    # issue 11: the frontier techniques
    "mlp_mult_4", "seq_len_double", "xsa_all", "attn_gate_dense", "attn_gate_sparse", "smear_gate", "bigram_hash", "value_embeddings",
    "skip_gates", "parallel_residuals", "depth_recurrence", "ema_09965", "ema_0997_late", "swa", "muon_wd_004",
    "muon_wd_0095", "adam_wd_004", "muoneq_r", "polar_express", "muon_momentum_099", "muon_momentum_097", "warmdown_frac_075", "min_lr_010",
}
NAMES = [iv.name for iv in reg.list_interventions()]
TREATMENTS = [n for n in NAMES if n != "aa"]


def test_registry_has_required_interventions_with_metadata():
    assert REQUIRED <= set(NAMES)
    assert len(NAMES) == len(set(NAMES))
    for iv in reg.list_interventions():
        assert iv.description and iv.category
        assert iv.feature is None or iv.feature in CANONICAL_FEATURES, iv.name
        assert iv.transfer in reg.TRANSFER_CLASSES or (iv.transfer is None and iv.category == "calibration")
        if iv.feature is not None:  # every mapped feature reads back from the config it produces
            reg.feature_value(iv.feature, tg.preset_config("fast"))
    assert reg.get_intervention("loss_rho1").name == "loss_hard_tokens"  # renamed; old results still resolve
    assert {iv.name for iv in reg.list_interventions(category="calibration")} == {"aa", "sanity_frozen_matrices"}


def test_unknown_intervention_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown intervention 'nope'; registered: \[.*'aa'"):
        reg.get_intervention("nope")


# Interventions that cannot be expressed at a preset's scale (tiny: 12 steps, 2 layers, warmdown 4).
REFUSED = {("tiny", "ema_0997"), ("tiny", "ema_09965"), ("tiny", "ema_0997_late"), ("tiny", "swa"),
           ("tiny", "depth_recurrence"), ("tiny", "min_lr_010")}


@pytest.mark.parametrize("preset", sorted(tg.PRESETS))
@pytest.mark.parametrize("name", NAMES)
def test_every_intervention_valid_for_every_preset(preset, name):
    base = tg.preset_config(preset)
    reason = reg.representable(name, base)
    if reason is not None:  # refused at this scale, with the preset's numbers in the reason
        assert (preset, name) in REFUSED, f"{name} refused at {preset}: {reason}"
        with pytest.raises(reg.NotRepresentable):
            reg.apply(name, base)
        return
    assert (preset, name) not in REFUSED
    cfg = reg.apply(name, base)  # Hyperparameters.__post_init__ checks shapes, ranges and choices
    assert cfg.model_dim % cfg.num_heads == 0 and (cfg.model_dim // cfg.num_heads) % 2 == 0
    assert cfg.num_heads % cfg.num_kv_heads == 0
    if name == "aa":
        assert cfg == base
    else:
        assert tg.config_hash(cfg) != tg.config_hash(base), f"{name} leaves preset {preset} unchanged"


def test_preset_relative_values():
    base = tg.preset_config("baseline")
    assert reg.resolve_overrides("model_dim_up", base) == {"model_dim": 576}
    assert reg.resolve_overrides("num_layers_plus2", base) == {"num_layers": 11}
    assert reg.resolve_overrides("partial_rope", base) == {"rope_partial_dims": 16}  # 16/64 of head_dim 64
    assert reg.resolve_overrides("xsa_last4", base) == {"xsa_last_n": 4}
    assert reg.resolve_overrides("matrix_lr_half", base) == {"matrix_lr": pytest.approx(0.02)}
    assert reg.resolve_overrides("matrix_lr_double", base) == {"matrix_lr": pytest.approx(0.08)}
    assert reg.resolve_overrides("sanity_frozen_matrices", base) == {"matrix_lr": 0.0}
    assert reg.resolve_overrides("aa", base) == {}
    tiny = tg.preset_config("tiny")  # 2 layers, model_dim 64, 4 heads -> head_dim 16
    assert reg.resolve_overrides("xsa_last4", tiny) == {"xsa_last_n": 2}  # clipped to num_layers
    assert reg.resolve_overrides("partial_rope", tiny) == {"rope_partial_dims": 4}
    assert reg.resolve_overrides("model_dim_up", tiny) == {"model_dim": 72}  # head_dim 18, still even


def test_step_dependent_values_are_fractions_of_training():
    fast = tg.preset_config("fast")  # 120 steps, 4 layers, warmdown 60
    # EMA 0.997 spans 333 of the 11L records' 7,100 steps (4.7%): 5.6 steps of 120.
    ema = reg.resolve_overrides("ema_0997", fast)
    assert ema == {"ema_decay": pytest.approx(1 - 1 / (120 * 333.333 / 7100), abs=1e-5), "ema_start_frac": 0.0}
    assert 0.81 < ema["ema_decay"] < 0.83 and 0.81 ** 120 < 1e-10  # the untrained init no longer weighs in
    late = reg.resolve_overrides("ema_0997_late", fast)
    assert late["ema_start_frac"] == 0.5 and late["ema_decay"] < ema["ema_decay"]
    capped = reg.resolve_overrides("ema_0997", tg.preset_config("baseline"))  # about 13,780 capped steps
    assert capped["ema_decay"] == pytest.approx(1 - 1 / (13_780 * 333.333 / 7100), abs=1e-5)
    assert reg.resolve_overrides("muon_momentum_099", fast)["muon_momentum_warmup_steps"] == 25  # 1500/7100 x 120
    assert reg.resolve_overrides("swa", fast) == {"swa_every": 1, "swa_start_scale": 0.2, "ema_decay": 0.0}
    assert reg.resolve_overrides("depth_recurrence", fast) == {"num_loops": 2, "loop_start": 1, "loop_end": 2,
                                                               "loop_start_frac": 0.35}
    eleven = tg.preset_config("baseline", num_layers=11)
    assert reg.resolve_overrides("depth_recurrence", eleven)["loop_start"] == 3
    assert reg.resolve_overrides("depth_recurrence", eleven)["loop_end"] == 5
    assert reg.resolve_overrides("parallel_residuals", eleven) == {"parallel_start_layer": 8}
    assert reg.resolve_overrides("parallel_residuals", fast) == {"parallel_start_layer": 3}
    assert reg.resolve_overrides("value_embeddings", eleven)["ve_layers"] == "9,10"
    tiny = tg.preset_config("tiny")
    assert "0.56 steps (< 2)" in reg.representable("ema_0997", tiny)
    assert "num_layers=2" in reg.representable("depth_recurrence", tiny)
    assert reg.representable("ema_0997", fast) is None
    assert "lowest lr multiplier here is 0.25" in reg.representable("min_lr_010", tiny)  # 1/warmdown_iters
    assert reg.resolve_overrides("min_lr_010", fast) == {"min_lr": 0.1}


def test_adhoc_override_is_typed_and_validated():
    base = tg.preset_config("tiny")
    name, ov = reg.adhoc_treatment("MLP_MULT=3,activation=gelu", base)
    assert name == "override:mlp_mult=3,activation=gelu"
    assert ov == {"mlp_mult": 3, "activation": "gelu"} and isinstance(ov["mlp_mult"], int)
    _, ov = reg.adhoc_treatment("ln_scale=1", base)
    assert ov == {"ln_scale": True}
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['mlp_multt'\]; valid fields"):
        reg.adhoc_treatment("mlp_multt=3", base)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        reg.adhoc_treatment("mlp_mult", base)
    with pytest.raises(ConfigError, match="cannot read 'x' as int"):
        reg.adhoc_treatment("num_layers=x", base)
    with pytest.raises(ConfigError, match="xsa_last_n=5 must lie in"):
        reg.adhoc_treatment("xsa_last_n=5", base)


def test_feature_value():
    base = tg.preset_config("tiny")
    assert reg.feature_value("activation", reg.apply("act_gelu", base)) == "gelu"
    assert reg.feature_value("partial_rope", base) is False
    assert reg.feature_value("partial_rope", reg.apply("partial_rope", base)) is True
    assert reg.feature_value("qk_gain", reg.apply("qk_gain_4", base)) == 4.0
    assert reg.feature_value("smeargate", reg.apply("smear_gate", base)) is True
    with pytest.raises(ConfigError, match="no config mapping"):
        reg.feature_value("caseops", base)


# ---------------------------------------------------------------------------------------------
# Each intervention changes what is computed (2 training steps of the tiny preset + eval)
# ---------------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory):
    """The tiny preset, 2 steps, on a very small synthetic corpus (eval is cheap)."""
    from scripts.causal.data.shards import ensure_corpus

    paths = ensure_corpus(tmp_path_factory.mktemp("micro_corpus"), source="synthetic", n_bytes=60_000,
                          val_bytes=4_000, seed=0)
    return tg.preset_config("tiny").with_overrides(paths.overrides()).with_overrides(iterations=2)


def _fingerprint(result) -> tuple:
    # the reported score (sliding / TTT when on) and the artifact size cover the export and evaluation knobs
    return (tuple(round(x, 7) for x in result.step_losses), round(result.val_bpb, 7),
            round(result.post_quant_val_bpb, 7), round(tg.pick_metric(result)[1], 7), result.model_bytes)


def _backends():
    out = [pytest.param("torch", id="torch")]
    has_mlx = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("train_gpt_mlx") is not None
    out.append(pytest.param("mlx", id="mlx", marks=[
        pytest.mark.mlx, pytest.mark.skipif(not has_mlx, reason="mlx or train_gpt_mlx not importable")]))
    return out


@pytest.fixture(scope="module", params=_backends())
def control_run(request, micro_config):
    from scripts.causal.screen import trainer

    backend = request.param
    res = trainer.run(micro_config, 11, backend)
    if res.status != "ok" and backend == "mlx":
        pytest.skip(f"mlx backend cannot run here: {res.error}")
    assert res.status == "ok", res.error
    return backend, res


@pytest.mark.parametrize("name", NAMES)
def test_intervention_changes_training_computation(name, micro_config, control_run):
    from scripts.causal.screen import trainer

    backend, control = control_run
    if reg.representable(name, micro_config) is not None:
        pytest.skip(f"{name} is refused at the tiny preset: {reg.representable(name, micro_config)}")
    if backend not in reg.get_intervention(name).backends:
        pytest.skip(f"{name} is not implemented on {backend}")
    res = trainer.run(reg.apply(name, micro_config), 11, backend)
    assert res.status == "ok", f"{name} on {backend}: {res.status} {res.error}"
    assert all(math.isfinite(x) for x in res.step_losses)
    if name == "aa":
        assert _fingerprint(res) == _fingerprint(control)  # exact copy: bit-identical on CPU
    else:
        assert _fingerprint(res) != _fingerprint(control), f"{name} did not change the computation on {backend}"
