#!/usr/bin/env python3
"""
The MLX twin of train_gpt.py: the same Parameter Golf baseline and screening knobs, trained with MLX.

It shares everything that is not framework code with train_gpt.py (the Hyperparameters dataclass and its
presets, the shard reader, the SentencePiece byte LUTs, the data order, the keyed initialisation, the int8+zlib
artifact format and the RunResult shape), so a config means the same thing on both backends and a parity test
can copy torch weights into this model by name. Runs as a script (env-var config, upstream's final line) and
imports with no side effects beyond making mlx[cpu] use OpenBLAS on Linux (scripts/causal/blas.py).
Hard cap: at most 1500 lines.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

try:  # must run before the first `import mlx`: mlx[cpu] on Linux otherwise keeps its reference BLAS
    from scripts.causal.blas import ensure_fast_blas
except ImportError:  # this file copied somewhere on its own: run with whatever BLAS mlx has
    ensure_fast_blas = None
BLAS_STATUS = ensure_fast_blas() if ensure_fast_blas is not None else None

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

import train_gpt as tg  # noqa: E402

Hyperparameters = tg.Hyperparameters
RunResult = tg.RunResult

# -----------------------------
# MATH HELPERS
# -----------------------------

RMS_EPS = float(np.finfo(np.float32).eps)  # torch F.rms_norm's default eps for fp32


def rms_norm(x: mx.array, eps: float = RMS_EPS) -> mx.array:
    return x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + eps)


def activation_fn(name: str):
    """The MLP nonlinearity by config name (same table as train_gpt.py)."""
    table = {
        "relu2": lambda x: mx.square(mx.maximum(x, 0.0)),
        "leaky_relu2": lambda x: mx.square(mx.where(x >= 0, x, 0.5 * x)),
        "gelu": lambda x: 0.5 * x * (1.0 + mx.erf(x / math.sqrt(2.0))),
        "silu": lambda x: x * mx.sigmoid(x),
        "sin2": lambda x: mx.square(mx.sin(x)),
    }
    if name not in table:
        raise ValueError(f"activation={name!r} is not one of {sorted(table)}")
    return table[name]


# -----------------------------
# MUON + ADAM (MLX)
# -----------------------------


def zeropower_via_newtonschulz5(g: mx.array, steps: int = 10, eps: float = 1e-7) -> mx.array:
    """Orthogonalise a 2D update with the quintic Newton-Schulz iteration (fp32 here, as on CPU in torch)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.astype(mx.float32)
    x = x / (mx.sqrt(mx.sum(x * x)) + eps)
    transposed = g.shape[0] > g.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        a_mat = x @ x.T
        b_mat = b * a_mat + c * (a_mat @ a_mat)
        x = a * x + b_mat @ x
    return x.T if transposed else x


class Muon:
    """Momentum (Nesterov) + Newton-Schulz orthogonalised updates for the matrix parameters."""

    def __init__(self, names: list[str], *, lr: float, momentum: float, backend_steps: int, nesterov: bool = True):
        self.names, self.base_lr, self.lr = list(names), lr, lr
        self.momentum, self.backend_steps, self.nesterov = momentum, backend_steps, nesterov
        self.buf: dict[str, mx.array] = {}

    def step(self, params: dict[str, mx.array], grads: dict[str, mx.array]) -> dict[str, mx.array]:
        out = {}
        for name in self.names:
            p, g = params[name], grads[name]
            buf = self.buf.get(name)
            buf = g if buf is None else self.momentum * buf + g
            self.buf[name] = buf
            if self.nesterov:
                g = g + self.momentum * buf
            g = zeropower_via_newtonschulz5(g, steps=self.backend_steps)
            g = g * max(1.0, g.shape[0] / g.shape[1]) ** 0.5
            out[name] = p - self.lr * g
        return out

    def state_arrays(self) -> list[mx.array]:
        return list(self.buf.values())


