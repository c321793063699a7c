#!/usr/bin/env python3
"""
The MLX twin of train_gpt.py: the same Parameter Golf baseline and screening knobs, trained with MLX.

It shares everything that is not framework code with train_gpt.py (the Hyperparameters dataclass and its
presets, the shard reader, the SentencePiece byte LUTs, the data order, the keyed initialisation, the int8+zlib
artifact format and the RunResult shape), so a config means the same thing on both backends and a parity test
can copy torch weights into this model by name. Runs as a script (env-var config, upstream's final line) and
imports with no side effects beyond making mlx[cpu] use OpenBLAS on Linux (scripts/causal/screen/mlx_blas.py).
Hard cap: at most 1500 lines.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

try:  # must run before the first `import mlx`: mlx[cpu] on Linux otherwise keeps its reference BLAS
    from scripts.causal.screen.mlx_blas import ensure_fast_blas
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


# -----------------------------
# EVALUATION
# -----------------------------
# val_loss: token CE (nats) over the FULL val split; val_bpb = bits/token x tokens/byte, bytes counted with the
# SentencePiece tables of train_gpt.py. Batched by val_batch_size tokens, sums in float64, as train_gpt.eval_val.


class EvalSet:
    """The trimmed val split as (N, seq_len) inputs/targets plus its total byte count (computed once)."""

    def __init__(self, val_tokens: np.ndarray, luts, seq_len: int):
        tokens = tg.trim_val_tokens(np.asarray(val_tokens), seq_len).astype(np.int64)
        self.x = tokens[:-1].reshape(-1, seq_len)
        self.y = tokens[1:].reshape(-1, seq_len)
        self.seq_len = seq_len
        self.total_bytes = tg.count_target_bytes(self.x.reshape(-1), self.y.reshape(-1), luts)


def eval_val(cfg, model: GPT, ev: EvalSet) -> tuple[float, float]:
    """(val_loss, val_bpb) of ``model`` on the full validation split."""
    batch_seqs = max(1, cfg.val_batch_size // ev.seq_len)
    loss_sum, token_count = 0.0, 0
    for start in range(0, ev.x.shape[0], batch_seqs):
        x = mx.array(ev.x[start : start + batch_seqs].astype(np.int32))
        y = mx.array(ev.y[start : start + batch_seqs].astype(np.int32))
        n = int(y.size)
        loss_sum += float(model.eval_loss(x, y).item()) * n
        token_count += n
    val_loss = loss_sum / token_count
    return val_loss, val_loss / math.log(2.0) * token_count / ev.total_bytes


def eval_sliding(cfg, model: GPT, ev: EvalSet) -> tuple[float, float]:
    """(val_loss, val_bpb) with sliding windows advancing eval_stride targets (train_gpt.eval_sliding's plan)."""
    tokens = np.concatenate([ev.x.reshape(-1), ev.y[-1, -1:]])
    window, n = ev.seq_len, tokens.size - 1
    plan = tg.sliding_window_plan(n, window, cfg.eval_stride or window)
    batch, offset, nll = max(1, cfg.val_batch_size // window), np.arange(window)[None, :], 0.0
    for b in range(0, len(plan), batch):
        rows = plan[b : b + batch]
        idx = rows[:, :1] + np.arange(window + 1)[None, :]
        x, y = mx.array(tokens[idx[:, :-1]].astype(np.int32)), mx.array(tokens[idx[:, 1:]].astype(np.int32))
        losses = np.array(model.token_losses(x, y).astype(mx.float32)).reshape(len(rows), window).astype(np.float64)
        keep = (offset >= (rows[:, 1:2] - rows[:, :1])) & (offset < (rows[:, 2:3] - rows[:, :1]))
        nll += float(losses[keep].sum())
    return tg.bits_per_byte(nll, n, ev.total_bytes)


# -----------------------------
# INT8 + ZLIB ROUND TRIP
# -----------------------------
# The artifact format is train_gpt.py's (same quantiser, same serialisation), so artifact bytes compare across
# backends; only the array conversion is MLX-specific.


def export_params(params: dict[str, mx.array]) -> dict[str, mx.array]:
    return {k: v for k, v in params.items() if not k.startswith(tg.EXPORT_EXCLUDED_PREFIXES)}


def int8_zlib_roundtrip(params: dict[str, mx.array]) -> tuple[bytes, dict[str, int], dict[str, mx.array]]:
    """Quantise + compress the exportable params; return (blob, stats, dequantised params)."""
    blob, stats = tg.serialize_int8_zlib(params_to_torch(export_params(params)))
    restored = params_from_torch(tg.deserialize_int8_zlib(blob))
    return blob, stats, restored


def export_roundtrip(params: dict[str, mx.array], spec) -> tuple[bytes, dict[str, int], dict[str, mx.array]]:
    """As int8_zlib_roundtrip, in the format `spec` (a train_gpt.ExportSpec) names: upstream's for the defaults,
    else the shared numpy export (train_gpt.pack_artifact)."""
    if spec.is_upstream_int8:
        return int8_zlib_roundtrip(params)
    arrays = {k: np.array(v.astype(mx.float32)) for k, v in export_params(params).items()}
    blob, stats = tg.pack_artifact(arrays, spec)
    return blob, stats, {k: mx.array(v) for k, v in tg.unpack_artifact(blob, spec.compressor).items()}


# -----------------------------
# TRAINING
# -----------------------------


def library_versions() -> dict[str, str]:
    versions = tg.library_versions()
    versions["mlx"] = getattr(mx, "__version__", "unknown")
    if BLAS_STATUS is not None and BLAS_STATUS.applicable:
        versions["mlx_blas"] = BLAS_STATUS.loaded or "bundled-reference"
    return versions


def _noop_log(msg: str) -> None:
    return None


class _Stepper:
    """One optimisation step: loss + grads (optionally mx.compile'd), clip, schedule, optimizer update."""

    def __init__(self, cfg, model: GPT, opts: Optimizers, *, compiled: bool):
        self.cfg, self.model, self.opts = cfg, model, opts
        self._loss_and_grad = nn.value_and_grad(model, lambda x, y: model(x, y))
        if compiled:
            state = [model.state]
            self._loss_and_grad = mx.compile(self._loss_and_grad, inputs=state, outputs=state)

    def __call__(self, x: mx.array, y: mx.array, lr_scale: float, momentum: float) -> mx.array:
        loss, grads = self._loss_and_grad(x, y)
        grads = dict(tree_flatten(grads))
        if self.cfg.grad_clip_norm > 0:
            grads = clip_grad_norm(grads, self.cfg.grad_clip_norm)
        self.opts.set_schedule(lr_scale, momentum)
        params = self.opts.step(flat_params(self.model), grads)
        load_flat_params(self.model, params, strict=False)
        mx.eval(loss, self.model.parameters(), self.opts.state_arrays())
        return loss


def train(
    config, seed: int | None = None, *, log=None, data=None, out_dir: str | Path | None = None,
    compiled: bool = False,
) -> RunResult:
    """Train one model with MLX and evaluate it (full val split, then the int8+zlib round trip).

    Same contract as train_gpt.train: ``seed`` (default config.seed) fixes the name-keyed initialisation (bit-
    identical to torch's) and, with data_order="seeded", the data order (train_gpt.TokenLoader, so both backends
    see the same batches). ``data`` is a train_gpt.TrainData to reuse. A non-finite train loss stops the run with
    status "diverged"; other errors propagate. ``compiled=True`` wraps the loss+grad step in mx.compile; it is
    off by default whatever config.compile says (that knob is torch.compile on CUDA), because on a Linux CPU it
    was measured slower here (tiny preset: 47 vs 616 tokens/s).
    """
    t_start = time.perf_counter()
    log = log or _noop_log
    if not isinstance(config, Hyperparameters):  # a mapping of overrides, optionally naming its "preset"
        overrides = dict(config)
        config = tg.preset_config(str(overrides.pop("preset", "baseline")), **overrides)
    cfg = config
    cfg = cfg if seed is None else cfg.with_overrides(seed=seed)
    seed = cfg.seed
    torch_only = [k for k, off in (("qat", False), ("ttt", "off")) if getattr(cfg, k) != off]
    if torch_only:
        raise tg.ConfigValueError(f"{torch_only} are implemented in train_gpt.py only; run them with the torch backend")
    if data is None:
        cfg = tg.resolve_data_paths(cfg)
        data = tg.load_train_data(cfg)
    else:
        cfg = cfg.with_overrides(data_path=data.data_path, tokenizer_path=data.tokenizer_path)
    if data.vocab_size != cfg.vocab_size:
        raise tg.ConfigValueError(f"VOCAB_SIZE={cfg.vocab_size} does not match the loaded data's {data.vocab_size}")
    compiled = bool(compiled)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed % 2**32)
    ev = EvalSet(data.val_tokens, data.luts, cfg.train_seq_len)
    log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={cfg.tokenizer_path}")
    log(f"train_loader:dataset:{Path(cfg.data_path).name} train_shards:{len(data.train_shards)}")
    log(f"val_loader:shards pattern={cfg.val_files} tokens:{ev.y.size}")
    if BLAS_STATUS is not None and BLAS_STATUS.applicable:
        log(f"mlx_blas:{BLAS_STATUS.loaded or 'bundled-reference'}")

    model = GPT(cfg)
    init = init_params(cfg, seed)
    load_flat_params(model, init)
    opts = Optimizers(cfg, init)
    stepper = _Stepper(cfg, model, opts, compiled=compiled)
    log(f"model_params:{sum(int(v.size) for v in init.values())}")
    log(f"backend:mlx device:{mx.default_device()} compiled:{compiled}")
    log(f"tie_embeddings:{cfg.tie_embeddings} matrix_lr:{cfg.matrix_lr} scalar_lr:{cfg.scalar_lr}")
    log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
        f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
        f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
    log(f"activation:{cfg.activation} loss:{cfg.loss} rope_partial_dims:{cfg.rope_partial_dims} "
        f"ln_scale:{cfg.ln_scale} xsa_last_n:{cfg.xsa_last_n} ema_decay:{cfg.ema_decay} data_order:{cfg.data_order}")
    log(f"seed:{seed} config_hash:{tg.config_hash(cfg)}")

    def new_loader():
        return tg.TokenLoader(data.train_shards, order=cfg.data_order, seed=seed)

    def next_batch(loader) -> tuple[mx.array, mx.array]:
        x, y = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, 1)
        return mx.array(x.numpy().astype(np.int32)), mx.array(y.numpy().astype(np.int32))

    loader = new_loader()
    lr_mul = tg.make_lr_schedule(cfg)
    max_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else None

    # Warmup primes the (compiled) step, then restores the initial weights, optimizer state and data order.
    if cfg.warmup_steps > 0:
        for warmup_step in range(cfg.warmup_steps):
            stepper(*next_batch(loader), 1.0, cfg.muon_momentum_warmup_start)
            if cfg.warmup_steps <= 20 or (warmup_step + 1) % 10 == 0 or warmup_step + 1 == cfg.warmup_steps:
                log(f"warmup_step:{warmup_step + 1}/{cfg.warmup_steps}")
        load_flat_params(model, init)
        opts = Optimizers(cfg, init)
        stepper.opts = opts
        loader = new_loader()

    ema = dict(init) if cfg.ema_decay > 0 else None
    step_losses: list[float] = []
    val_history: list[dict[str, float]] = []
    status, error = "ok", None
    training_ms, stop_after, step = 0.0, None, 0
    t0 = time.perf_counter()
    while True:
        last = step == cfg.iterations or (stop_after is not None and step >= stop_after)
        if not last and cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0:
            training_ms += 1000.0 * (time.perf_counter() - t0)
            vl, vb = eval_val(cfg, model, ev)
            val_history.append({"step": step, "val_loss": vl, "val_bpb": vb})
            log(f"step:{step}/{cfg.iterations} val_loss:{vl:.4f} val_bpb:{vb:.4f} "
                f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
            t0 = time.perf_counter()
        if last:
            if stop_after is not None and step < cfg.iterations:
                log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{cfg.iterations}")
            break
        scale = lr_mul(step, training_ms + 1000.0 * (time.perf_counter() - t0))
        frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
        momentum = (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
        loss = stepper(*next_batch(loader), scale, momentum)
        if ema is not None:
            d = cfg.ema_decay
            ema = {k: d * ema[k] + (1.0 - d) * v for k, v in flat_params(model).items()}
            mx.eval(list(ema.values()))
        step += 1
        loss_value = float(loss.item())
        step_losses.append(loss_value)
        approx_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        if not math.isfinite(loss_value):
            status, error = "diverged", f"train loss became {loss_value} at step {step}"
            log(f"step:{step}/{cfg.iterations} train_loss:{loss_value} diverged: stopping")
            training_ms = approx_ms
            break
        if cfg.train_log_every > 0 and (step <= 10 or step % cfg.train_log_every == 0 or stop_after is not None):
            log(f"step:{step}/{cfg.iterations} train_loss:{loss_value:.4f} "
                f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        if stop_after is None and max_ms is not None and approx_ms >= max_ms:
            stop_after = step
    if status == "ok":
        training_ms += 1000.0 * (time.perf_counter() - t0)

    base = dict(config=cfg.to_dict(), config_hash=tg.config_hash(cfg), seed=seed, backend="mlx",
                versions=library_versions(), step_losses=step_losses, steps=step,
                tokens_per_s=step * cfg.train_batch_tokens / max(training_ms / 1000.0, 1e-9))
    if status != "ok":
        return RunResult(**base, val_history=val_history, wall_s=time.perf_counter() - t_start, status=status,
                         error=error)

    if ema is not None:
        load_flat_params(model, ema)
        log(f"ema:applied decay:{cfg.ema_decay}")
    val_loss, val_bpb = eval_val(cfg, model, ev)
    val_history.append({"step": step, "val_loss": val_loss, "val_bpb": val_bpb})
    log(f"step:{step}/{cfg.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
        f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")

    code_bytes = len(Path(__file__).read_bytes())
    final = flat_params(model)
    spec = tg.ExportSpec.from_config(cfg)
    fmt = "int8+zlib" if spec.is_upstream_int8 else spec.label()
    blob, qstats, restored = export_roundtrip(final, spec)
    budget = tg.BudgetCheck(len(blob), code_bytes)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tg.torch.save(params_to_torch(export_params(final)), out / "final_model_mlx.pt")
        (out / ("final_model_mlx.int8.ptz" if spec.is_upstream_int8 else "final_model_mlx.pgq.ptz")).write_bytes(blob)
    if spec.is_upstream_int8:
        ratio = qstats["baseline_tensor_bytes"] / max(qstats["int8_payload_bytes"], 1)
        log(f"Serialized model int8+zlib: {len(blob)} bytes (payload:{qstats['int8_payload_bytes']} "
            f"raw_torch:{qstats['raw_torch_bytes']} payload_ratio:{ratio:.2f}x)")
    else:
        log(f"Serialized model {fmt}: {len(blob)} bytes (payload:{qstats['payload_bytes']} raw:{qstats['raw_bytes']})")
    log(f"Total submission size {fmt}: {budget.artifact_bytes} bytes")
    log(f"artifact_budget: {budget.message()}")
    load_flat_params(model, restored, strict=False)
    eval_s: dict[str, float] = {}
    t_q = time.perf_counter()
    q_loss, q_bpb = eval_val(cfg, model, ev)
    eval_s["post_quant"] = time.perf_counter() - t_q
    tag = "int8_zlib" if spec.is_upstream_int8 else "export"
    log(f"final_{tag}_roundtrip val_loss:{q_loss:.4f} val_bpb:{q_bpb:.4f} "
        f"eval_time:{1000.0 * eval_s['post_quant']:.0f}ms")
    log(f"final_{tag}_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")
    stages: dict[str, float] = {}
    if cfg.eval_stride > 0:
        t_s = time.perf_counter()
        stages["sliding_val_loss"], stages["sliding_val_bpb"] = eval_sliding(cfg, model, ev)
        eval_s["sliding"] = time.perf_counter() - t_s
        log(f"final_sliding val_loss:{stages['sliding_val_loss']:.8f} val_bpb:{stages['sliding_val_bpb']:.8f} "
            f"eval_time:{1000.0 * eval_s['sliding']:.0f}ms")
    return RunResult(**base, val_history=val_history, val_loss=val_loss, val_bpb=val_bpb, post_quant_val_loss=q_loss,
                     post_quant_val_bpb=q_bpb, **stages, artifact_bytes=budget.artifact_bytes,
                     model_bytes=budget.model_bytes, code_bytes=code_bytes, within_budget=budget.within_budget,
                     export_format=fmt, eval_s=eval_s, wall_s=time.perf_counter() - t_start, status="ok", error=None)


def main(argv: list[str] | None = None) -> int:
    """Script entry: config from env (PRESET, then UPPER-case fields), logs in logs/<run_id>.txt."""
    cfg = Hyperparameters.from_env()
    if not cfg.run_id:
        cfg = cfg.with_overrides(run_id=str(uuid.uuid4()))
    if BLAS_STATUS is not None and BLAS_STATUS.hint:
        print(f"hint: {BLAS_STATUS.hint}", file=sys.stderr)
    os.makedirs("logs", exist_ok=True)
    logfile = f"logs/{cfg.run_id}.txt"
    print(logfile)

    def log0(msg: str, console: bool = True) -> None:
        if console:
            print(msg, flush=True)
        with open(logfile, "a", encoding="utf-8") as f:
            print(msg, file=f)

    log0(Path(__file__).read_text(encoding="utf-8"), console=False)
    log0("=" * 100, console=False)
    log0(f"Running Python {sys.version}", console=False)
    log0(f"Running MLX {getattr(mx, '__version__', 'unknown')}", console=False)
    log0(f"config:{json.dumps(cfg.to_dict(), sort_keys=True)}", console=False)
    log0("=" * 100, console=False)
    result = train(cfg, cfg.seed, log=log0, out_dir=Path("."))
    if result.status != "ok":
        log0(f"run_status:{result.status} error:{result.error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
