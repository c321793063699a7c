"""Leaderboard stacks as controls: a record's configuration at full scale, and the same stack scaled to a proxy.

A stack is a list of registry interventions (each resolved on the config built so far, so its preset-relative
and step-dependent values scale with the preset: ``fast`` gets 6 layers where the record has 11, an EMA whose
horizon is the same fraction of training), plus the record's optimizer values that hold at every scale, plus
literal values applied only at full scale (the ``baseline`` preset: the record's sequence length, batch and
step-valued settings, for H100).

A screen run on a stack uses ``stack_config(stack, preset)`` as its control, and refuses an intervention the
stack already contains (``stack_conflict``).

API: ``STACKS``, ``get_stack(name)``, ``stack_config(stack, preset)``, ``stack_conflict(stack, intervention,
preset)``, ``list_stacks()``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.screen import registry as reg

FULL_SCALE_PRESET = "baseline"


@dataclasses.dataclass(frozen=True)
class Stack:
    """One leaderboard record's training configuration, minus what this trainer cannot express or the stack leaves
    out on purpose (``omitted``)."""

    name: str
    record: str  # folder under records/track_10min_16mb/
    val_bpb: float | None  # the record's reported score (with its export and eval), for orientation only
    description: str
    interventions: tuple[str, ...]  # registry entries, applied in order and scaled per preset
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the record's values, every preset
    full_scale: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # literal values at full scale only
    omitted: str = ""


_ELEVEN_LAYER = Stack(
    "11l_ema_leaky", "2026-03-23_LeakyReLU_LegalTTT_ParallelMuon", 1.1194,
    "the 11L generation (March 20-23): 11 layers, MLP 3x LeakyReLU(0.5)^2, XSA on the last 4, partial RoPE 16/64, "
    "LN scale, EMA 0.997, Muon WD 0.04 and momentum 0.99, SmearGate, BigramHash 2048, value embeddings on 9,10",
    ("num_layers_plus2", "mlp_mult_3", "act_leaky_relu2", "xsa_last4", "partial_rope", "ln_scale", "ema_0997",
     "muon_wd_004", "muon_momentum_099", "smear_gate", "bigram_hash", "value_embeddings"),
    hparams={"matrix_lr": 0.025, "scalar_lr": 0.025, "tied_embed_lr": 0.035, "grad_clip_norm": 0.3,
             "warmdown_frac": 3500 / reg.STEPS_11L_EMA},
    full_scale={"train_seq_len": 2048, "train_batch_tokens": 786_432, "warmdown_frac": 0.0, "warmdown_iters": 3500,
                "ema_decay": 0.997, "muon_momentum_warmup_steps": 1500},
    omitted="int6 QAT and GPTQ-lite export, sliding-window eval and legal TTT (the quantization/eval issue); "
            "Adam weight decay 0.04 (the knob exists as the registry entry adam_wd_004, left out of the stack so "
            "that the committed screen results/stack_11l_fast stays reproducible); SWA (not combined with EMA "
            "here); its SmearGate was the earlier per-dim gate, here the BOS-fixed one",
)

_RECENT = Stack(
    "sp_recent", "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611", 1.0611,
    "the April SP-vocab stack: 11 layers, MLP 4x LeakyReLU^2, XSA on all, partial RoPE, LN scale, QK gain 5, "
    "gated skips, 2-lane parallel residuals from layer 8, layers 3-5 looped twice from 35%, sparse attention "
    "gate, SmearGate (BOS fix), Polar-Express MuonEq-R with WD 0.095, warmdown 85% to MIN_LR 0.1, EMA 0.9965",
    ("num_layers_plus2", "mlp_mult_4", "act_leaky_relu2", "xsa_all", "partial_rope", "ln_scale", "qk_gain_5",
     "skip_gates", "parallel_residuals", "depth_recurrence", "attn_gate_sparse", "smear_gate", "polar_express",
     "muoneq_r", "muon_wd_0095", "muon_momentum_097", "warmdown_frac_075", "min_lr_010", "ema_09965"),
    hparams={"matrix_lr": 0.026, "scalar_lr": 0.02, "tied_embed_lr": 0.03, "beta2": 0.99, "grad_clip_norm": 0.3,
             "warmdown_frac": 0.85},
    full_scale={"train_seq_len": 2048, "train_batch_tokens": 786_432, "ema_decay": 0.9965,
                "muon_momentum_warmup_steps": 1500},
    omitted="the SP8192 CaseOps tokenizer (the data here are SP1024), GPTQ int6/int7 with LQER and per-group "
            "compression, phased TTT (the quantization/eval issue), YaRN, fused kernels, Adam/embedding weight decay",
)

STACKS: dict[str, Stack] = {
    "march_baseline": Stack("march_baseline", "2026-03-17_NaiveBaseline", 1.2244,
                            "the March baseline: the preset itself", ()),
    _ELEVEN_LAYER.name: _ELEVEN_LAYER,
    _RECENT.name: _RECENT,
}


def list_stacks() -> list[Stack]:
    return list(STACKS.values())


def get_stack(name: str) -> Stack:
    try:
        return STACKS[name]
    except KeyError:
        raise ConfigError(f"unknown stack {name!r}; choose one of {sorted(STACKS)}") from None


def stack_config(stack: str, preset: str, **overrides: Any) -> tg.Hyperparameters:
    """The control config of ``stack`` at ``preset``: the preset, each stack intervention resolved in order,
    the record's scale-free values, and at full scale the record's literal values; then ``overrides``.
    Raises registry.NotRepresentable when a stack intervention cannot be expressed at this preset."""
    st = get_stack(stack)
    try:
        cfg = tg.preset_config(preset)
    except tg.ConfigValueError as exc:
        raise ConfigError(str(exc)) from None
    for name in st.interventions:
        reason = reg.representable(name, cfg)
        if reason is not None:
            raise reg.NotRepresentable(f"stack {stack!r} at preset {preset!r}: {name}: {reason}")
        cfg = reg.apply(name, cfg)
    extra = {**st.hparams, **(st.full_scale if preset == FULL_SCALE_PRESET else {}), **overrides}
    try:
        return cfg.with_overrides(extra)
    except tg.ConfigValueError as exc:
        raise ConfigError(f"stack {stack!r} at preset {preset!r}: {exc}") from None


def stack_conflict(stack: str, intervention: str, preset: str) -> str | None:
    """Why ``intervention`` cannot be screened on ``stack`` at ``preset`` (None when it can): it is part of the
    stack, it changes a feature the stack already sets through another entry, or it changes nothing there."""
    st = get_stack(stack)
    iv = reg.get_intervention(intervention)
    if iv.name in st.interventions:
        return f"{iv.name} is already part of stack {stack!r} (record {st.record}); it cannot be its own treatment"
    owners = [n for n in st.interventions if iv.feature is not None and reg.get_intervention(n).feature == iv.feature]
    if owners and iv.feature not in _TUNABLE_FEATURES:
        return (f"{iv.name} changes {iv.feature!r}, which stack {stack!r} already sets through {owners[0]}; "
                "screen a different value with --override instead")
    control = stack_config(stack, preset)
    reason = reg.representable(iv.name, control)
    if reason is not None:
        return reason
    if tg.config_hash(reg.apply(iv.name, control)) == tg.config_hash(control):
        return f"{iv.name} changes nothing on stack {stack!r} at preset {preset!r}"
    return None


# Features whose value a stack may sensibly move further (more layers, a wider MLP, another QK gain).
_TUNABLE_FEATURES = ("num_layers", "model_dim", "mlp_mult", "qk_gain", "logit_softcap", "muon_weight_decay")