class Adam:
    """torch.optim.Adam semantics (bias-corrected, eps outside the sqrt, no weight decay)."""

    def __init__(self, names: list[str], *, lr: float, betas: tuple[float, float], eps: float):
        self.names, self.base_lr, self.lr = list(names), lr, lr
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m: dict[str, mx.array] = {}
        self.v: dict[str, mx.array] = {}
        self.t = 0

    def step(self, params: dict[str, mx.array], grads: dict[str, mx.array]) -> dict[str, mx.array]:
        self.t += 1
        bc1 = 1.0 - self.beta1**self.t
        bc2 = 1.0 - self.beta2**self.t
        out = {}
        for name in self.names:
            p, g = params[name], grads[name]
            m = self.beta1 * self.m.get(name, mx.zeros_like(g)) + (1.0 - self.beta1) * g
            v = self.beta2 * self.v.get(name, mx.zeros_like(g)) + (1.0 - self.beta2) * mx.square(g)
            self.m[name], self.v[name] = m, v
            out[name] = p - (self.lr / bc1) * m / (mx.sqrt(v) / math.sqrt(bc2) + self.eps)
        return out

    def state_arrays(self) -> list[mx.array]:
        return list(self.m.values()) + list(self.v.values())


# -----------------------------
# MODEL
# -----------------------------
# Module and parameter names match train_gpt.py's state_dict exactly (tok_emb.weight, blocks.{i}.attn.c_q.weight,
# blocks.{i}.attn.q_gain, blocks.{i}.mlp.fc.weight, ..., skip_weights, lm_head.weight, mtp_head.weight), so
# weights copy by name in both directions. Parameter-free RMSNorms are plain function calls here.


class CastedLinear(nn.Module):
    """Bias-free linear layer holding a torch-layout (out, in) fp32 weight."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = mx.zeros((out_dim, in_dim), dtype=mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.weight.T


_ROPE_TABLES: dict[tuple[int, int, float], tuple[mx.array, mx.array]] = {}


def rotary_tables(seq_len: int, rope_dims: int, base: float) -> tuple[mx.array, mx.array]:
    """cos/sin of shape (1, 1, seq_len, rope_dims/2), computed in fp32 as torch's Rotary does (cached)."""
    key = (seq_len, rope_dims, float(base))
    if key not in _ROPE_TABLES:
        inv_freq = 1.0 / (base ** (np.arange(0, rope_dims, 2, dtype=np.float32) / np.float32(rope_dims)))
        freqs = np.outer(np.arange(seq_len, dtype=np.float32), inv_freq.astype(np.float32))
        _ROPE_TABLES[key] = (mx.array(np.cos(freqs)[None, None]), mx.array(np.sin(freqs)[None, None]))
    return _ROPE_TABLES[key]


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array, rope_dims: int) -> mx.array:
    """Rotate the first ``rope_dims`` dims of each head (split-halves convention of train_gpt.py)."""
    half = rope_dims // 2
    x1, x2 = x[..., :half], x[..., half:rope_dims]
    parts = [x1 * cos + x2 * sin, x2 * cos - x1 * sin]
    if rope_dims < x.shape[-1]:
        parts.append(x[..., rope_dims:])
    return mx.concatenate(parts, axis=-1)


