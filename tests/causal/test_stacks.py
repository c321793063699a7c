"""Tests for scripts/causal/screen/stacks.py: leaderboard stacks at full scale and scaled to proxies, and the
refusal of interventions a stack already contains."""
from __future__ import annotations

import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.screen import registry as reg
from scripts.causal.screen import stacks


def test_march_baseline_is_the_preset():
    for preset in ("fast", "baseline"):
        assert stacks.stack_config("march_baseline", preset) == tg.preset_config(preset)


def test_recent_stack_at_full_scale_is_the_records_configuration():
    cfg = stacks.stack_config("sp_recent", "baseline")
    assert (cfg.num_layers, cfg.model_dim, cfg.mlp_mult, cfg.activation, cfg.xsa_last_n) == (11, 512, 4, "leaky_relu2", 11)
    assert (cfg.rope_partial_dims, cfg.ln_scale, cfg.qk_gain_init, cfg.skip_gates) == (16, True, 5.0, True)
    assert (cfg.parallel_start_layer, cfg.num_loops, cfg.loop_start, cfg.loop_end, cfg.loop_start_frac) == (8, 2, 3, 5, 0.35)
    assert (cfg.attn_out_gate, cfg.attn_gate_scale, cfg.gate_window, cfg.smear_gate) == ("sparse", 0.5, 12, True)
    assert (cfg.muon_ns, cfg.muon_row_normalize, cfg.muon_wd) == ("polar_express", True, 0.095)
    assert (cfg.warmdown_frac, cfg.min_lr, cfg.ema_decay, cfg.beta2) == (0.85, 0.1, 0.9965, 0.99)
    assert (cfg.train_seq_len, cfg.train_batch_tokens, cfg.muon_momentum_warmup_steps) == (2048, 786_432, 1500)


def test_eleven_layer_stack_scales_to_fast():
    full = stacks.stack_config("11l_ema_leaky", "baseline")
    assert (full.num_layers, full.ve_layers, full.ema_decay, full.warmdown_iters, full.xsa_last_n) == (11, "9,10", 0.997, 3500, 4)
    fast = stacks.stack_config("11l_ema_leaky", "fast")
    assert (fast.num_layers, fast.model_dim, fast.train_seq_len) == (6, 128, 128)  # the preset's size, +2 layers
    assert fast.ve_layers == "4,5" and fast.rope_partial_dims == 8  # last two layers; 16/64 of head_dim 32
    assert 0.81 < fast.ema_decay < 0.83  # horizon 4.7% of 120 steps, not 0.997
    assert fast.muon_momentum_warmup_steps == 25 and fast.warmdown_frac == pytest.approx(3500 / 7100)


def test_stack_that_cannot_be_scaled_is_refused_with_the_reason():
    with pytest.raises(reg.NotRepresentable, match="stack '11l_ema_leaky' at preset 'tiny': ema_0997"):
        stacks.stack_config("11l_ema_leaky", "tiny")
    with pytest.raises(ConfigError, match="unknown stack 'nope'"):
        stacks.stack_config("nope", "fast")


def test_intervention_already_in_the_stack_is_refused():
    assert "already part of stack 'sp_recent'" in stacks.stack_conflict("sp_recent", "smear_gate", "fast")
    assert "already sets through ema_09965" in stacks.stack_conflict("sp_recent", "ema_0997", "fast")
    assert "already sets through xsa_last4" in stacks.stack_conflict("11l_ema_leaky", "xsa_all", "fast")
    assert "already part" in stacks.stack_conflict("sp_recent", "act_leaky_relu2", "fast")
    assert stacks.stack_conflict("sp_recent", "mlp_mult_3", "fast") is None  # a tunable feature: 4x -> 3x
    assert stacks.stack_conflict("sp_recent", "bigram_hash", "fast") is None
    assert stacks.stack_conflict("11l_ema_leaky", "parallel_residuals", "fast") is None
    assert stacks.stack_conflict("march_baseline", "smear_gate", "fast") is None


def test_every_stack_builds_at_fast_and_full_scale_and_screens_something():
    for st in stacks.list_stacks():
        for preset in ("fast", "baseline"):
            stacks.stack_config(st.name, preset)  # raises if the stack is not a valid config at this preset
        free = [iv.name for iv in reg.list_interventions() if iv.category != "calibration"
                and stacks.stack_conflict(st.name, iv.name, "fast") is None]
        assert len(free) >= 5, (st.name, free)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["11l_ema_leaky", "sp_recent"])
def test_stack_trains_alike_in_both_backends(name, synthetic_data, one_torch_thread):
    """The whole stack (every knob at once, fast's shape) on a small synthetic stream: both trainers follow the
    same loss curve (measured: step losses within 2e-5, val_bpb within 6e-6)."""
    pytest.importorskip("mlx.core")
    import numpy as np

    import train_gpt_mlx as tm
    data = synthetic_data
    cfg = stacks.stack_config(name, "fast", iterations=4, vocab_size=128, val_batch_size=2048, train_batch_tokens=512)
    a, b = tg.train(cfg, 1, data=data), tm.train(cfg, 1, data=data)
    assert a.status == b.status == "ok"
    np.testing.assert_allclose(a.step_losses, b.step_losses, atol=1e-4)
    assert abs(a.val_bpb - b.val_bpb) < 1e-4


def test_a_screen_on_a_stack_uses_it_as_control_and_refuses_its_own_parts():
    from scripts.causal.experiment_runner import build_plan

    free = next(iv.name for iv in reg.list_interventions() if iv.category != "calibration"
                and stacks.stack_conflict("11l_ema_leaky", iv.name, "fast") is None)
    plan = build_plan(interventions=["aa", free], seeds=[1, 2, 3], preset="fast", stack="11l_ema_leaky")
    control = plan.configs["control"]
    assert control == stacks.stack_config("11l_ema_leaky", "fast") and control.num_layers == 6
    assert plan.preregistration()["stack"] == "11l_ema_leaky"
    with pytest.raises(ConfigError, match="already part of stack '11l_ema_leaky'"):
        build_plan(interventions=["mlp_mult_3"], seeds=[1, 2, 3], preset="fast", stack="11l_ema_leaky")