def exclusive_self_attention(y: mx.array, v: mx.array) -> mx.array:
    """XSA: remove from each head's output its component along the token's own (unit) value vector.

    y: (B, H, T, D) attention output; v: (B, Hkv, T, D) values (a GQA group shares its kv head).
    """
    bsz, heads, seqlen, hd = y.shape
    kv_heads = v.shape[1]
    y_g = y.reshape(bsz, kv_heads, heads // kv_heads, seqlen, hd)
    vn = v / mx.maximum(mx.sqrt(mx.sum(v * v, axis=-1, keepdims=True)), 1e-12)
    vn = vn[:, :, None]
    y_g = y_g - mx.sum(y_g * vn, axis=-1, keepdims=True) * vn
    return y_g.reshape(bsz, heads, seqlen, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        dim, self.num_heads, self.num_kv_heads = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
        self.head_dim = dim // self.num_heads
        self.rope_dims = cfg.rope_partial_dims or self.head_dim
        self.rope_base = float(cfg.rope_base)
        self.xsa = layer_idx >= cfg.num_layers - cfg.xsa_last_n
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim)
        self.q_gain = mx.full((self.num_heads,), float(cfg.qk_gain_init), dtype=mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        cos, sin = rotary_tables(seqlen, self.rope_dims, self.rope_base)
        q = apply_rotary(rms_norm(q), cos, sin, self.rope_dims)
        k = apply_rotary(rms_norm(k), cos, sin, self.rope_dims)
        q = q * self.q_gain[None, :, None, None]
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask="causal")
        if self.xsa:
            y = exclusive_self_attention(y, v)
        return self.proj(y.transpose(0, 2, 1, 3).reshape(bsz, seqlen, dim))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = CastedLinear(cfg.model_dim, hidden)
        self.proj = CastedLinear(hidden, cfg.model_dim)
        self.act = activation_fn(cfg.activation)

    def __call__(self, x: mx.array) -> mx.array:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        dim = cfg.model_dim
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.attn_scale = mx.ones((dim,), dtype=mx.float32)
        self.mlp_scale = mx.ones((dim,), dtype=mx.float32)
        self.resid_mix = mx.array(np.stack([np.ones(dim), np.zeros(dim)]).astype(np.float32))
        self.norm_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0  # ln_scale knob

    def __call__(self, x: mx.array, x0: mx.array) -> mx.array:
        mix = self.resid_mix
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        h = rms_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        x = x + self.attn_scale[None, None, :] * self.attn(h)
        h = rms_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        return x + self.mlp_scale[None, None, :] * self.mlp(h)


class GPT(nn.Module):
    """The baseline U-Net-style GPT (first half of the blocks stores skips, the second half adds them back).

    ``model(x, y)`` is the training objective for cfg.loss (ce | rho1 | mtp); ``model.eval_loss(x, y)`` is plain
    next-token CE, which is what evaluation uses (train_gpt.py's eval mode).
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.logit_softcap <= 0.0:
            raise ValueError(f"logit_softcap must be positive, got {cfg.logit_softcap}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        num_skip = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = mx.ones((num_skip, cfg.model_dim), dtype=mx.float32)
        self.blocks = [Block(cfg, i) for i in range(cfg.num_layers)]
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(cfg.model_dim, cfg.vocab_size)
        if cfg.loss == "mtp":  # training-only projection of the last hidden state whose logits predict token t+2
            self.mtp_head = CastedLinear(cfg.model_dim, cfg.model_dim)

    def hidden(self, input_ids: mx.array) -> mx.array:
        """Residual stream after the last block (before final_norm)."""
        x = rms_norm(self.tok_emb(input_ids))
        x0, skips = x, []
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            if skips:
                x = x + self.skip_weights[i][None, None, :] * skips.pop()
            x = self.blocks[self.num_encoder_layers + i](x, x0)
        return x

    def logits(self, h: mx.array) -> mx.array:
        """Soft-capped logits of final-normed hidden states h (..., dim)."""
        proj = h @ self.tok_emb.weight.T if self.cfg.tie_embeddings else self.lm_head(h)
        cap = self.cfg.logit_softcap
        return cap * mx.tanh(proj / cap)

    def token_losses(self, input_ids: mx.array, target_ids: mx.array, x: mx.array | None = None) -> mx.array:
        """Next-token cross-entropy of every target, flat (B*T,)."""
        x = self.hidden(input_ids) if x is None else x
        h = rms_norm(x).reshape(-1, self.cfg.model_dim)
        return cross_entropy(self.logits(h), target_ids.reshape(-1))

    def eval_loss(self, input_ids: mx.array, target_ids: mx.array) -> mx.array:
        return mx.mean(self.token_losses(input_ids, target_ids))

    def __call__(self, input_ids: mx.array, target_ids: mx.array) -> mx.array:
        cfg = self.cfg
        x = self.hidden(input_ids)
        tok = self.token_losses(input_ids, target_ids, x)
        if cfg.loss == "ce":
            return mx.mean(tok)
        if cfg.loss == "rho1":
            return rho1_loss(tok, cfg.rho1_keep_frac)
        main = mx.mean(tok)  # mtp: main CE + mtp_weight x CE of token t+2 predicted at position t
        if target_ids.shape[1] < 2:
            return main
        h2 = rms_norm(self.mtp_head(x[:, :-1])).reshape(-1, cfg.model_dim)
        aux = mx.mean(cross_entropy(self.logits(h2), target_ids[:, 1:].reshape(-1)))
        return main + cfg.mtp_weight * aux


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-row natural-log cross-entropy (fp32)."""
    logits = logits.astype(mx.float32)
    return mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]


def rho1_keep_count(n: int, keep_frac: float) -> int:
    """How many of n tokens rho1 keeps: int(keep_frac * n), at least one (as train_gpt.py)."""
    return max(1, int(keep_frac * n))


def rho1_loss(tok_loss: mx.array, keep_frac: float) -> mx.array:
    """Mean CE over the hardest rho1_keep_count tokens (never empty)."""
    k = rho1_keep_count(tok_loss.shape[0], keep_frac)
    idx = mx.stop_gradient(mx.argpartition(-tok_loss, kth=k - 1)[:k])
    return mx.mean(mx.take(tok_loss, idx))


# -----------------------------
# WEIGHTS <-> TORCH, INIT, OPTIMIZER GROUPS
# -----------------------------


def flat_params(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def load_flat_params(model: nn.Module, params: dict[str, mx.array], *, strict: bool = True) -> None:
    """Set parameters by torch-style dotted name; with strict, names must match the model's exactly."""
    if strict:
        have = set(flat_params(model))
        missing, unexpected = sorted(have - set(params)), sorted(set(params) - have)
        if missing or unexpected:
            raise KeyError(f"parameter names differ: missing={missing} unexpected={unexpected}")
    model.update(tree_unflatten(list(params.items())))


def params_from_torch(state_dict) -> dict[str, mx.array]:
    """torch state_dict (or named tensors) -> fp32 MLX arrays, same names."""
    return {k: mx.array(v.detach().to("cpu").float().numpy()) for k, v in state_dict.items()}


def params_to_torch(params: dict[str, mx.array]):
    return {k: tg.torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in params.items()}


def init_params(cfg, seed: int) -> dict[str, mx.array]:
    """train_gpt.py's name-keyed initialisation, bit for bit: the torch model is built and initialised with the
    same (seed, parameter name) generators, then copied. Both backends start from identical weights."""
    with tg.torch.no_grad():
        torch_model = tg.GPT.from_config(cfg)
        tg.init_weights(torch_model, seed)
        return params_from_torch(dict(torch_model.named_parameters()))


def is_control(name: str, ndim: int) -> bool:
    return ndim < 2 or any(p in name for p in tg.CONTROL_TENSOR_NAME_PATTERNS)


def param_groups(cfg, params: dict[str, mx.array]) -> dict[str, list[str]]:
    """Upstream's split (as train_gpt.build_optimizers): Adam for tok_emb (and an untied lm_head), Muon for block
    matrices and the mtp head, Adam at scalar_lr for vectors, control tensors and skip_weights."""
    groups: dict[str, list[str]] = {"tok": [], "head": [], "matrix": [], "scalar": []}
    for name, p in params.items():
        if name == "tok_emb.weight":
            groups["tok"].append(name)
        elif name == "lm_head.weight":
            groups["head"].append(name)
        elif name == "mtp_head.weight":
            groups["matrix"].append(name)
        elif name == "skip_weights" or (name.startswith("blocks.") and is_control(name, p.ndim)):
            groups["scalar"].append(name)
        elif name.startswith("blocks."):
            groups["matrix"].append(name)
        else:
            raise KeyError(f"parameter {name!r} has no optimizer group; add it to param_groups()")
    return groups


class Optimizers:
    """All of a run's optimizers, stepped together on flat name->array dicts."""

    def __init__(self, cfg, params: dict[str, mx.array]):
        groups = param_groups(cfg, params)
        betas = (cfg.beta1, cfg.beta2)
        token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        self.muon = Muon(groups["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                         backend_steps=cfg.muon_backend_steps)
        self.all = [Adam(groups["tok"], lr=token_lr, betas=betas, eps=cfg.adam_eps), self.muon,
                    Adam(groups["scalar"], lr=cfg.scalar_lr, betas=betas, eps=cfg.adam_eps)]
        if groups["head"]:
            self.all.insert(1, Adam(groups["head"], lr=cfg.head_lr, betas=betas, eps=cfg.adam_eps))

    def set_schedule(self, lr_scale: float, muon_momentum: float) -> None:
        for opt in self.all:
            opt.lr = opt.base_lr * lr_scale
        self.muon.momentum = muon_momentum

    def step(self, params: dict[str, mx.array], grads: dict[str, mx.array]) -> dict[str, mx.array]:
        new = dict(params)
        for opt in self.all:
            new.update(opt.step(params, grads))
        return new

    def state_arrays(self) -> list[mx.array]:
        return [a for opt in self.all for a in opt.state_arrays()]


def clip_grad_norm(grads: dict[str, mx.array], max_norm: float) -> dict[str, mx.array]:
    """torch.nn.utils.clip_grad_norm_ semantics: scale all grads by max_norm / (total_norm + 1e-6) if below 1."""
    total = mx.sqrt(sum(mx.sum(mx.square(g)) for g in grads.values()))
    coef = mx.minimum(max_norm / (total + 1e-6), 1.0)
    return {k: g * coef for k, g in grads.items()}
