#!/usr/bin/env python3
"""
The MLX twin of train_gpt.py: the same Parameter Golf baseline and screening knobs, trained with MLX.

Standalone: imports neither train_gpt.py nor torch nor scripts/, so it runs copied alone into a folder with mlx,
numpy and sentencepiece. What is not framework code (Hyperparameters and presets, shard reader and byte
accounting, data order, init keys, export constants, RunResult, lr schedule) is a verbatim copy of train_gpt.py's
`# >>> twin: NAME >>>` sections; tests/causal/test_standalone_trainers.py keeps the copies identical. Runs as a
script (env-var config, upstream's final line) and imports with no side effects.
On Linux a standalone run uses mlx[cpu]'s bundled reference BLAS (slow) unless the caller loads OpenBLAS before
the first `import mlx` (the screen adapter and benches call scripts/causal/screen/mlx_blas.py's
ensure_fast_blas(); by hand: LD_PRELOAD=libopenblas.so.0). At most 3,000 lines.
"""
from __future__ import annotations

import copy
import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import pickle
import platform
import struct
import sys
import time
import uuid
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

# -----------------------------
# DATA FORMAT (FineWeb shards)
# -----------------------------

# >>> twin: data-format >>>
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def shard_pattern(data_path: str | Path, split: str) -> str:
    """Glob of a split's shards in a dataset folder (upstream layout): fineweb_{train,val}_*.bin."""
    return os.path.join(str(data_path), f"fineweb_{split}_*.bin")


class ShardError(ValueError):
    """A shard file is missing, has a corrupt header, or is truncated. The message names the file."""


def read_shard_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard file not found")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: file is {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a FineWeb shard")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    num_tokens = int(header[2])
    expected = HEADER_BYTES + 2 * num_tokens
    if num_tokens < 0 or size != expected:
        raise ShardError(
            f"{path}: header says {num_tokens} tokens, so the file should be {expected} bytes, but it is "
            f"{size} bytes (truncated or corrupt)"
        )
    return num_tokens


def load_data_shard(path: str | Path) -> np.ndarray:
    """Read one shard's tokens as a uint16 array (header validated first)."""
    num_tokens = read_shard_header(path)
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        tokens = np.frombuffer(f.read(2 * num_tokens), dtype="<u2")
    return tokens.astype(np.uint16, copy=False)


def write_data_shard(path: str | Path, tokens: np.ndarray) -> Path:
    """Write tokens (values < 65536) as a shard in the challenge format."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 2**16):
        raise ShardError(f"{path}: token ids must lie in [0, 65535] to fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())
    return path


def load_validation_tokens(pattern: str, seq_len: int) -> np.ndarray:
    """Concatenate every shard matching ``pattern``, trimmed to a multiple of seq_len plus one token."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise ShardError(f"no validation shards match {pattern}")
    tokens = np.concatenate([load_data_shard(f) for f in files])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ShardError(f"validation split {pattern} is too short for seq_len={seq_len}")
    return tokens[: usable + 1]


def build_sentencepiece_luts(sp, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token byte accounting, as upstream: (base_bytes, has_leading_space, is_boundary_token).

    Control/unknown/unused ids are boundaries with 0 bytes; byte tokens count 1 byte; a piece starting with
    "\u2581" has that marker stripped and counts one extra byte only when the previous token is not a boundary.
    """
    table_size = max(int(sp.vocab_size()), vocab_size)
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    for token_id in range(int(sp.vocab_size())):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith("\u2581"):
            has_leading_space[token_id] = True
            piece = piece[1:]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return base_bytes, has_leading_space, is_boundary


def count_target_bytes(prev_ids: np.ndarray, tgt_ids: np.ndarray, luts) -> int:
    """Bytes of UTF-8 text covered by the target tokens, given each target's previous token."""
    base_bytes, has_leading_space, is_boundary = luts
    tgt = np.asarray(tgt_ids, dtype=np.int64)
    prev = np.asarray(prev_ids, dtype=np.int64)
    nbytes = base_bytes[tgt].astype(np.int64) + (has_leading_space[tgt] & ~is_boundary[prev]).astype(np.int64)
    return int(nbytes.sum())
# <<< twin: data-format <<<


# -----------------------------
# HYPERPARAMETERS
# -----------------------------

# >>> twin: hyperparameters >>>
ACTIVATIONS = ("relu2", "leaky_relu2", "gelu", "silu", "sin2")
LOSSES = ("ce", "rho1", "mtp")
DATA_ORDERS = ("sequential", "seeded")
MUON_NS = ("default", "polar_express")
ATTN_OUT_GATES = ("none", "dense", "sparse")
QUANT_BITS = (8, 6, 5, 4)
EMBED_EXPORTS = ("int8", "fp16", "matrix")
COMPRESSORS = ("zlib", "lzma", "brotli")
TTT_MODES = ("off", "full", "lora")
METRIC_STAGES = ("pre_quant", "post_quant", "sliding", "ttt")  # evaluation order: the last one on is "auto"
METRICS = ("auto",) + METRIC_STAGES
DEFAULT_DATA_PATH = "./data/datasets/fineweb10B_sp1024"
DEFAULT_TOKENIZER_PATH = "./data/tokenizers/fineweb_1024_bpe.model"
# The embedded corpus (Shakespeare, BPE-1024) that the CPU presets train on; `python scripts/causal/prepare_data.py
# prepare` makes it. A trainer never switches corpus by itself: a config names its data.
EMBEDDED_DATA_PATH = "./data/datasets/shakespeare_sp1024"
EMBEDDED_TOKENIZER_PATH = "./data/tokenizers/shakespeare_1024_bpe.model"


class ConfigValueError(ValueError):
    """An unknown config key or a value that cannot be coerced / is out of range. Names the key and the fix."""


@dataclass(frozen=True)
class Hyperparameters:
    # Data and run identity.
    data_path: str = DEFAULT_DATA_PATH  # folder holding fineweb_{train,val}_*.bin
    tokenizer_path: str = DEFAULT_TOKENIZER_PATH  # SentencePiece .model
    run_id: str = ""  # empty: a fresh uuid4 when run as a script
    seed: int = 1337
    data_seed: int = -1  # -1: the seed drives the data order too; >= 0: the data order alone (variance studies)
    # Validation cadence and batch size (validation always uses the full val split).
    val_batch_size: int = 524_288
    val_loss_every: int = 1000
    train_log_every: int = 200
    # Training length.
    iterations: int = 20_000
    warmdown_iters: int = 1200
    warmup_steps: int = 20
    train_batch_tokens: int = 524_288
    train_seq_len: int = 1024
    max_wallclock_seconds: float = 600.0
    qk_gain_init: float = 1.5
    # Model shape.
    vocab_size: int = 1024
    num_layers: int = 9
    num_kv_heads: int = 4
    model_dim: int = 512
    num_heads: int = 8
    mlp_mult: int = 2
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    # Optimizer.
    embed_lr: float = 0.6
    head_lr: float = 0.008
    tied_embed_lr: float = 0.05
    tied_embed_init_std: float = 0.005
    matrix_lr: float = 0.04
    scalar_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_backend_steps: int = 5
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.0
    # Screening knobs (defaults reproduce the baseline).
    activation: str = "relu2"  # relu2 | leaky_relu2 (slope 0.5, squared) | gelu | silu | sin2
    rope_partial_dims: int = 0  # 0: RoPE on every head dim; k: rotate only the first k dims of each head
    ln_scale: bool = False  # scale each block's normed inputs by 1/sqrt(layer_idx+1)
    xsa_last_n: int = 0  # exclusive self-attention on the last n layers
    ema_decay: float = 0.0  # 0: off; else final eval and export use the EMA weights
    loss: str = "ce"  # ce | rho1 (hard-token mining; the historical name, not Rho-1's reference model) | mtp
    rho1_keep_frac: float = 0.7  # rho1: keep this fraction of the tokens hardest under the model (at least one)
    mtp_weight: float = 0.3  # mtp: weight of the mean auxiliary loss of the mtp_heads (records: 0.2)
    data_order: str = "sequential"  # sequential (upstream stream) | seeded (the seed picks each step's windows)
    compile: bool = True  # torch.compile the model and Newton-Schulz (CUDA only; ignored on CPU)
    # Frontier knobs (issue 11), all off by default. Fractions are of training: step/iterations, or of the
    # wallclock cap when one is set.
    muon_wd: float = 0.0  # Muon decoupled weight decay: p *= 1 - lr * muon_wd before each update
    adam_wd: float = 0.0  # AdamW-style decoupled decay of the embedding and scalar Adam groups (not an untied
    # head): p *= 1 - lr * adam_wd before each update (records: 0.04)
    muon_row_normalize: bool = False  # MuonEq-R: unit-norm rows of the momentum update before Newton-Schulz
    muon_ns: str = "default"  # default (3.4445, -4.775, 2.0315) | polar_express (per-iteration coefficients)
    warmdown_frac: float = 0.0  # >0: linear warmdown over this last fraction of training (replaces warmdown_iters)
    min_lr: float = 0.0  # floor of the lr multiplier during the warmdown
    ema_start_frac: float = 0.0  # EMA (ema_decay > 0) starts from the live weights at this fraction of training
    swa_every: int = 0  # >0: SWA, average the weights every swa_every steps while the lr multiplier < swa_start_scale
    swa_start_scale: float = 0.4
    gate_window: int = 12  # input width (leading model dims) of SmearGate and the sparse attention-output gate
    smear_gate: bool = False  # SmearGate with the BOS fix: x_t += lam * sigmoid(W x_t[:w]) * x_{t-1}, not at BOS
    attn_out_gate: str = "none"  # none | dense (per-head sigmoid gate from the full input) | sparse (first gate_window)
    attn_gate_scale: float = 1.0  # sparse gate: sigmoid(scale * W x[:w])
    skip_gates: bool = False  # gated U-Net skips: x = lerp(w * skip, x, sigmoid(g))
    ve_layers: str = ""  # value embeddings: comma-separated layers whose attention values add a shared table
    ve_dim: int = 128
    bigram_buckets: int = 0  # >0: BigramHash embedding with this many hash buckets added to the token embedding
    bigram_dim: int = 128
    parallel_start_layer: int = 0  # >0: two-lane parallel residuals (attention lane, MLP lane) from this layer on
    num_loops: int = 0  # depth recurrence: layers loop_start..loop_end run num_loops extra times ...
    loop_start: int = 0
    loop_end: int = 0
    loop_start_frac: float = 0.0  # ... from this fraction of training on (and at evaluation)
    mtp_heads: int = 1  # mtp: number of zero-init vocab heads; head k predicts token t+k+2
    mlx_max_microbatch_tokens: int = 8192  # MLX: split each step's batch into chunks of at most this many tokens
    # Export and evaluation knobs (defaults: upstream's int8 + zlib round trip and plain non-overlapping eval).
    quant_bits: int = 8  # per-row bits of the exported matrices: 8 | 6 | 5 | 4
    quant_bits_attn: int = 0  # 0: quant_bits; else the bits of the attention matrices (c_q, c_k, c_v, proj)
    quant_bits_mlp: int = 0  # 0: quant_bits; else the bits of the MLP matrices (fc, proj)
    quant_clip_search: bool = False  # GPTQ-lite: per row, the clip quantile with the lowest reconstruction error
    quant_keep_float_max_numel: int = 65_536  # matrices with at most this many values are stored as fp16
    embed_export: str = "int8"  # int8 | fp16 | matrix (the matrices' bits): the token embedding (and untied head)
    compressor: str = "zlib"  # zlib | lzma | brotli (brotli needs the optional extra: pip install '.[brotli]')
    qat: bool = False  # straight-through fake quantization of the block matrices, in the export's format
    qat_start_frac: float = 0.85  # qat turns on after this fraction of the iterations (or of the wallclock cap)
    eval_stride: int = 0  # 0: non-overlapping windows; k: sliding windows of train_seq_len advancing k tokens
    ttt: str = "off"  # off | full | lora: score-first test-time training on the val stream at evaluation
    ttt_chunk_tokens: int = 32_768  # ttt: tokens scored per chunk before the model adapts on that chunk
    ttt_lr: float = 1e-3  # ttt: SGD learning rate (full weights, or the LoRA factors)
    ttt_epochs: int = 1  # ttt: passes over each scored chunk
    ttt_lora_rank: int = 8  # ttt=lora: rank of the adapters on each block's attention q/v projections
    metric: str = "auto"  # the score a run reports: auto (the last stage that is on) | pre_quant | post_quant |
    # sliding | ttt
    horizons: str = ""  # "150,300" (or "150/300"): branched cooldowns. The stable phase is trained once; at each horizon H <
    # iterations a copy runs the warmdown a separate H-step run would have, is scored as that run's final stage
    # (RunResult.horizon_metrics), and the run continues from the branch point. "" (default): off

    def __post_init__(self) -> None:
        for name, allowed in (("activation", ACTIVATIONS), ("loss", LOSSES), ("data_order", DATA_ORDERS)):
            if getattr(self, name) not in allowed:
                raise ConfigValueError(
                    f"{name}={getattr(self, name)!r} is not supported; choose one of {list(allowed)}"
                )
        for name in ("num_layers", "mlp_mult", "logit_softcap"):
            if not getattr(self, name) > 0:
                raise ConfigValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.matrix_lr < 0:
            raise ConfigValueError(f"matrix_lr={self.matrix_lr} must be >= 0")
        if not 0.0 < self.rho1_keep_frac <= 1.0:
            raise ConfigValueError(f"rho1_keep_frac={self.rho1_keep_frac} must lie in (0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigValueError(f"ema_decay={self.ema_decay} must lie in [0, 1) (0 turns EMA off)")
        if self.data_seed < -1:
            raise ConfigValueError(f"data_seed={self.data_seed} must be -1 (follow seed) or >= 0")
        if self.xsa_last_n < 0 or self.xsa_last_n > self.num_layers:
            raise ConfigValueError(f"xsa_last_n={self.xsa_last_n} must lie in [0, num_layers={self.num_layers}]")
        if self.model_dim % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ConfigValueError(
                f"model_dim={self.model_dim} must be divisible by num_heads={self.num_heads}, and num_heads by "
                f"num_kv_heads={self.num_kv_heads}"
            )
        head_dim = self.model_dim // self.num_heads
        if head_dim % 2 or self.rope_partial_dims < 0 or self.rope_partial_dims % 2 or self.rope_partial_dims > head_dim:
            raise ConfigValueError(
                f"rope_partial_dims={self.rope_partial_dims} must be even and in [0, head_dim={head_dim}] "
                "(head_dim must be even too)"
            )
        self._check_frontier_knobs()
        for name in ("quant_bits", "quant_bits_attn", "quant_bits_mlp"):
            bits = getattr(self, name)
            if bits not in QUANT_BITS and not (bits == 0 and name != "quant_bits"):
                raise ConfigValueError(f"{name}={bits} is not supported; choose one of {list(QUANT_BITS)}"
                                       + (" or 0 (same as quant_bits)" if name != "quant_bits" else ""))
        for name, allowed in (("embed_export", EMBED_EXPORTS), ("compressor", COMPRESSORS), ("ttt", TTT_MODES),
                              ("metric", METRICS)):
            if getattr(self, name) not in allowed:
                raise ConfigValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {list(allowed)}")
        if self.quant_keep_float_max_numel < 0:
            raise ConfigValueError(f"quant_keep_float_max_numel={self.quant_keep_float_max_numel} must be >= 0")
        if not 0.0 <= self.qat_start_frac < 1.0:
            raise ConfigValueError(f"qat_start_frac={self.qat_start_frac} must lie in [0, 1)")
        if not 0 <= self.eval_stride <= self.train_seq_len:
            raise ConfigValueError(f"eval_stride={self.eval_stride} must lie in [0, train_seq_len={self.train_seq_len}]"
                                   " (0 turns sliding-window evaluation off)")
        if self.ttt != "off" and (self.ttt_chunk_tokens < self.train_seq_len or self.ttt_epochs < 1
                                  or self.ttt_lora_rank < 1):
            raise ConfigValueError(
                f"ttt_chunk_tokens={self.ttt_chunk_tokens} must be >= train_seq_len={self.train_seq_len}, "
                f"ttt_epochs={self.ttt_epochs} >= 1 and ttt_lora_rank={self.ttt_lora_rank} >= 1"
            )
        if self.metric in ("sliding", "ttt") and not self.stage_enabled(self.metric):
            raise ConfigValueError(f"metric={self.metric!r} names a stage that is off (eval_stride=0 / ttt='off')")
        if self.train_batch_tokens < self.train_seq_len:
            raise ConfigValueError(
                f"train_batch_tokens={self.train_batch_tokens} must hold at least one sequence of "
                f"train_seq_len={self.train_seq_len}"
            )

    def _check_frontier_knobs(self) -> None:
        if self.muon_ns not in MUON_NS:
            raise ConfigValueError(f"muon_ns={self.muon_ns!r} is not supported; choose one of {list(MUON_NS)}")
        if self.attn_out_gate not in ATTN_OUT_GATES:
            raise ConfigValueError(
                f"attn_out_gate={self.attn_out_gate!r} is not supported; choose one of {list(ATTN_OUT_GATES)}")
        for name in ("warmdown_frac", "min_lr", "ema_start_frac", "loop_start_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        for name in ("muon_wd", "adam_wd"):
            if getattr(self, name) < 0:
                raise ConfigValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.swa_every < 0 or (self.swa_every and self.ema_decay > 0):
            raise ConfigValueError(f"swa_every={self.swa_every} must be >= 0 and SWA cannot be combined with EMA "
                                   f"(ema_decay={self.ema_decay}); pick one averaging")
        if (self.smear_gate or self.attn_out_gate == "sparse") and not 0 < self.gate_window <= self.model_dim:
            raise ConfigValueError(f"gate_window={self.gate_window} must lie in [1, model_dim={self.model_dim}]")
        bad = [i for i in self.ve_layer_indices if not 0 <= i < self.num_layers]
        if bad:
            raise ConfigValueError(f"ve_layers={self.ve_layers!r}: layers {bad} outside [0, {self.num_layers})")
        if self.ve_layers and self.ve_dim <= 0:
            raise ConfigValueError(f"ve_dim={self.ve_dim} must be > 0")
        if self.bigram_buckets < 0 or self.bigram_buckets == 1 or (self.bigram_buckets and self.bigram_dim <= 0):
            raise ConfigValueError(f"bigram_buckets={self.bigram_buckets} must be 0 (off) or >= 2, with bigram_dim > 0")
        if not 0 <= self.parallel_start_layer < max(self.num_layers, 1):
            raise ConfigValueError(
                f"parallel_start_layer={self.parallel_start_layer} must lie in [0, num_layers={self.num_layers})")
        if self.num_loops < 0 or (self.num_loops and not 0 <= self.loop_start <= self.loop_end < self.num_layers):
            raise ConfigValueError(
                f"depth recurrence num_loops={self.num_loops} loop_start={self.loop_start} loop_end={self.loop_end}: "
                f"need num_loops >= 0 and 0 <= loop_start <= loop_end < num_layers={self.num_layers}")
        if self.mtp_heads < 1:
            raise ConfigValueError(f"mtp_heads={self.mtp_heads} must be >= 1")
        self._check_horizons()
        if self.mlx_max_microbatch_tokens < self.train_seq_len:
            raise ConfigValueError(f"mlx_max_microbatch_tokens={self.mlx_max_microbatch_tokens} must hold at least "
                                   f"one sequence of train_seq_len={self.train_seq_len}")

    def _check_horizons(self) -> None:
        steps = self.horizon_steps
        if steps and not 0 < steps[0]:
            raise ConfigValueError(f"horizons={self.horizons!r}: each horizon must lie in [1, iterations="
                                   f"{self.iterations}] (the longest horizon is the run's own length)")
        clash = [msg for on, msg in ((self.max_wallclock_seconds > 0, "max_wallclock_seconds=0 (horizons count steps)"),
                                     (self.qat, "qat=False (qat starts at a fraction of each horizon)"),
                                     (self.ema_decay > 0 and self.ema_start_frac > 0, "ema_start_frac=0"),
                                     (self.num_loops > 0 and self.loop_start_frac > 0, "loop_start_frac=0")) if on]
        if steps and clash:  # these would make the shared stable phase differ from a separate H-step run's
            raise ConfigValueError(f"horizons={self.horizons!r} needs {' and '.join(clash)}: a branched cooldown "
                                   "must share its stable phase with a separate run of each horizon")

    @property
    def horizon_steps(self) -> tuple[int, ...]:
        """Ascending horizons of a branched-cooldown run, ending at iterations; () when horizons is off."""
        if not self.horizons.strip():
            return ()
        try:
            listed = {int(v) for v in self.horizons.replace("/", ",").split(",") if v.strip()}
        except ValueError:
            raise ConfigValueError(f"horizons={self.horizons!r} must be step counts separated by ',' or '/' (in a "
                                   "KEY=VALUE list), e.g. '150,300' or '150/300'") from None
        if any(h > self.iterations for h in listed):
            raise ConfigValueError(f"horizons={self.horizons!r}: a horizon exceeds iterations={self.iterations}; "
                                   "set ITERATIONS to the longest horizon")
        return tuple(sorted(listed | {self.iterations}))

    @property
    def ve_layer_indices(self) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in self.ve_layers.split(",") if v.strip())
        except ValueError:
            raise ConfigValueError(f"ve_layers={self.ve_layers!r} must be comma-separated layer indices") from None

    def stage_enabled(self, stage: str) -> bool:
        """Whether an evaluation stage (one of METRIC_STAGES) runs under this config."""
        return {"pre_quant": True, "post_quant": True, "sliding": self.eval_stride > 0,
                "ttt": self.ttt != "off"}[stage]

    @property
    def train_files(self) -> str:
        return shard_pattern(self.data_path, "train")

    @property
    def val_files(self) -> str:
        return shard_pattern(self.data_path, "val")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hyperparameters:
        """Baseline defaults, then the preset named by PRESET, then PROMOTED_DEFAULTS rules, then each UPPER env var."""
        env = os.environ if env is None else env
        base = preset_config(env.get("PRESET", "baseline") or "baseline")
        updates = {name: env[name.upper()] for name in cls.field_names() if name.upper() in env}
        return base.with_overrides(updates)

    def with_overrides(self, mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> Hyperparameters:
        """A copy with some fields replaced; strings are coerced to the field's type; unknown keys are errors."""
        updates = {**(mapping or {}), **kwargs}
        valid = self.field_names()
        unknown = sorted(k for k in updates if k not in valid)
        if unknown:
            raise ConfigValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(valid)}")
        types = {f.name: f.type for f in dataclasses.fields(self)}
        coerced = {k: _coerce(k, v, types[k]) for k, v in updates.items()}
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    type_name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if type_name == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int, np.integer)) and int(value) in (0, 1):
                return bool(value)
            raise ValueError(value)
        if type_name == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                as_float = float(value.strip())
            else:
                as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigValueError(f"config key {key!r}: cannot read {value!r} as {type_name}") from None


# Fields that do not change what is computed (excluded from config_hash).
_HASH_EXCLUDED = ("run_id", "train_log_every", "metric")


# The fields of the first hash version. Any field added since counts only when set away from its default, so
# adding a knob keeps the hash (and every cached result) of the configs that do not use it.
_HASH_V1_FIELDS = (
    "data_path", "tokenizer_path", "run_id", "seed", "val_batch_size", "val_loss_every", "train_log_every",
    "iterations", "warmdown_iters", "warmup_steps", "train_batch_tokens", "train_seq_len", "max_wallclock_seconds",
    "qk_gain_init", "vocab_size", "num_layers", "num_kv_heads", "model_dim", "num_heads", "mlp_mult",
    "tie_embeddings", "rope_base", "logit_softcap", "embed_lr", "head_lr", "tied_embed_lr", "tied_embed_init_std",
    "matrix_lr", "scalar_lr", "muon_momentum", "muon_backend_steps", "muon_momentum_warmup_start",
    "muon_momentum_warmup_steps", "beta1", "beta2", "adam_eps", "grad_clip_norm", "activation", "rope_partial_dims",
    "ln_scale", "xsa_last_n", "ema_decay", "loss", "rho1_keep_frac", "mtp_weight", "data_order", "compile",
)


def config_hash(cfg: Hyperparameters) -> str:
    """sha256 hex of the fields that affect the computation; data paths count by their folder/file name only."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.name not in _HASH_V1_FIELDS}
    payload = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_EXCLUDED
               and not (k in defaults and v == defaults[k])}
    payload["data_path"] = Path(cfg.data_path).name
    payload["tokenizer_path"] = Path(cfg.tokenizer_path).name
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


# Promoted changes: rules that scripts/causal/promote.py writes for changes a screen confirmed (Holm, or BH then
# Holm on fresh seeds). Each maps a field to ("set", value), ("add", delta) or ("mul", factor), the change as it
# was tested, relative to the preset it was tested on (the comment records preset, tested from -> to, evidence).
# Precedence, the same for every entry point: upstream baseline defaults -> preset -> promoted rules -> env /
# explicit overrides. A rule acts on the preset's value, so the tested preset gets exactly the tested value
# (num_layers ("add", 2) tested 4 -> 6 on fast: fast 6, baseline 11, tiny 4) and a preset cannot silently undo
# a promotion (mlp_mult ("set", 3): 3 in every preset). Bare Hyperparameters() is the baseline preset with the
# rules applied; from_env() and preset_config() go through the same path. Revert: promote.py --revert.
# Depth-relative layer indices stay relative: ("depth", f) puts the index at round(f * num_layers) (capped at the
# last layer) and ("last", k) names the last k layers ("i,j,..."), both after the other rules (num_layers first).
# >>> PROMOTED DEFAULTS (generated by scripts/causal/promote.py; do not edit by hand) >>>
PROMOTED_DEFAULTS: dict[str, object] = {}
# <<< PROMOTED DEFAULTS <<<
BASELINE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Hyperparameters)}
PROMOTION_OPS = ("set", "add", "mul", "depth", "last")


def apply_promoted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a full field mapping: baseline defaults + a preset) with every PROMOTED_DEFAULTS rule applied."""
    out = dict(values)
    rules = sorted(PROMOTED_DEFAULTS.items(), key=lambda kv: isinstance(kv[1], tuple) and kv[1][:1] in (("depth",),
                                                                                                     ("last",)))
    for key, rule in rules:
        if key not in out or not (isinstance(rule, tuple) and len(rule) == 2 and rule[0] in PROMOTION_OPS):
            raise ConfigValueError(f"PROMOTED_DEFAULTS[{key!r}] = {rule!r}: expected a config key mapped to "
                                   f"(op, value) with op in {PROMOTION_OPS}; run scripts/causal/promote.py --revert")
        op, by, n = rule[0], rule[1], int(out["num_layers"])
        if op == "depth":
            out[key] = min(n - 1, int(by * n + 0.5))
        elif op == "last":
            out[key] = ",".join(str(i) for i in range(max(0, n - int(by)), n))
        else:
            out[key] = by if op == "set" else out[key] + by if op == "add" else out[key] * by
    return out


def _promoted_class(cls: type) -> type:
    """``cls`` re-declared with the promoted baseline as its defaults, so bare ``Hyperparameters()`` carries them."""
    promoted = apply_promoted(BASELINE_DEFAULTS)
    changed = [(f.name, f.type, dataclasses.field(default=promoted[f.name])) for f in dataclasses.fields(cls)
               if promoted[f.name] != f.default]
    if not changed:
        return cls
    sub = dataclasses.make_dataclass(cls.__name__, changed, bases=(cls,), frozen=True,
                                     namespace={"__module__": cls.__module__, "__doc__": cls.__doc__})
    sub.__qualname__ = cls.__qualname__
    return sub


Hyperparameters = _promoted_class(Hyperparameters)

# Named presets: values on top of the baseline defaults; the promoted rules then act on the result.
# fast: the CPU screening regime (about 20 s per run, train + both evals, on a 2-core CPU); the seed drives the
# data order and the wallclock cap is off so that a run is a fixed number of steps.
# screen: fast's model trained 5x longer (600 steps, 1.2M tokens, no pass repeated over the 2.0M-token train
# split), the preset for real use: about 2 minutes per run on a 2-core CPU.
# small_long: a proxy with ~13x fast's training tokens per parameter (model_dim 64, 480 steps) at about twice
# fast's cost per run, for the transfer calibration (scripts/causal/transfer_calibration.py).
# tiny: a few seconds per run, for tests. The CPU presets train on the embedded corpus (EMBEDDED_DATA_PATH); baseline
# keeps the FineWeb default.
_EMBEDDED_DATA = {"data_path": EMBEDDED_DATA_PATH, "tokenizer_path": EMBEDDED_TOKENIZER_PATH}
# The CPU proxies share a fixed-step regime: no warmup or wallclock cap, the seed draws the data windows,
# no torch.compile, the embedded corpus.
_CPU_PROXY = {"warmup_steps": 0, "val_loss_every": 0, "max_wallclock_seconds": 0.0, "data_order": "seeded",
              "compile": False, "num_heads": 4, "num_kv_heads": 2, "mlp_mult": 2, **_EMBEDDED_DATA}
_FAST_MODEL = {"num_layers": 4, "model_dim": 128, "train_seq_len": 128, "train_batch_tokens": 2048,
               "val_batch_size": 16384}
PRESETS: dict[str, dict[str, object]] = {
    "baseline": {},
    "fast": {**_CPU_PROXY, **_FAST_MODEL, "iterations": 120, "warmdown_iters": 60, "train_log_every": 20,
             "muon_momentum_warmup_steps": 30},
    "screen": {**_CPU_PROXY, **_FAST_MODEL, "iterations": 600, "warmdown_iters": 300, "train_log_every": 100,
               "muon_momentum_warmup_steps": 150},
    "small_long": {**_CPU_PROXY, **_FAST_MODEL, "model_dim": 64, "iterations": 480, "warmdown_iters": 240,
                   "train_log_every": 80, "muon_momentum_warmup_steps": 120},
    "tiny": {**_CPU_PROXY, "num_layers": 2, "model_dim": 64, "train_seq_len": 64, "train_batch_tokens": 512,
             "iterations": 12, "warmdown_iters": 4, "train_log_every": 4, "val_batch_size": 4096,
             "muon_momentum_warmup_steps": 5},
}


def preset_config(name: str = "baseline", **overrides: Any) -> Hyperparameters:
    """Baseline defaults -> PRESETS[name] -> PROMOTED_DEFAULTS rules -> overrides (see the block above)."""
    if name not in PRESETS:
        raise ConfigValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = Hyperparameters().with_overrides({**BASELINE_DEFAULTS, **PRESETS[name]})
    return Hyperparameters().with_overrides({**apply_promoted(preset.to_dict()), **overrides})
# <<< twin: hyperparameters <<<


# >>> twin: ns-coefficients >>>
NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express: per-iteration minimax coefficients (records PR #1344 / #1787); past the fifth iteration the
# last (converged) tuple repeats.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_coefficients(kind: str, steps: int) -> tuple[tuple[float, float, float], ...]:
    """The (a, b, c) of each Newton-Schulz iteration for muon_ns=kind."""
    if kind == "polar_express":
        return tuple(POLAR_EXPRESS_COEFFS[min(i, len(POLAR_EXPRESS_COEFFS) - 1)] for i in range(steps))
    return (NS_COEFFS,) * steps
# <<< twin: ns-coefficients <<<


# >>> twin: bos-id >>>
BOS_ID = 1  # <s> of the challenge's SentencePiece tokenizers; SmearGate never smears across it
# <<< twin: bos-id <<<


# >>> twin: layer-schedule >>>
def layer_schedule(cfg: Hyperparameters, looping: bool) -> tuple[list[int], list[int]]:
    """(encoder, decoder) block indices. Depth recurrence repeats blocks loop_start..loop_end num_loops extra
    times once looping is on; the U-Net split is half of the resulting sequence (as the records)."""
    n = cfg.num_layers
    if not looping or cfg.num_loops <= 0:
        return list(range(n // 2)), list(range(n // 2, n))
    seg = list(range(cfg.loop_start, cfg.loop_end + 1))
    order = list(range(cfg.loop_start)) + seg * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, n))
    return order[: len(order) // 2], order[len(order) // 2 :]
# <<< twin: layer-schedule <<<


# >>> twin: optimizer-group >>>
# Embedding tables other than tok_emb (trained by Adam at the token lr, as the records do).
EMBED_TABLE_PATTERNS = ("bigram.embed.", "ve_shared.embed.")


def optimizer_group(name: str, ndim: int) -> str:
    """Which optimizer trains parameter `name` (one rule for every module, so no parameter is left out):
    "tok" (Adam, token lr) for tok_emb and other embedding tables, "head" (Adam, head_lr) for an untied lm_head,
    "scalar" (Adam, scalar_lr) for vectors, scalars and control tensors, "matrix" (Muon) for every other matrix."""
    if name == "tok_emb.weight" or name.startswith(EMBED_TABLE_PATTERNS):
        return "tok"
    if name == "lm_head.weight":
        return "head"
    if ndim < 2 or any(pat in name for pat in CONTROL_TENSOR_NAME_PATTERNS):
        return "scalar"
    return "matrix"
# <<< twin: optimizer-group <<<


# >>> twin: constant-inits >>>
# Parameters of the frontier modules that start at a constant.
CONSTANT_INITS = (
    ("skip_gates", 0.0), ("parallel_post_lambdas", 1.0), ("parallel_resid_lambdas", 1.1), ("smear_lambda", 0.0),
    ("bigram.scale", 0.05), ("ve_shared.scale", 0.1), ("ve_layer_scales.", 1.0),
)
DENSE_GATE_INIT_STD = 0.01  # dense attention-output gate: N(0, 0.01) (records); the sparse one starts at zero
# <<< twin: constant-inits <<<


# >>> twin: eval-plans >>>
# =====================================================================================================
# SHARED NUMPY: EVALUATION PLANS (framework-free; a twin section: train_gpt_mlx.py carries it verbatim)
# =====================================================================================================
# The val stream has N targets: target j is token j+1, predicted from tokens 0..j. An evaluation plan is an
# (n, 3) int64 array of rows (start, lo, hi): feed the window of inputs [start, start + window) and score the
# targets [lo, hi) in it (start <= lo < hi <= start + window). Every plan scores each target exactly once, so
# every evaluation mode divides by the same byte count. Uses numpy and math only.


def sliding_window_plan(n_targets: int, window: int, stride: int) -> np.ndarray:
    """Windows every `stride` targets; each target is scored in the first window that holds it, i.e. with the
    longest context the window allows (at least window - stride + 1 tokens after the first window). The last
    window is moved back to end at n_targets. stride == window gives the plain non-overlapping windows."""
    if not 0 < stride <= window <= n_targets:
        raise ValueError(f"need 0 < stride ({stride}) <= window ({window}) <= number of targets ({n_targets})")
    rows, start, end = [], 0, 0
    while end < n_targets:
        start = min(start, n_targets - window)
        rows.append((start, end, start + window))
        end = start + window
        start += stride
    return np.asarray(rows, dtype=np.int64)


def split_plan(plan: np.ndarray, boundaries: np.ndarray) -> list[np.ndarray]:
    """Split a plan at chunk boundaries (sorted target positions): one plan per chunk [b_k, b_k+1), a row whose
    scored range crosses a boundary becoming two rows with the same window."""
    edges = np.concatenate(([0], np.asarray(boundaries, dtype=np.int64), [np.iinfo(np.int64).max]))
    chunks: list[list[tuple[int, int, int]]] = [[] for _ in range(len(edges) - 1)]
    for start, lo, hi in plan.tolist():
        for k in range(len(edges) - 1):
            a, b = max(lo, edges[k]), min(hi, edges[k + 1])
            if a < b:
                chunks[k].append((start, a, b))
    return [np.asarray(c, dtype=np.int64).reshape(-1, 3) for c in chunks]


def chunk_boundaries(n_targets: int, chunk: int) -> np.ndarray:
    """Target positions where score-first TTT chunks start (after the first), every `chunk` targets."""
    return np.arange(chunk, n_targets, chunk, dtype=np.int64)


def train_windows(lo: int, hi: int, window: int) -> np.ndarray:
    """Starts of the training windows over the targets [lo, hi) (hi - lo >= window): back to back from lo, the
    last one moved back to end at hi. Inputs and targets stay inside [lo, hi]."""
    if hi - lo < window:
        raise ValueError(f"chunk [{lo}, {hi}) is shorter than the window {window}")
    starts = list(range(lo, hi - window + 1, window))
    if starts[-1] + window < hi:
        starts.append(hi - window)
    return np.asarray(starts, dtype=np.int64)


def bits_per_byte(nll_sum: float, n_tokens: int, n_bytes: int) -> tuple[float, float]:
    """(mean token loss in nats, bits per byte) from a summed token NLL, the token count and the byte count."""
    loss = nll_sum / n_tokens
    return float(loss), float(loss / math.log(2.0) * n_tokens / n_bytes)
# <<< twin: eval-plans <<<


# >>> twin: artifact-export >>>
# =====================================================================================================
# SHARED NUMPY: ARTIFACT EXPORT (framework-free; a twin section: train_gpt_mlx.py carries it verbatim)
# =====================================================================================================
# The export formats beyond upstream's int8 (quant_bits < 8, clip search, fp16 embedding, lzma/brotli). Arrays
# in, bytes out: the trainers hand in float32 numpy arrays by state-dict name and load back what comes out.
# - matrices (2-D float tensors with more than quant_keep_float_max_numel values; the token embedding, and an
#   untied head, at embed_export's bits or as fp16) are quantized per row, symmetric: q = clamp(round(w / s),
#   -qmax, qmax) with qmax = 2^(bits-1) - 1 and s = clip / qmax stored as fp16; the clip is the row's 99.99984th
#   |w| percentile (upstream's), or with clip search the candidate quantile whose fp16-scaled reconstruction has
#   the lowest squared error in that row (the percentile rule is a candidate, so search is never worse per row);
# - everything else is kept as float: fp32 for control tensors, fp16 otherwise;
# - codes are stored one per int8 byte (not bit-packed; the compressor removes the unused bits), then the
#   container (magic, JSON header, raw arrays) is compressed with zlib (level 9), lzma (preset 9) or brotli (11).
# Plain int8 keeps upstream's floor of 1/127 on the scale, so it quantizes exactly as upstream; every other
# setting has no floor (the floor coarsens each row whose clip is below 1, as in every small or young model).
# Uses from above: CONTROL_TENSOR_NAME_PATTERNS, COMPRESSORS, and the imports dataclasses/json/zlib/numpy/typing.

ARTIFACT_BUDGET_BYTES = 16_000_000  # the challenge's cap on compressed model + code
ARTIFACT_MAGIC = b"PGQ1"
PLAIN_CLIP_QUANTILE = 0.9999984  # upstream's INT8_CLIP_PERCENTILE / 100
CLIP_SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, PLAIN_CLIP_QUANTILE, 1.0)
FP16_TINY = np.float16(2.0**-24)  # the smallest positive fp16 (a floor for per-row scales)
EMBEDDING_NAMES = ("tok_emb.weight", "lm_head.weight")


@dataclass(frozen=True)
class ExportSpec:
    """How the artifact is quantized and compressed (the export fields of Hyperparameters)."""

    bits: int = 8
    bits_attn: int = 0  # 0: bits
    bits_mlp: int = 0  # 0: bits
    clip_search: bool = False
    embed: str = "int8"  # int8 | fp16 | matrix
    compressor: str = "zlib"
    keep_float_max_numel: int = 65_536

    @classmethod
    def from_config(cls, cfg: Any) -> ExportSpec:
        return cls(cfg.quant_bits, cfg.quant_bits_attn, cfg.quant_bits_mlp, cfg.quant_clip_search, cfg.embed_export,
                   cfg.compressor, cfg.quant_keep_float_max_numel)

    @property
    def is_upstream_int8(self) -> bool:
        """True for the defaults: the trainers then write upstream's own int8 + zlib format."""
        return self == ExportSpec()

    def label(self) -> str:
        """A short name, e.g. 'int6+clip/mlp5/emb-fp16/lzma'."""
        parts = [f"int{self.bits}" + ("+clip" if self.clip_search else "")]
        parts += [f"{k}{b}" for k, b in (("attn", self.bits_attn), ("mlp", self.bits_mlp)) if b]
        parts += [f"emb-{self.embed}", self.compressor]
        return "/".join(parts)

    def storage_for(self, name: str, shape: tuple[int, ...]) -> tuple[str, int]:
        """('q', bits) for a quantized matrix, ('f32', 0) for control tensors, ('f16', 0) for other floats."""
        if any(p in name for p in CONTROL_TENSOR_NAME_PATTERNS):
            return "f32", 0
        if len(shape) != 2 or int(np.prod(shape)) <= self.keep_float_max_numel:
            return "f16", 0
        if name in EMBEDDING_NAMES:
            if self.embed == "fp16":
                return "f16", 0
            return ("q", 8) if self.embed == "int8" else ("q", self.bits)
        if ".attn." in name and self.bits_attn:
            return "q", self.bits_attn
        if ".mlp." in name and self.bits_mlp:
            return "q", self.bits_mlp
        return "q", self.bits


def quantize_rows(w: np.ndarray, bits: int, *, clip_search: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization of a 2-D array: (int8 codes, fp16 scales), see the section comment."""
    if w.ndim != 2:
        raise ValueError(f"quantize_rows needs a 2-D array, got shape {w.shape}")
    qmax = 2 ** (bits - 1) - 1
    w32 = np.asarray(w, dtype=np.float32)
    mag = np.abs(w32)
    quantiles = CLIP_SEARCH_QUANTILES if clip_search else (PLAIN_CLIP_QUANTILE,)
    floor = np.float32(1.0 / 127.0 if bits == 8 and not clip_search else 0.0)  # upstream's plain int8 floor
    best_q = best_s = best_err = None
    for quantile in quantiles:
        clip = mag.max(axis=1) if quantile == 1.0 else np.quantile(mag, quantile, axis=1).astype(np.float32)
        scale = np.maximum(np.maximum(clip / qmax, floor).astype(np.float16), FP16_TINY)  # fp16 can round to 0
        s32 = scale.astype(np.float32)[:, None]
        clipped = np.clip(w32, -clip[:, None], clip[:, None])
        q = np.clip(np.round(clipped / s32), -qmax, qmax).astype(np.int8)
        err = np.square(w32 - q.astype(np.float32) * s32).sum(axis=1)
        if best_err is None:
            best_q, best_s, best_err = q, scale, err
            continue
        better = err < best_err
        best_q[better], best_s[better], best_err[better] = q[better], scale[better], err[better]
    return best_q, best_s


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


def compress_bytes(raw: bytes, compressor: str) -> bytes:
    if compressor == "zlib":
        return zlib.compress(raw, level=9)
    if compressor == "lzma":
        import lzma

        return lzma.compress(raw, preset=9)
    if compressor == "brotli":
        return _brotli().compress(raw, quality=11)
    raise ValueError(f"compressor={compressor!r} is not supported; choose one of {list(COMPRESSORS)}")


def decompress_bytes(blob: bytes, compressor: str) -> bytes:
    if compressor == "zlib":
        return zlib.decompress(blob)
    if compressor == "lzma":
        import lzma

        return lzma.decompress(blob)
    if compressor == "brotli":
        return _brotli().decompress(blob)
    raise ValueError(f"compressor={compressor!r} is not supported; choose one of {list(COMPRESSORS)}")


def _brotli():
    try:
        import brotli
    except ImportError:
        raise ImportError("compressor='brotli' needs the brotli package: pip install '.[brotli]' (or pip install "
                          "brotli), or choose compressor=zlib or lzma") from None
    return brotli


def pack_artifact(arrays: Mapping[str, np.ndarray], spec: ExportSpec) -> tuple[bytes, dict[str, int]]:
    """Quantize and compress a state dict of numpy arrays: (compressed bytes, stats)."""
    entries, chunks = [], []
    stats = dict.fromkeys(("param_count", "quantized_params", "payload_bytes"), 0)
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        entry: dict[str, Any] = {"name": name, "shape": list(a.shape)}
        stats["param_count"] += int(a.size)
        if not np.issubdtype(a.dtype, np.floating):
            entry.update(store="raw", dtype=a.dtype.str)
            parts = [a]
        else:
            store, bits = spec.storage_for(name, a.shape)
            entry.update(store=store, bits=bits)
            if store == "q":
                q, s = quantize_rows(a, bits, clip_search=spec.clip_search)
                parts = [q, s]
                stats["quantized_params"] += int(a.size)
            else:
                parts = [a.astype(np.float32 if store == "f32" else np.float16)]
        for part in parts:
            chunks.append(part.tobytes())
            stats["payload_bytes"] += part.nbytes
        entries.append(entry)
    header = json.dumps({"format": "pgq1", "spec": dataclasses.asdict(spec), "tensors": entries}).encode("utf-8")
    raw = ARTIFACT_MAGIC + len(header).to_bytes(4, "little") + header + b"".join(chunks)
    stats["raw_bytes"] = len(raw)
    return compress_bytes(raw, spec.compressor), stats


def unpack_artifact(blob: bytes, compressor: str) -> dict[str, np.ndarray]:
    """The float32 (or raw integer) arrays of an artifact written by pack_artifact."""
    raw = decompress_bytes(blob, compressor)
    if raw[:4] != ARTIFACT_MAGIC:
        raise ValueError(f"not a {ARTIFACT_MAGIC.decode()} artifact (starts with {raw[:4]!r})")
    n = int.from_bytes(raw[4:8], "little")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    pos, out = 8 + n, {}

    def take(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        nonlocal pos
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        a = np.frombuffer(raw, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += count * dt.itemsize
        return a

    for e in header["tensors"]:
        shape = tuple(e["shape"])
        if e["store"] == "raw":
            out[e["name"]] = take(e["dtype"], shape).copy()
        elif e["store"] == "q":
            q = take(np.int8, shape)
            out[e["name"]] = dequantize_rows(q, take(np.float16, (shape[0],)))
        else:
            out[e["name"]] = take(np.float32 if e["store"] == "f32" else np.float16, shape).astype(np.float32)
    if pos != len(raw):
        raise ValueError(f"artifact has {len(raw) - pos} trailing bytes after its {len(out)} tensors")
    return out


@dataclass(frozen=True)
class BudgetCheck:
    """An artifact's size against the challenge budget (compressed model + code bytes)."""

    model_bytes: int
    code_bytes: int
    limit: int = ARTIFACT_BUDGET_BYTES

    @property
    def artifact_bytes(self) -> int:
        return self.model_bytes + self.code_bytes

    @property
    def within_budget(self) -> bool:
        return self.artifact_bytes <= self.limit

    def message(self) -> str:
        verdict = "within" if self.within_budget else "OVER"
        return (f"artifact {self.artifact_bytes:,} bytes (model {self.model_bytes:,} + code {self.code_bytes:,}) is "
                f"{verdict} the {self.limit:,}-byte budget")
# <<< twin: artifact-export <<<


# -----------------------------
# DATA LOADING
# -----------------------------

# >>> twin: data-order >>>
def open_shard_memmap(path: str | Path) -> np.ndarray:
    num_tokens = read_shard_header(path)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


class TokenStream:
    """Training batches as int64 numpy arrays (framework-free; the trainer converts them to its tensors)."""

    def __init__(self, pattern: str | list, *, rank: int = 0, world_size: int = 1, order: str = "sequential",
                 seed: int = 0):
        if isinstance(pattern, str):
            files = sorted(glob.glob(pattern))
            if not files:
                raise ShardError(f"no training shards match {pattern}")
            self.shards = [open_shard_memmap(f) for f in files]
        else:
            self.shards = list(pattern)
        self.rank, self.world_size = rank, world_size
        self.order = order
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.file_idx, self.pos = 0, 0

    def _take(self, n: int) -> np.ndarray:
        chunks, remaining = [], n
        while remaining > 0:
            tokens = self.shards[self.file_idx]
            avail = tokens.size - self.pos
            if avail <= 0:
                self.file_idx, self.pos = (self.file_idx + 1) % len(self.shards), 0
                continue
            k = min(remaining, avail)
            chunks.append(np.asarray(tokens[self.pos : self.pos + k]))
            self.pos += k
            remaining -= k
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _random_windows(self, count: int, span: int) -> np.ndarray:
        valid = np.array([max(s.size - span + 1, 0) for s in self.shards], dtype=np.int64)
        if valid.sum() <= 0:
            raise ShardError(f"training shards are shorter than one window of {span} tokens")
        flat = self.rng.integers(0, int(valid.sum()), size=count)
        bounds = np.cumsum(valid)
        out = np.empty((count, span), dtype=np.int64)
        for j, g in enumerate(flat):
            shard = int(np.searchsorted(bounds, g, side="right"))
            start = int(g - (bounds[shard - 1] if shard else 0))
            out[j] = self.shards[shard][start : start + span]
        return out

    def get_state(self) -> tuple:
        """Where the stream stands (generator state, shard, position): set_state resumes it exactly."""
        return copy.deepcopy(self.rng.bit_generator.state), self.file_idx, self.pos

    def set_state(self, state: tuple) -> None:
        self.rng.bit_generator.state, self.file_idx, self.pos = copy.deepcopy(state[0]), state[1], state[2]

    def next_arrays(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's (inputs, targets) for one micro-step, each (sequences, seq_len) int64."""
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if self.order == "seeded":
            nseq = max(1, local_tokens // seq_len)
            windows = self._random_windows(nseq * self.world_size, seq_len + 1)
            local = windows[self.rank * nseq : (self.rank + 1) * nseq]
            return local[:, :-1], local[:, 1:]
        span = local_tokens + 1
        chunk = self._take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64)
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
# <<< twin: data-order <<<


# -----------------------------
# RUN RESULT + DATA SETUP
# -----------------------------

# >>> twin: run-result >>>
RUN_STATUSES = ("ok", "diverged", "failed")


@dataclass(frozen=True)
class RunResult:
    """One training run, JSON-serialisable via to_dict/from_dict (non-finite floats become null in JSON)."""

    config: dict
    config_hash: str
    seed: int
    backend: str  # "torch" | "mlx"
    versions: dict
    step_losses: list = field(default_factory=list)  # train loss per step
    val_history: list = field(default_factory=list)  # [{"step", "val_loss", "val_bpb"}]
    val_loss: float = float("nan")
    val_bpb: float = float("nan")
    post_quant_val_loss: float = float("nan")
    post_quant_val_bpb: float = float("nan")
    sliding_val_loss: float = float("nan")  # NaN when eval_stride = 0
    sliding_val_bpb: float = float("nan")
    ttt_val_loss: float = float("nan")  # NaN when ttt = "off"
    ttt_val_bpb: float = float("nan")
    artifact_bytes: int = 0  # compressed model + code bytes of the trainer
    model_bytes: int = 0
    code_bytes: int = 0
    within_budget: bool | None = None  # artifact_bytes <= ARTIFACT_BUDGET_BYTES (None: no artifact)
    export_format: str = ""  # "int8+zlib" (upstream) or ExportSpec.label()
    eval_s: dict = field(default_factory=dict)  # seconds per evaluation stage that ran
    steps: int = 0
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    status: str = "ok"
    error: str | None = None
    horizon_metrics: dict = field(default_factory=dict)  # horizons on: {"H": horizon_entry(...)}, H as a string

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in ("config", "config_hash", "seed", "backend", "versions") if n not in data)
        if missing:
            raise ValueError(f"RunResult.from_dict: missing field(s) {missing}")
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "sliding_val_loss",
                    "sliding_val_bpb", "ttt_val_loss", "ttt_val_bpb", "wall_s", "tokens_per_s"):
            if key in kwargs:
                kwargs[key] = _float_or_nan(kwargs[key])
        kwargs["step_losses"] = [_float_or_nan(v) for v in kwargs.get("step_losses", [])]
        return cls(**kwargs)


METRIC_FIELDS = {"pre_quant": "val_bpb", "post_quant": "post_quant_val_bpb", "sliding": "sliding_val_bpb",
                 "ttt": "ttt_val_bpb"}


def stages_on(config: Mapping[str, Any]) -> list[str]:
    """The evaluation stages a run's config turns on, in METRIC_STAGES order (old configs: the first two)."""
    on = {"sliding": int(config.get("eval_stride", 0) or 0) > 0, "ttt": config.get("ttt", "off") not in ("off", None)}
    return [s for s in METRIC_STAGES if on.get(s, True)]


def pick_metric(result: RunResult | Mapping[str, Any], metric: str | None = None) -> tuple[str, float]:
    """(stage, bpb) of a run's pre-registered score. `metric` (default: the run config's `metric`, else "auto")
    names a stage of METRIC_STAGES, or "auto" for the last stage its config turns on. NaN when that stage did
    not run (a failed run, or a stage that is off)."""
    data = result.to_dict() if isinstance(result, RunResult) else result
    config = data.get("config") or {}
    metric = metric or config.get("metric") or "auto"
    if metric not in METRICS:
        raise ConfigValueError(f"metric={metric!r} is not supported; choose one of {list(METRICS)}")
    stage = stages_on(config)[-1] if metric == "auto" else metric
    return stage, _float_or_nan(data.get(METRIC_FIELDS[stage]))


def _float_or_nan(value: Any) -> float:
    if value is None:
        return float("nan")
    return float(value)  # float("inf") / float("-inf") parse the strings write_json stores
# <<< twin: run-result <<<


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "mlx": getattr(mx, "__version__", "unknown"),
            "numpy": np.__version__}


# >>> twin: data-setup >>>
@dataclass
class TrainData:
    """Everything a run reads from disk, loaded once and shareable between runs of the same data."""

    data_path: str
    tokenizer_path: str
    train_shards: list  # np.memmap per train shard
    val_tokens: np.ndarray  # the full val split (untrimmed)
    luts: tuple  # (base_bytes, has_leading_space, is_boundary)
    vocab_size: int


def _has_shards(data_path: str | Path) -> bool:
    return bool(glob.glob(shard_pattern(data_path, "train"))) and bool(glob.glob(shard_pattern(data_path, "val")))


def prepare_command(data_path: str | Path) -> str:
    """The command that makes the shards a data folder should hold (named in missing-data errors)."""
    name = Path(data_path).name
    if name.startswith("fineweb"):
        variant = name.rpartition("_")[2]
        return "python scripts/causal/download_fineweb.py" + ("" if variant == "sp1024" else f" --variant {variant}")
    source = name.rpartition("_sp")[0] or name
    return "python scripts/causal/prepare_data.py prepare" + ("" if source == "shakespeare" else f" --source {source}")


def resolve_data_paths(cfg: Hyperparameters) -> Hyperparameters:
    """Return cfg with data paths that hold shards. A relative DATA_PATH is looked up in the working directory,
    then next to this file (a relative TOKENIZER_PATH moves with it). With the default FineWeb DATA_PATH and
    another VOCAB_SIZE V, the folder is fineweb10B_spV (tokenizer fineweb_V_bpe.model), as the records' download.
    Data is never prepared or switched here: no shards raises ShardError naming the folder and the command."""
    if cfg.vocab_size != 1024 and os.path.normpath(cfg.data_path) == os.path.normpath(DEFAULT_DATA_PATH):
        return resolve_data_paths(cfg.with_overrides(
            data_path=DEFAULT_DATA_PATH.replace("sp1024", f"sp{cfg.vocab_size}"),
            tokenizer_path=DEFAULT_TOKENIZER_PATH.replace("1024", str(cfg.vocab_size))
            if cfg.tokenizer_path == DEFAULT_TOKENIZER_PATH else cfg.tokenizer_path))
    if _has_shards(cfg.data_path):
        return cfg
    here = Path(__file__).resolve().parent
    if not os.path.isabs(cfg.data_path) and _has_shards(here / cfg.data_path):
        tok = cfg.tokenizer_path if os.path.isabs(cfg.tokenizer_path) else str(here / cfg.tokenizer_path)
        return cfg.with_overrides(data_path=str(here / cfg.data_path), tokenizer_path=tok)
    looked = " and ".join(dict.fromkeys((os.getcwd(), str(here))))
    where = cfg.data_path if os.path.isabs(cfg.data_path) else f"{cfg.data_path} (looked in {looked})"
    raise ShardError(
        f"DATA_PATH={where}: no fineweb_train_*.bin / fineweb_val_*.bin shards there. Prepare the data before "
        f"training: `{prepare_command(cfg.data_path)}` (from the repository root), or set DATA_PATH and "
        "TOKENIZER_PATH to a folder of shards and its SentencePiece model"
    )


def load_train_data(cfg: Hyperparameters) -> TrainData:
    """Open the train shards (memory-mapped), read the val split and build the byte-accounting tables."""
    import sentencepiece as spm

    if not cfg.tokenizer_path.endswith(".model"):
        raise ConfigValueError(f"TOKENIZER_PATH={cfg.tokenizer_path}: expected a SentencePiece .model file")
    if not Path(cfg.tokenizer_path).is_file():
        raise ShardError(f"TOKENIZER_PATH={cfg.tokenizer_path}: tokenizer file not found; it is made with the shards "
                         f"by `{prepare_command(cfg.data_path)}`")
    sp = spm.SentencePieceProcessor(model_file=cfg.tokenizer_path)
    if int(sp.vocab_size()) != cfg.vocab_size:
        raise ConfigValueError(f"VOCAB_SIZE={cfg.vocab_size} does not match tokenizer vocab_size={int(sp.vocab_size())}")
    files = sorted(glob.glob(cfg.train_files))
    if not files:
        raise ShardError(f"no training shards match {cfg.train_files}")
    val_files = sorted(glob.glob(cfg.val_files))
    if not val_files:
        raise ShardError(f"no validation shards match {cfg.val_files}")
    val_tokens = np.concatenate([load_data_shard(f) for f in val_files])
    return TrainData(cfg.data_path, cfg.tokenizer_path, [open_shard_memmap(f) for f in files], val_tokens,
                     build_sentencepiece_luts(sp, cfg.vocab_size), cfg.vocab_size)


def trim_val_tokens(tokens: np.ndarray, seq_len: int, source: str = "validation split") -> np.ndarray:
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ShardError(f"{source} ({tokens.size} tokens) is too short for TRAIN_SEQ_LEN={seq_len}")
    return tokens[: usable + 1]
# <<< twin: data-setup <<<


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


def zeropower_via_newtonschulz5(g: mx.array, steps: int = 10, eps: float = 1e-7, coeffs=None) -> mx.array:
    """Orthogonalise a 2D update with the quintic Newton-Schulz iteration (fp32 here, as on CPU in torch);
    ``coeffs`` is one (a, b, c) per iteration (train_gpt.ns_coefficients), default upstream's fixed tuple."""
    x = g.astype(mx.float32)
    x = x / (mx.sqrt(mx.sum(x * x)) + eps)
    transposed = g.shape[0] > g.shape[1]
    if transposed:
        x = x.T
    for a, b, c in coeffs or (NS_COEFFS,) * steps:
        a_mat = x @ x.T
        b_mat = b * a_mat + c * (a_mat @ a_mat)
        x = a * x + b_mat @ x
    return x.T if transposed else x


class Muon:
    """Momentum (Nesterov) + Newton-Schulz orthogonalised updates for the matrix parameters."""

    def __init__(self, names: list[str], *, lr: float, momentum: float, backend_steps: int, nesterov: bool = True,
                 weight_decay: float = 0.0, row_normalize: bool = False, ns: str = "default"):
        self.names, self.base_lr, self.lr = list(names), lr, lr
        self.momentum, self.backend_steps, self.nesterov = momentum, backend_steps, nesterov
        self.weight_decay, self.row_normalize = weight_decay, row_normalize
        self.coeffs = ns_coefficients(ns, backend_steps)
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
            if self.row_normalize:  # MuonEq-R
                g = g / mx.maximum(mx.sqrt(mx.sum(g * g, axis=-1, keepdims=True)), 1e-7)
            g = zeropower_via_newtonschulz5(g, steps=self.backend_steps, coeffs=self.coeffs)
            g = g * max(1.0, g.shape[0] / g.shape[1]) ** 0.5
            if self.weight_decay > 0:
                p = p * (1.0 - self.lr * self.weight_decay)
            out[name] = p - self.lr * g
        return out

    def state_arrays(self) -> list[mx.array]:
        return list(self.buf.values())


class Adam:
    """torch.optim.Adam semantics (bias-corrected, eps outside the sqrt); with weight_decay > 0 torch.optim.AdamW's
    decoupled decay, p *= 1 - lr * weight_decay before the Adam update."""

    def __init__(self, names: list[str], *, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float = 0.0):
        self.names, self.base_lr, self.lr = list(names), lr, lr
        self.beta1, self.beta2, self.eps, self.weight_decay = betas[0], betas[1], eps, weight_decay
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
            if self.weight_decay > 0:
                p = p * (1.0 - self.lr * self.weight_decay)
            out[name] = p - (self.lr / bc1) * m / (mx.sqrt(v) / math.sqrt(bc2) + self.eps)
        return out

    def state_arrays(self) -> list[mx.array]:
        return list(self.m.values()) + list(self.v.values())


# -----------------------------
# MODEL
# -----------------------------
# Module and parameter names match train_gpt.py's state_dict exactly (tok_emb.weight, blocks.{i}.attn.c_q.weight,
# blocks.{i}.attn.q_gain, blocks.{i}.mlp.fc.weight, ..., skip_weights, lm_head.weight, mtp_heads.{j}.weight), so
# weights copy by name in both directions. Parameter-free RMSNorms are plain function calls here.


class CastedLinear(nn.Module):
    """Bias-free linear layer holding a torch-layout (out, in) fp32 weight; zero_init marks the projections that
    start at zero (as train_gpt.py's _zero_init). With qat_bits > 0 (configure_qat) the forward mixes in the
    weight's fake quantization by the shared QatSwitch's alpha."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.zero_init = False
        self.qat_bits, self.qat_floor, self.qat_switch = 0, 0.0, None
        self.weight = mx.zeros((out_dim, in_dim), dtype=mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        w = self.weight
        if self.qat_bits:
            alpha = self.qat_switch.state["alpha"]
            w = w + alpha * mx.stop_gradient(fake_quantize_rows(w, self.qat_bits, self.qat_floor) - w)
        return x @ w.T


# QAT (train_gpt.py's EXPORT + QAT section): the forward sees w + alpha * (fake(w) - w) with the gradient passed
# straight through. alpha lives in a QatSwitch whose `state` dict a compiled step takes as an input, so turning
# QAT on reaches an mx.compile'd graph (a Python flag would be traced once as a constant).


class QatSwitch:
    """On/off of fake quantization for every configured layer; `state` is an input of the compiled step."""

    def __init__(self) -> None:
        self.state = {"alpha": mx.array(0.0, dtype=mx.float32)}
        self.layers = 0

    @property
    def on(self) -> bool:
        return bool(self.state["alpha"].item())

    def set(self, on: bool) -> None:
        self.state["alpha"] = mx.array(1.0 if on else 0.0, dtype=mx.float32)


def fake_quantize_rows(w: mx.array, bits: int, floor: float = 0.0) -> mx.array:
    """train_gpt.fake_quantize_rows: w after quantize_rows' plain per-row quantization at `bits` (clip at the
    PLAIN_CLIP_QUANTILE of |w|, interpolated between the two largest values; fp16 scale of at least `floor`).
    The interpolation is fp32 here (torch: fp64; Metal has no fp64), so a clip may differ in its last bit."""
    qmax = 2 ** (bits - 1) - 1
    top = mx.sort(mx.abs(w), axis=1)[:, -2:]
    frac = PLAIN_CLIP_QUANTILE * (w.shape[1] - 1) - (w.shape[1] - 2)
    clip = (top[:, 0] + frac * (top[:, 1] - top[:, 0]))[:, None]
    scale = mx.maximum(mx.maximum(clip / qmax, floor).astype(mx.float16).astype(mx.float32), 2.0**-24)
    clipped = mx.maximum(mx.minimum(w, clip), -clip)
    return mx.clip(mx.round(clipped / scale), -qmax, qmax) * scale


def configure_qat(model: nn.Module, spec: ExportSpec, enabled: bool) -> QatSwitch | None:
    """With `enabled`, give every block CastedLinear the export quantizes its bits and one shared switch (off),
    and return the switch (None when no layer qualifies or QAT is off): train_gpt.configure_qat."""
    switch = QatSwitch()
    for name, module in model.named_modules():
        if not isinstance(module, CastedLinear):
            continue
        store, bits = spec.storage_for(f"{name}.weight", tuple(module.weight.shape))
        module.qat_bits = bits if enabled and store == "q" and name.startswith("blocks.") else 0
        module.qat_floor = 1.0 / 127.0 if bits == 8 and not spec.clip_search else 0.0
        module.qat_switch = switch if module.qat_bits else None
        switch.layers += bool(module.qat_bits)
    return switch if switch.layers else None


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
        self.proj.zero_init = True
        self.q_gain = mx.full((self.num_heads,), float(cfg.qk_gain_init), dtype=mx.float32)
        self.out_gate, self.gate_window, self.gate_scale = cfg.attn_out_gate, cfg.gate_window, cfg.attn_gate_scale
        if self.out_gate != "none":  # attention-output gate (train_gpt.CausalSelfAttention)
            self.attn_gate_w = mx.zeros((self.num_heads, dim if self.out_gate == "dense" else cfg.gate_window))

    def __call__(self, x: mx.array, v_embed: mx.array | None = None) -> mx.array:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.c_v(x)
        if v_embed is not None:
            v = v + v_embed
        v = v.reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        cos, sin = rotary_tables(seqlen, self.rope_dims, self.rope_base)
        q = apply_rotary(rms_norm(q), cos, sin, self.rope_dims)
        k = apply_rotary(rms_norm(k), cos, sin, self.rope_dims)
        q = q * self.q_gain[None, :, None, None]
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask="causal")
        if self.xsa:
            y = exclusive_self_attention(y, v)
        if self.out_gate != "none":
            gate_in = x if self.out_gate == "dense" else x[..., : self.gate_window]
            logits = gate_in @ self.attn_gate_w.T
            g = mx.sigmoid(logits if self.out_gate == "dense" else self.gate_scale * logits)
            y = y * g.transpose(0, 2, 1)[..., None]
        return self.proj(y.transpose(0, 2, 1, 3).reshape(bsz, seqlen, dim))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = CastedLinear(cfg.model_dim, hidden)
        self.proj = CastedLinear(hidden, cfg.model_dim)
        self.proj.zero_init = True
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

    def _attn_out(self, x: mx.array, x0: mx.array, v_embed) -> tuple[mx.array, mx.array]:
        mix = self.resid_mix
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        h = rms_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        return x, self.attn_scale[None, None, :] * self.attn(h, v_embed)

    def _mlp_out(self, x: mx.array) -> mx.array:
        h = rms_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        return self.mlp_scale[None, None, :] * self.mlp(h)

    def __call__(self, x: mx.array, x0: mx.array, v_embed=None) -> mx.array:
        x, attn_out = self._attn_out(x, x0, v_embed)
        x = x + attn_out
        return x + self._mlp_out(x)

    def parallel(self, lanes, x0: mx.array, post: mx.array, resid: mx.array, v_embed=None):
        """Two-lane parallel residual block (train_gpt.Block.parallel)."""
        lane0, lane1 = lanes
        _, attn_out = self._attn_out(lane0, x0, v_embed)
        mlp_out = self._mlp_out(lane1)
        return (resid[0] * lane0 + post[0, 0] * attn_out + post[1, 0] * mlp_out,
                resid[1] * lane1 + post[0, 1] * attn_out + post[1, 1] * mlp_out)


class BigramHash(nn.Module):
    """train_gpt.BigramHash: hashed (previous token, token) table, projected and scaled."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        self.embed.init_std = 0.0  # train_gpt.BigramHash: the table starts at zero
        self.proj = CastedLinear(dim, model_dim)
        self.scale = mx.array(0.05, dtype=mx.float32)

    def __call__(self, ids: mx.array) -> mx.array:
        t = ids.astype(mx.int32)
        mod = self.buckets - 1
        h = mx.remainder(mx.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]), mod)
        h = mx.concatenate([mx.full(t[:, :1].shape, mod, dtype=mx.int32), h], axis=1)
        return self.proj(self.embed(h)) * self.scale


class ValueEmbedding(nn.Module):
    """train_gpt.ValueEmbedding: shared token table projected to the kv width, scaled."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.embed.init_std = 0.01  # train_gpt.ValueEmbedding: N(0, 0.01)
        self.proj = CastedLinear(dim, kv_dim)
        self.scale = mx.array(0.1, dtype=mx.float32)

    def __call__(self, ids: mx.array) -> mx.array:
        return self.proj(self.embed(ids)) * self.scale


class GPT(nn.Module):
    """The baseline U-Net-style GPT (first half of the blocks stores skips, the second half adds them back),
    with train_gpt.GPT's frontier knobs.

    ``model(x, y)`` is the training objective for cfg.loss (ce | rho1 | mtp); ``model.eval_loss(x, y)`` is plain
    next-token CE, which is what evaluation uses (train_gpt.py's eval mode).
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.logit_softcap <= 0.0:
            raise ValueError(f"logit_softcap must be positive, got {cfg.logit_softcap}")
        self.cfg = cfg
        dim = cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, dim)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        self.looping = False  # depth recurrence (train_gpt.GPT.looping)
        enc, dec = layer_schedule(cfg, cfg.num_loops > 0)
        self.num_skip = min(len(enc), len(dec))
        self.skip_weights = mx.ones((self.num_skip, dim), dtype=mx.float32)
        if cfg.skip_gates:
            self.skip_gates = mx.zeros((self.num_skip, dim), dtype=mx.float32)
        self.blocks = [Block(cfg, i) for i in range(cfg.num_layers)]
        if cfg.parallel_start_layer > 0:
            self.parallel_post_lambdas = mx.ones((cfg.num_layers, 2, 2), dtype=mx.float32)
            self.parallel_resid_lambdas = mx.full((cfg.num_layers, 2), 1.1, dtype=mx.float32)
        if cfg.smear_gate:
            self.smear_gate = CastedLinear(cfg.gate_window, 1)
            self.smear_gate.zero_init = True
            self.smear_lambda = mx.zeros((1,), dtype=mx.float32)
        if cfg.bigram_buckets > 0:
            self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, dim)
        self.ve_layers = cfg.ve_layer_indices
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, cfg.num_kv_heads * (dim // cfg.num_heads))
            self.ve_layer_scales = [mx.ones((1,), dtype=mx.float32) for _ in self.ve_layers]
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(dim, cfg.vocab_size)
            self.lm_head.zero_init = True
        if cfg.loss == "mtp":  # training-only vocab heads; head j predicts token t+j+2
            self.mtp_heads = [CastedLinear(dim, cfg.vocab_size) for _ in range(cfg.mtp_heads)]
            for head in self.mtp_heads:
                head.zero_init = True

    def _embed(self, input_ids: mx.array) -> mx.array:
        cfg = self.cfg
        x = self.tok_emb(input_ids)
        if cfg.bigram_buckets > 0:
            x = x + self.bigram(input_ids)
        if cfg.smear_gate:
            g = self.smear_lambda * mx.sigmoid(self.smear_gate(x[:, 1:, : cfg.gate_window]))
            not_bos = (input_ids[:, 1:] != BOS_ID).astype(x.dtype)[..., None]
            x = mx.concatenate([x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos], axis=1)
        return rms_norm(x)

    def _skip(self, x: mx.array, j: int, skip: mx.array) -> mx.array:
        scaled = self.skip_weights[j][None, None, :] * skip
        if self.cfg.skip_gates:
            g = mx.sigmoid(self.skip_gates[j])[None, None, :]
            return scaled + g * (x - scaled)  # torch.lerp(scaled, x, g)
        return x + scaled

    def hidden(self, input_ids: mx.array) -> mx.array:
        """Residual stream after the last block (before final_norm)."""
        x = self._embed(input_ids)
        ve_base = self.ve_shared(input_ids) if self.ve_layers else None

        def ve(i: int):
            if ve_base is None or i not in self.ve_layers:
                return None
            return ve_base * self.ve_layer_scales[self.ve_layers.index(i)]

        enc, dec = layer_schedule(self.cfg, self.looping)
        x0, skips = x, []
        for i in enc:
            x = self.blocks[i](x, x0, ve(i))
            skips.append(x)
        psl, lanes = self.cfg.parallel_start_layer, None
        for j, i in enumerate(dec):
            if psl > 0 and i >= psl:
                if lanes is None:
                    lanes = (x, x)
                lane0 = self._skip(lanes[0], j, skips.pop()) if j < self.num_skip and skips else lanes[0]
                lanes = self.blocks[i].parallel((lane0, lanes[1]), x0, self.parallel_post_lambdas[i],
                                                self.parallel_resid_lambdas[i], ve(i))
                continue
            if j < self.num_skip and skips:
                x = self._skip(x, j, skips.pop())
            x = self.blocks[i](x, x0, ve(i))
        return x if lanes is None else 0.5 * (lanes[0] + lanes[1])

    def logits(self, h: mx.array, head=None) -> mx.array:
        """Soft-capped logits of final-normed hidden states h (..., dim); ``head`` defaults to the output head."""
        if head is not None:
            proj = head(h)
        else:
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
        main = mx.mean(tok)  # mtp: main CE + mtp_weight x mean over heads of CE of token t+j+2
        h = rms_norm(x)
        aux = [mx.mean(cross_entropy(self.logits(h[:, : -(j + 1)].reshape(-1, cfg.model_dim), head),
                                     target_ids[:, j + 1 :].reshape(-1)))
               for j, head in enumerate(self.mtp_heads) if target_ids.shape[1] > j + 1]
        return main + cfg.mtp_weight * (sum(aux) / len(aux)) if aux else main


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
# WEIGHTS, KEYED INIT, OPTIMIZER GROUPS
# -----------------------------
# train_gpt.init_weights draws each parameter from torch's CPU generator (MT19937) seeded with
# _param_seed(seed, name). numpy's legacy MT19937 seeds the same way, so the uniform draws (every linear layer)
# are bit-identical to torch.rand. The normal draw (tok_emb) follows torch's Box-Muller pairing (normal_fill:
# blocks of 16 uniforms, u1 = 1 - u[j], u2 = u[j + 8]) in float64, rounded once to float32: it equals torch.randn
# to within float32 rounding (torch's vectorised log/sin/cos differ in the last bit), and is the same on every
# platform. Zero-init projections and the constant control tensors are set exactly.

# >>> twin: init-keys >>>
def _param_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)
# <<< twin: init-keys <<<


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
    """torch state_dict (or named tensors) -> fp32 MLX arrays, same names (duck-typed: torch is not imported)."""
    return {k: mx.array(v.detach().to("cpu").float().numpy()) for k, v in state_dict.items()}


def torch_uniform(seed: int, n: int) -> np.ndarray:
    """torch.rand(n, generator=torch.Generator().manual_seed(seed)) in float32, bit for bit."""
    words = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=n, dtype=np.uint64)
    return (words & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)


def torch_normal(seed: int, n: int) -> np.ndarray:
    """torch.randn(n) for n >= 16 by torch's normal_fill pairing (equal to within float32 rounding, see above)."""
    return torch_normal_draws(seed, [n])[0]


def torch_normal_draws(seed: int, sizes: list[int]) -> list[np.ndarray]:
    """Successive torch.randn(n) draws from one generator seeded `seed`: each consumes n uniforms, plus 16 more
    when n is not a multiple of 16 (the redrawn tail)."""
    if min(sizes) < 16:
        raise ValueError(f"torch_normal needs n >= 16 (torch draws smaller tensors another way), got {min(sizes)}")
    used = [n + (16 if n % 16 else 0) for n in sizes]
    u_all, offsets = torch_uniform(seed, sum(used)), np.cumsum([0, *used])
    return [_normal_fill(u_all[o : o + k], n) for n, o, k in zip(sizes, offsets[:-1], used, strict=True)]


def _normal_fill(u: np.ndarray, n: int) -> np.ndarray:
    """n normals from the uniforms one randn(n) consumes (n, plus the 16 of the redrawn tail)."""

    def box_muller(block: np.ndarray) -> np.ndarray:  # (k, 16) uniforms -> (k, 16) normals
        radius = np.sqrt(-2.0 * np.log(1.0 - block[:, :8].astype(np.float64)))
        theta = (2.0 * math.pi * block[:, 8:].astype(np.float64)).astype(np.float32).astype(np.float64)
        return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1).astype(np.float32)

    full = n - n % 16
    out = np.empty(n, dtype=np.float32)
    out[:full] = box_muller(u[:full].reshape(-1, 16)).reshape(-1)
    if n % 16:  # torch then redraws the last 16 values from 16 fresh uniforms
        out[n - 16 :] = box_muller(u[n:].reshape(1, 16)).reshape(-1)
    return out


def init_params(cfg, seed: int) -> dict[str, mx.array]:
    """train_gpt.init_weights' name-keyed initialisation: adding or removing a module leaves every other
    parameter's initial values unchanged (common random numbers)."""
    model = GPT(cfg)
    modules = dict(model.named_modules())
    zero_init = {f"{n}.weight" for n, m in modules.items() if getattr(m, "zero_init", False)}
    linear = {f"{n}.weight" for n, m in modules.items() if isinstance(m, CastedLinear)}
    table_std = {f"{n}.weight": m.init_std for n, m in modules.items() if hasattr(m, "init_std")}
    out = {}
    for name, p in flat_params(model).items():
        n = int(np.prod(p.shape))
        if name == "tok_emb.weight":
            std = cfg.tied_embed_init_std if cfg.tie_embeddings else 1.0
            value = torch_normal(_param_seed(seed, name), n) * np.float32(std)
        elif name in table_std:
            value = torch_normal(_param_seed(seed, name), n) * np.float32(table_std[name])
        elif name.endswith("attn_gate_w"):
            std = DENSE_GATE_INIT_STD if cfg.attn_out_gate == "dense" else 0.0
            value = torch_normal(_param_seed(seed, name), n) * np.float32(std)
        elif name in zero_init:
            value = np.zeros(n, dtype=np.float32)
        elif name in linear:
            bound = np.float32(1.0 / math.sqrt(p.shape[1]))
            value = (torch_uniform(_param_seed(seed, name), n) * np.float32(2.0) - np.float32(1.0)) * bound
        else:  # control tensors: the constants the model was built with (q_gain, scales, resid_mix, skips)
            value = np.array(p, dtype=np.float32).reshape(-1)
        for prefix, constant in CONSTANT_INITS:  # the frontier knobs' constants, as train_gpt.init_weights
            if name.startswith(prefix):
                value = np.full(n, constant, dtype=np.float32)
        out[name] = mx.array(value.reshape(p.shape))
    return out


def param_groups(cfg, params: dict[str, mx.array]) -> dict[str, list[str]]:
    """Parameter names per optimizer, by train_gpt.optimizer_group (the one rule both backends use)."""
    groups: dict[str, list[str]] = {"tok": [], "head": [], "matrix": [], "scalar": []}
    for name, p in params.items():
        groups[optimizer_group(name, p.ndim)].append(name)
    return groups


class Optimizers:
    """All of a run's optimizers, stepped together on flat name->array dicts."""

    def __init__(self, cfg, params: dict[str, mx.array]):
        groups = param_groups(cfg, params)
        betas = (cfg.beta1, cfg.beta2)
        token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        self.muon = Muon(groups["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                         backend_steps=cfg.muon_backend_steps, weight_decay=cfg.muon_wd,
                         row_normalize=cfg.muon_row_normalize, ns=cfg.muon_ns)
        decayed = dict(betas=betas, eps=cfg.adam_eps, weight_decay=cfg.adam_wd)  # as train_gpt: not the head
        self.all = [Adam(groups["tok"], lr=token_lr, **decayed), self.muon,
                    Adam(groups["scalar"], lr=cfg.scalar_lr, **decayed)]
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
# SentencePiece tables (count_target_bytes). Batched by val_batch_size tokens, sums in float64, as
# train_gpt.eval_val.


class EvalSet:
    """The trimmed val split as (N, seq_len) inputs/targets plus its total byte count (computed once)."""

    def __init__(self, val_tokens: np.ndarray, luts, seq_len: int):
        tokens = trim_val_tokens(np.asarray(val_tokens), seq_len).astype(np.int64)
        self.x = tokens[:-1].reshape(-1, seq_len)
        self.y = tokens[1:].reshape(-1, seq_len)
        self.seq_len = seq_len
        self.total_bytes = count_target_bytes(self.x.reshape(-1), self.y.reshape(-1), luts)


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


def token_nll(model: GPT, x: mx.array, y: mx.array) -> mx.array:
    """Per-target cross-entropy in nats, flat (B*T,): the eval-mode loss before its mean (train_gpt.token_nll)."""
    return model.token_losses(x, y)


def _stream(ev: EvalSet) -> np.ndarray:
    """The trimmed val split as one token stream (its N targets are tokens 1..N)."""
    return np.concatenate([ev.x.reshape(-1), ev.y[-1, -1:]])


def _windows(tokens: np.ndarray, starts: np.ndarray, window: int) -> tuple[mx.array, mx.array]:
    idx = np.asarray(starts)[:, None] + np.arange(window + 1)[None, :]
    return mx.array(tokens[idx[:, :-1]].astype(np.int32)), mx.array(tokens[idx[:, 1:]].astype(np.int32))


def score_plan(model: GPT, tokens: np.ndarray, plan: np.ndarray, window: int, batch_windows: int, *,
               score_fn: Callable[[GPT, mx.array, mx.array], mx.array] = token_nll,
               out: np.ndarray | None = None) -> float:
    """Summed NLL of the targets a plan scores (train_gpt.score_plan); `out[j]` receives target j's NLL."""
    offset, nll = np.arange(window)[None, :], 0.0
    for b in range(0, len(plan), batch_windows):
        rows = plan[b : b + batch_windows]
        x, y = _windows(tokens, rows[:, 0], window)
        losses = np.array(score_fn(model, x, y).astype(mx.float32)).reshape(len(rows), window).astype(np.float64)
        keep = (offset >= (rows[:, 1:2] - rows[:, :1])) & (offset < (rows[:, 2:3] - rows[:, :1]))
        nll += float(losses[keep].sum())
        if out is not None:
            out[(rows[:, :1] + offset)[keep]] = losses[keep]
    return nll


def eval_sliding(cfg, model: GPT, ev: EvalSet) -> tuple[float, float]:
    """(val_loss, val_bpb) with sliding windows advancing eval_stride targets (train_gpt.eval_sliding's plan)."""
    tokens = _stream(ev)
    window, n = ev.seq_len, tokens.size - 1
    plan = sliding_window_plan(n, window, cfg.eval_stride or window)
    return bits_per_byte(score_plan(model, tokens, plan, window, max(1, cfg.val_batch_size // window)), n,
                         ev.total_bytes)


class LoRALinear(nn.Module):
    """A block's attention q or v projection plus a rank-r adapter (train_gpt.LoRAAdapters' forward hook): the
    base weight frozen, A given (drawn as torch draws it), B zero."""

    def __init__(self, base: CastedLinear, a: mx.array):
        super().__init__()
        self.weight, self.lora_a = base.weight, a
        self.lora_b = mx.zeros((base.weight.shape[0], a.shape[0]), dtype=mx.float32)
        self.freeze(keys=["weight"])

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.weight.T + (x @ self.lora_a.T) @ self.lora_b.T


def add_lora(model: GPT, rank: int, seed: int) -> None:
    """Freeze `model` and wrap each block's c_q and c_v in a LoRALinear; A as train_gpt.LoRAAdapters draws it
    (one torch generator, seeded by name, a randn(rank, in) per adapter in block order, over sqrt(in))."""
    model.freeze()
    targets = [(block.attn, name) for block in model.blocks for name in ("c_q", "c_v")]
    sizes = [rank * getattr(attn, name).weight.shape[1] for attn, name in targets]
    for (attn, name), a in zip(targets, torch_normal_draws(_param_seed(seed, "ttt_lora"), sizes), strict=True):
        base = getattr(attn, name)
        fan_in = base.weight.shape[1]
        setattr(attn, name, LoRALinear(base, mx.array(a.reshape(rank, fan_in) / np.float32(math.sqrt(fan_in)))))


def eval_ttt(cfg, model: GPT, ev: EvalSet, *, score_fn: Callable[[GPT, mx.array, mx.array], mx.array] = token_nll,
             out: np.ndarray | None = None) -> tuple[float, float]:
    """(val_loss, val_bpb) of score-first test-time training (ttt = full | lora) on a copy of `model`:
    train_gpt.eval_ttt. Each chunk of ttt_chunk_tokens targets is scored first, then trained on with SGD
    (momentum 0.9, gradient norm clipped at 1); the last chunk is only scored."""
    tokens = _stream(ev)
    window, n = ev.seq_len, tokens.size - 1
    bounds = chunk_boundaries(n, cfg.ttt_chunk_tokens)
    chunks = split_plan(sliding_window_plan(n, window, cfg.eval_stride or window), bounds)
    edges = [0, *bounds.tolist(), n]
    adapted = GPT(cfg)
    adapted.update(model.parameters())  # arrays are immutable: adapting replaces them, `model` keeps its own
    adapted.looping = model.looping
    if cfg.ttt == "lora":
        add_lora(adapted, cfg.ttt_lora_rank, cfg.seed)
    loss_and_grad = nn.value_and_grad(adapted, lambda x, y: mx.mean(token_nll(adapted, x, y)))
    batch_windows, momentum, nll = max(1, cfg.val_batch_size // window), {}, 0.0
    for k, rows in enumerate(chunks):
        nll += score_plan(adapted, tokens, rows, window, batch_windows, score_fn=score_fn, out=out)
        lo, hi = edges[k], edges[k + 1]
        if k == len(chunks) - 1 or hi - lo < window:
            continue
        starts = train_windows(lo, hi, window)
        for _ in range(cfg.ttt_epochs):
            for b in range(0, len(starts), batch_windows):
                _, grads = loss_and_grad(*_windows(tokens, starts[b : b + batch_windows], window))
                grads = clip_grad_norm(dict(tree_flatten(grads)), 1.0)
                params = dict(tree_flatten(adapted.trainable_parameters()))
                for name, g in grads.items():  # torch.optim.SGD(momentum=0.9): buf = 0.9 buf + g; p -= lr buf
                    momentum[name] = g if name not in momentum else 0.9 * momentum[name] + g
                    params[name] = params[name] - cfg.ttt_lr * momentum[name]
                adapted.update(tree_unflatten(list(params.items())))
                mx.eval(adapted.parameters(), list(momentum.values()))
    return bits_per_byte(nll, n, ev.total_bytes)


# -----------------------------
# INT8 + ZLIB ROUND TRIP
# -----------------------------
# train_gpt.py's quantiser in numpy, bit for bit (torch.quantile's float32 rank and lerp, round-half-even,
# float16 scales), written in torch.save's zip layout by a small pickle writer, so torch.load reads the MLX
# artifact as its own and artifact sizes compare across backends. Byte order: little-endian only.

# >>> twin: export-format >>>
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain", "skip_weight",
    "skip_weights", "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "attn_gate_w", "smear_gate",
    "smear_lambda", "ve_layer_scales", "ve_shared.scale", "bigram.scale",
)
INT8_KEEP_FLOAT_FP32_NAME_PATTERNS = CONTROL_TENSOR_NAME_PATTERNS
INT8_KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_PERCENTILE = 99.99984
INT8_CLIP_Q = INT8_CLIP_PERCENTILE / 100.0
QUANT_FORMAT = "int8_clean_per_row_v1"
# Parameters that train but are not part of the artifact (the mtp auxiliary heads).
EXPORT_EXCLUDED_PREFIXES = ("mtp_heads.",)
# <<< twin: export-format <<<

_STORAGES = {np.dtype(np.int8): "CharStorage", np.dtype(np.float16): "HalfStorage",
             np.dtype(np.float32): "FloatStorage"}
_STORAGE_DTYPES = {name: dtype for dtype, name in _STORAGES.items()}


def _quantile_rows(values: np.ndarray, q: float) -> np.ndarray:
    """torch.quantile(values, q, dim=-1) (linear interpolation), computed in float32 as torch does."""
    s = np.sort(values, axis=-1)
    rank = np.float32(q) * np.float32(s.shape[-1] - 1)
    below, above = int(np.floor(rank)), int(np.ceil(rank))
    w = rank - np.float32(below)
    lo, hi = s[..., below], s[..., above]
    return lo + w * (hi - lo) if w < 0.5 else hi - (hi - lo) * (np.float32(1.0) - w)


def _quantize_float(t32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if t32.ndim == 2:
        clip = _quantile_rows(np.abs(t32), INT8_CLIP_Q) if t32.size else np.empty(t32.shape[0], np.float32)
        clipped = np.maximum(np.minimum(t32, clip[:, None]), -clip[:, None])
        scale = np.maximum(clip / np.float32(127.0), np.float32(1.0 / 127.0))
        q = np.clip(np.rint(clipped / scale[:, None]), -127, 127).astype(np.int8)
        return q, scale.astype(np.float16)
    clip_abs = float(_quantile_rows(np.abs(t32).reshape(-1), INT8_CLIP_Q)) if t32.size else 0.0
    scale = np.float32(clip_abs / 127.0 if clip_abs > 0 else 1.0)
    q = np.clip(np.rint(np.clip(t32, np.float32(-clip_abs), np.float32(clip_abs)) / scale), -127, 127)
    return q.astype(np.int8), np.array(scale, dtype=np.float32)


def quantize_state_dict_int8(state: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, int]]:
    """train_gpt.quantize_state_dict_int8 on fp32 numpy arrays (the MLX model's dtype)."""
    quantized, scales, dtypes, passthrough, orig_dtypes, qmeta = {}, {}, {}, {}, {}, {}
    stats = dict.fromkeys(("param_count", "num_tensors", "baseline_tensor_bytes", "int8_payload_bytes"), 0)
    for name, array in state.items():
        t = np.ascontiguousarray(array, dtype=np.float32)
        stats["param_count"] += int(t.size)
        stats["num_tensors"] += 1
        stats["baseline_tensor_bytes"] += int(t.nbytes)
        if t.size <= INT8_KEEP_FLOAT_MAX_NUMEL:
            if any(p in name for p in INT8_KEEP_FLOAT_FP32_NAME_PATTERNS):
                passthrough[name] = t
            else:
                orig_dtypes[name] = "float32"
                passthrough[name] = t.astype(np.float16)
            stats["int8_payload_bytes"] += int(passthrough[name].nbytes)
            continue
        q, s = _quantize_float(t)
        if s.ndim > 0:
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        quantized[name], scales[name], dtypes[name] = q, s, "float32"
        stats["int8_payload_bytes"] += int(q.nbytes + s.nbytes)
    obj: dict[str, Any] = {"__quant_format__": QUANT_FORMAT, "quantized": quantized, "scales": scales,
                           "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    return obj, stats


def dequantize_state_dict_int8(obj: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, q in obj["quantized"].items():
        s = obj["scales"][name]
        view = s.astype(np.float32).reshape(q.shape[0], *([1] * (q.ndim - 1))) if s.ndim > 0 else np.float32(s)
        out[name] = np.ascontiguousarray(q.astype(np.float32) * view, dtype=np.float32)
    for name, t in obj["passthrough"].items():
        out[name] = np.asarray(t, dtype=np.float32)  # fp16 passthroughs were float32 originally
    return out


def torch_save_bytes(obj: Any) -> bytes:
    """torch.save's zip layout for dicts/str/int/bool/tuples and numpy arrays (as CPU tensors), without torch."""
    storages: list[np.ndarray] = []
    out = [b"\x80\x02"]  # pickle protocol 2

    def emit(o: Any) -> None:
        if isinstance(o, dict):
            out.append(b"}")
            for k, v in o.items():
                emit(k)
                emit(v)
                out.append(b"s")
        elif isinstance(o, str):
            raw = o.encode("utf-8")
            out.append(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(o, bool):
            out.append(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.append(b"J" + struct.pack("<i", o))
        elif isinstance(o, tuple):
            out.append(b"(")
            for v in o:
                emit(v)
            out.append(b"t")
        elif isinstance(o, np.ndarray):  # _rebuild_tensor_v2((storage id), offset, size, stride, False, {})
            a = o if o.flags.c_contiguous else o.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
            storages.append(a)
            out.append(b"ctorch._utils\n_rebuild_tensor_v2\n((")
            emit("storage")
            out.append(f"ctorch\n{_STORAGES[a.dtype]}\n".encode())
            for v in (str(len(storages) - 1), "cpu", int(a.size)):
                emit(v)
            out.append(b"tQ")
            for v in (0, tuple(int(d) for d in a.shape), tuple(s // a.itemsize for s in a.strides), False):
                emit(v)
            out.append(b"ccollections\nOrderedDict\n)RtR")
        else:
            raise TypeError(f"torch_save_bytes: cannot store {type(o).__name__}")

    emit(obj)
    out.append(b".")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [("data.pkl", b"".join(out)), ("byteorder", b"little")] + \
                [(f"data/{i}", a.astype(a.dtype.newbyteorder("<")).tobytes()) for i, a in enumerate(storages)] + \
                [("version", b"3\n")]:
            info = zipfile.ZipInfo(f"archive/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, data)
    return buf.getvalue()


def torch_load_bytes(blob: bytes) -> Any:
    """Read what torch_save_bytes (or torch.save, for these types) wrote; tensors come back as numpy arrays."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        prefix = next(n for n in names if n.endswith("data.pkl"))[: -len("data.pkl")]

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return lambda storage, offset, size, stride, *_: np.lib.stride_tricks.as_strided(
                        storage[offset:], size, tuple(s * storage.itemsize for s in stride)).copy()
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                if (module, name) == ("collections", "OrderedDict"):
                    return OrderedDict
                raise pickle.UnpicklingError(f"artifact references {module}.{name}, which is not a tensor")

            def persistent_load(self, pid: Any) -> np.ndarray:
                _, kind, key, _, numel = pid
                raw = zf.read(f"{prefix}data/{key}")
                return np.frombuffer(raw, dtype=_STORAGE_DTYPES[kind].newbyteorder("<"))[:numel]

        return Unpickler(io.BytesIO(zf.read(f"{prefix}data.pkl"))).load()


def export_params(params: dict[str, mx.array]) -> dict[str, np.ndarray]:
    """The artifact's tensors: the model's parameters minus training-only heads, as fp32 numpy."""
    return {k: np.array(v, dtype=np.float32) for k, v in params.items() if not k.startswith(EXPORT_EXCLUDED_PREFIXES)}


def serialize_int8_zlib(state: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, int]]:
    obj, stats = quantize_state_dict_int8(state)
    raw = torch_save_bytes(obj)
    stats["raw_torch_bytes"] = len(raw)
    return zlib.compress(raw, level=9), stats


def deserialize_int8_zlib(blob: bytes) -> dict[str, np.ndarray]:
    return dequantize_state_dict_int8(torch_load_bytes(zlib.decompress(blob)))


def int8_zlib_roundtrip(params: dict[str, mx.array]) -> tuple[bytes, dict[str, int], dict[str, mx.array]]:
    """Quantise + compress the exportable params; return (blob, stats, dequantised params)."""
    blob, stats = serialize_int8_zlib(export_params(params))
    restored = {k: mx.array(v) for k, v in deserialize_int8_zlib(blob).items()}
    return blob, stats, restored


def export_roundtrip(params: dict[str, mx.array], spec) -> tuple[bytes, dict[str, int], dict[str, mx.array]]:
    """As int8_zlib_roundtrip, in the format `spec` (a train_gpt.ExportSpec) names: upstream's for the defaults,
    else the shared numpy export (train_gpt.pack_artifact)."""
    if spec.is_upstream_int8:
        return int8_zlib_roundtrip(params)
    arrays = export_params(params)  # fp32 numpy already
    blob, stats = pack_artifact(arrays, spec)
    return blob, stats, {k: mx.array(v) for k, v in unpack_artifact(blob, spec.compressor).items()}


# -----------------------------
# TRAINING
# -----------------------------

# >>> twin: lr-schedule >>>
def make_training_frac(cfg: Hyperparameters) -> Callable[[int, float], float]:
    """Fraction of training done before `step`: step/iterations, or elapsed time over the wallclock cap."""
    max_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else None

    def frac(step: int, elapsed_ms: float) -> float:
        if max_ms is None:
            return step / max(cfg.iterations, 1)
        return min(elapsed_ms / max_ms, 1.0)

    return frac


def make_lr_schedule(cfg: Hyperparameters) -> Callable[[int, float], float]:
    """lr multiplier: linear warmdown to 0 over the last warmdown_iters steps, or, with a wallclock cap, over the
    last warmdown_iters x (average step time) before the cap. With warmdown_frac > 0 the warmdown spans that last
    fraction of training instead (records). Inside the warmdown the multiplier never drops below min_lr."""
    max_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else None
    training_frac = make_training_frac(cfg)

    def lr_mul(step: int, elapsed_ms: float) -> float:
        if cfg.warmdown_frac > 0:
            frac = training_frac(step, elapsed_ms)
            if frac >= 1.0 - cfg.warmdown_frac:
                return max((1.0 - frac) / cfg.warmdown_frac, cfg.min_lr)
            return 1.0
        if cfg.warmdown_iters <= 0:
            return 1.0
        if max_ms is None:
            start = max(cfg.iterations - cfg.warmdown_iters, 0)
            if start <= step < cfg.iterations:
                return max((cfg.iterations - step) / max(cfg.warmdown_iters, 1), cfg.min_lr)
            return 1.0
        warmdown_ms = cfg.warmdown_iters * elapsed_ms / max(step, 1)
        remaining_ms = max(max_ms - elapsed_ms, 0.0)
        return max(remaining_ms / max(warmdown_ms, 1e-9), cfg.min_lr) if remaining_ms <= warmdown_ms else 1.0

    return lr_mul
# <<< twin: lr-schedule <<<


# >>> twin: horizons >>>
def horizon_branches(cfg: Hyperparameters) -> list[tuple[int, int]]:
    """(H, branch step) for each horizon H < iterations of a branched-cooldown run (cfg.horizons). The branch step
    is the first step at which a separate H-step run's lr multiplier differs from this run's: before it the two
    runs are the same computation (same steps, same data), from it the branch runs H's own warmdown, under the
    same warmdown rule (warmdown_iters, or warmdown_frac of H) and min_lr."""
    trunk = make_lr_schedule(cfg)
    out = []
    for h in cfg.horizon_steps[:-1]:
        own = make_lr_schedule(cfg.with_overrides(iterations=h, horizons=""))
        out.append((h, next((s for s in range(h) if own(s, 0.0) != trunk(s, 0.0)), h)))
    return out


HORIZON_FIELDS = ("val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "sliding_val_loss",
                  "sliding_val_bpb", "ttt_val_loss", "ttt_val_bpb", "artifact_bytes", "within_budget", "eval_s")


def horizon_entry(h: int, branch_step: int, fields: Mapping[str, Any], train_s: float, status: str = "ok",
                  error: str | None = None) -> dict[str, Any]:
    """One RunResult.horizon_metrics value: the scored fields of horizon h's final stage, where it branched, and
    the training seconds a run of h steps cost inside the branched run (trunk up to the branch + the branch)."""
    return {"steps": h, "branch_step": branch_step, "train_s": train_s, "status": status, "error": error,
            **{k: fields[k] for k in HORIZON_FIELDS if k in fields}}
# <<< twin: horizons <<<


def microbatches(x: mx.array, y: mx.array, max_tokens: int) -> list[tuple[mx.array, mx.array]]:
    """Split a (rows, seq_len) batch into consecutive chunks of at most max_tokens tokens (whole rows), as
    upstream's MLX trainer does, so a large batch never goes through one value_and_grad."""
    rows = max(1, max_tokens // x.shape[1])
    return [(x[i : i + rows], y[i : i + rows]) for i in range(0, x.shape[0], rows)]


class _Stepper:
    """One optimisation step: loss + grads (optionally mx.compile'd) accumulated over micro-batches of at most
    cfg.mlx_max_microbatch_tokens tokens (weighted by their share of the batch), clip, schedule, update."""

    def __init__(self, cfg, model: GPT, opts: Optimizers, *, compiled: bool, qat: QatSwitch | None = None):
        self.cfg, self.model, self.opts = cfg, model, opts
        self._loss_and_grad = nn.value_and_grad(model, lambda x, y: model(x, y))
        if compiled:
            state = [model.state] + ([qat.state] if qat is not None else [])
            self._loss_and_grad = mx.compile(self._loss_and_grad, inputs=state, outputs=state)

    def __call__(self, x: mx.array, y: mx.array, lr_scale: float, momentum: float) -> mx.array:
        chunks = microbatches(x, y, self.cfg.mlx_max_microbatch_tokens)
        if len(chunks) == 1:
            loss, grads = self._loss_and_grad(x, y)
            grads = dict(tree_flatten(grads))
        else:
            loss, grads = mx.array(0.0, dtype=mx.float32), {}
            for cx, cy in chunks:
                weight = cx.shape[0] / x.shape[0]
                c_loss, c_grads = self._loss_and_grad(cx, cy)
                loss = loss + weight * c_loss
                for name, g in tree_flatten(c_grads):
                    grads[name] = grads[name] + weight * g if name in grads else weight * g
                mx.eval(loss, list(grads.values()))
        if self.cfg.grad_clip_norm > 0:
            grads = clip_grad_norm(grads, self.cfg.grad_clip_norm)
        self.opts.set_schedule(lr_scale, momentum)
        params = self.opts.step(flat_params(self.model), grads)
        load_flat_params(self.model, params, strict=False)
        mx.eval(loss, self.model.parameters(), self.opts.state_arrays())
        return loss


def train(
    config, seed: int | None = None, *, log=None, data=None, out_dir: str | Path | None = None,
    compiled: bool = False, on_step=None,
) -> RunResult:
    """Train one model with MLX and evaluate it (full val split, then the int8+zlib round trip).

    Same contract as train_gpt.train: ``seed`` (default config.seed) fixes the name-keyed initialisation (see
    init_params) and, with data_order="seeded", the data order (TokenStream, so both backends see the same
    batches). ``config`` is a Hyperparameters, train_gpt's (converted by field), or a mapping of overrides
    optionally naming its "preset". ``data`` is a TrainData (or train_gpt's) to reuse. A non-finite train loss
    stops the run with status "diverged"; other errors propagate. ``compiled=True`` wraps the loss+grad step in mx.compile; it is
    off by default whatever config.compile says (that knob is torch.compile on CUDA), because on a Linux CPU it
    was measured slower here (tiny preset: 47 vs 616 tokens/s).
    """
    t_start = time.perf_counter()
    log = log or (lambda msg: None)
    if isinstance(config, Mapping):  # a mapping of overrides, optionally naming its "preset"
        overrides = dict(config)
        config = preset_config(str(overrides.pop("preset", "baseline")), **overrides)
    elif not isinstance(config, Hyperparameters):  # train_gpt.Hyperparameters: the same fields (twin section)
        config = Hyperparameters(**config.to_dict())
    cfg = config
    cfg = cfg if seed is None else cfg.with_overrides(seed=seed)
    seed = cfg.seed
    if data is None:
        cfg = resolve_data_paths(cfg)
        data = load_train_data(cfg)
    else:
        cfg = cfg.with_overrides(data_path=data.data_path, tokenizer_path=data.tokenizer_path)
    if data.vocab_size != cfg.vocab_size:
        raise ConfigValueError(f"VOCAB_SIZE={cfg.vocab_size} does not match the loaded data's {data.vocab_size}")
    compiled = bool(compiled)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed % 2**32)
    ev = EvalSet(data.val_tokens, data.luts, cfg.train_seq_len)
    log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={cfg.tokenizer_path}")
    log(f"train_loader:dataset:{Path(cfg.data_path).name} train_shards:{len(data.train_shards)}")
    log(f"val_loader:shards pattern={cfg.val_files} tokens:{ev.y.size}")

    model = GPT(cfg)
    init = init_params(cfg, seed)
    load_flat_params(model, init)
    opts = Optimizers(cfg, init)
    spec = ExportSpec.from_config(cfg)
    qat = configure_qat(model, spec, cfg.qat)
    qat_step = math.ceil(cfg.qat_start_frac * cfg.iterations)  # or, with a wallclock cap, this share of it
    qat_ms = cfg.qat_start_frac * 1000.0 * cfg.max_wallclock_seconds
    stepper = _Stepper(cfg, model, opts, compiled=compiled, qat=qat)
    log(f"model_params:{sum(int(v.size) for v in init.values())}")
    log(f"backend:mlx device:{mx.default_device()} compiled:{compiled}")
    log(f"tie_embeddings:{cfg.tie_embeddings} matrix_lr:{cfg.matrix_lr} scalar_lr:{cfg.scalar_lr}")
    log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
        f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
        f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
    log(f"activation:{cfg.activation} loss:{cfg.loss} rope_partial_dims:{cfg.rope_partial_dims} "
        f"ln_scale:{cfg.ln_scale} xsa_last_n:{cfg.xsa_last_n} ema_decay:{cfg.ema_decay} data_order:{cfg.data_order}")
    log(f"seed:{seed} config_hash:{config_hash(cfg)}")

    def new_loader():
        return TokenStream(data.train_shards, order=cfg.data_order, seed=seed if cfg.data_seed < 0 else cfg.data_seed)

    def next_batch(loader) -> tuple[mx.array, mx.array]:
        x, y = loader.next_arrays(cfg.train_batch_tokens, cfg.train_seq_len, 1)
        return mx.array(x.astype(np.int32)), mx.array(y.astype(np.int32))

    loader = new_loader()
    lr_mul = make_lr_schedule(cfg)
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

    training_frac = make_training_frac(cfg)
    ema = swa = None
    swa_count = 0
    step_losses: list[float] = []
    val_history: list[dict[str, float]] = []
    status, error = "ok", None
    training_ms, stop_after, step = 0.0, None, 0

    def train_step(step: int, scale: float) -> float:
        """One optimisation step at lr multiplier `scale` (then the EMA / SWA updates); returns the train loss."""
        nonlocal ema, swa, swa_count
        frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
        momentum = (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
        loss = stepper(*next_batch(loader), scale, momentum)
        if ema is not None:
            d = cfg.ema_decay
            ema = {k: d * ema[k] + (1.0 - d) * v for k, v in flat_params(model).items()}
            mx.eval(list(ema.values()))
        if cfg.swa_every > 0 and scale < cfg.swa_start_scale and (step + 1) % cfg.swa_every == 0:
            live = flat_params(model)
            swa = live if swa is None else {k: swa[k] + v for k, v in live.items()}
            swa_count += 1
            mx.eval(list(swa.values()))
        return float(loss.item())

    def finish(step: int, training_ms: float, out_dir: str | Path | None) -> dict:
        """The final stage (train_gpt.train's finish): averaging, evaluation, export round trip, later stages."""
        if qat is not None:  # every evaluation sees the float (or round-tripped) weights as they are
            qat.set(False)
        if ema is not None:
            load_flat_params(model, ema)
            log(f"ema:applied decay:{cfg.ema_decay} start_frac:{cfg.ema_start_frac}")
        if swa is not None:
            load_flat_params(model, {k: v / swa_count for k, v in swa.items()})
            log(f"swa:applied checkpoints:{swa_count}")
        if cfg.num_loops > 0:
            model.looping = True  # evaluation runs the looped depth (train_gpt.train)
        eval_s: dict[str, float] = {}
        t_e = time.perf_counter()
        val_loss, val_bpb = eval_val(cfg, model, ev)
        eval_s["pre_quant"] = time.perf_counter() - t_e
        log(f"step:{step}/{cfg.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
            f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
        code_bytes = len(Path(__file__).read_bytes())
        final = flat_params(model)
        fmt = "int8+zlib" if spec.is_upstream_int8 else spec.label()
        blob, qstats, restored = export_roundtrip(final, spec)
        budget = BudgetCheck(len(blob), code_bytes)
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "final_model_mlx.pt").write_bytes(torch_save_bytes(export_params(final)))
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
        t_q = time.perf_counter()
        q_loss, q_bpb = eval_val(cfg, model, ev)
        eval_s["post_quant"] = time.perf_counter() - t_q
        tag = "int8_zlib" if spec.is_upstream_int8 else "export"
        log(f"final_{tag}_roundtrip val_loss:{q_loss:.4f} val_bpb:{q_bpb:.4f} "
            f"eval_time:{1000.0 * eval_s['post_quant']:.0f}ms")
        log(f"final_{tag}_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")
        stages: dict[str, float] = {}
        for stage, run_eval in (("sliding", eval_sliding), ("ttt", eval_ttt)):
            if not cfg.stage_enabled(stage):
                continue
            t_s = time.perf_counter()
            stages[f"{stage}_val_loss"], stages[f"{stage}_val_bpb"] = run_eval(cfg, model, ev)
            eval_s[stage] = time.perf_counter() - t_s
            log(f"final_{stage} val_loss:{stages[f'{stage}_val_loss']:.8f} val_bpb:{stages[f'{stage}_val_bpb']:.8f} "
                f"eval_time:{1000.0 * eval_s[stage]:.0f}ms")
        return dict(val_loss=val_loss, val_bpb=val_bpb, post_quant_val_loss=q_loss, post_quant_val_bpb=q_bpb, **stages,
                    artifact_bytes=budget.artifact_bytes, model_bytes=budget.model_bytes, code_bytes=code_bytes,
                    within_budget=budget.within_budget, export_format=fmt, eval_s=eval_s)

    def run_branch(h: int, branch_step: int, trunk_ms: float) -> dict:
        """Horizon h's cooldown from the trunk at branch_step and its final stage; the trunk is then restored
        (arrays are immutable, so the snapshot holds references; each optimizer's state dicts are copied)."""
        nonlocal ema, swa, swa_count
        saved = (flat_params(model), [{k: dict(v) if isinstance(v, dict) else v for k, v in vars(o).items()}
                                      for o in opts.all], ema, swa, swa_count, loader.get_state(), model.looping)
        own_lr = make_lr_schedule(cfg.with_overrides(iterations=h, horizons=""))
        t_b, b_status, b_error = time.perf_counter(), "ok", None
        for s in range(branch_step, h):
            loss_value = train_step(s, own_lr(s, 0.0))
            if not math.isfinite(loss_value):
                b_status, b_error = "diverged", f"train loss became {loss_value} at step {s + 1} (horizon {h})"
                break
        train_s = trunk_ms / 1000.0 + time.perf_counter() - t_b
        fields = finish(h, 1000.0 * train_s, None) if b_status == "ok" else {}
        log(f"horizon:{h} branch_step:{branch_step} status:{b_status} "
            + " ".join(f"{k}:{fields[k]:.8f}" for k in ("val_bpb", "post_quant_val_bpb") if k in fields))
        load_flat_params(model, saved[0])
        for o, state in zip(opts.all, saved[1], strict=True):
            o.__dict__.update({k: dict(v) if isinstance(v, dict) else v for k, v in state.items()})
        ema, swa, swa_count = saved[2], saved[3], saved[4]
        loader.set_state(saved[5])
        model.looping = saved[6]
        return horizon_entry(h, branch_step, fields, train_s, b_status, b_error)

    branches = horizon_branches(cfg) if cfg.horizons else []
    horizon_metrics: dict[str, dict] = {}
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
        elapsed_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        scale, frac_done = lr_mul(step, elapsed_ms), training_frac(step, elapsed_ms)
        if cfg.num_loops > 0 and not model.looping and frac_done >= cfg.loop_start_frac:
            model.looping = True
            log(f"layer_loop:enabled step:{step} frac:{frac_done:.3f}")
        if cfg.ema_decay > 0 and ema is None and frac_done >= cfg.ema_start_frac:
            ema = flat_params(model)
        if qat is not None and not qat.on and (step >= qat_step or (max_ms is not None and elapsed_ms >= qat_ms)):
            qat.set(True)
            log(f"qat:enabled step:{step} layers:{qat.layers} format:{spec.label()}")
        while branches and branches[0][1] == step:  # branched cooldowns: the clock stops while a branch runs
            training_ms += 1000.0 * (time.perf_counter() - t0)
            h, b = branches.pop(0)
            horizon_metrics[str(h)] = run_branch(h, b, training_ms)
            t0 = time.perf_counter()
        loss_value = train_step(step, scale)
        step += 1
        step_losses.append(loss_value)
        if on_step is not None:  # progress for a caller's bar: (steps done, planned steps)
            on_step(step, cfg.iterations)
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

    base = dict(config=cfg.to_dict(), config_hash=config_hash(cfg), seed=seed, backend="mlx",
                versions=library_versions(), step_losses=step_losses, steps=step,
                tokens_per_s=step * cfg.train_batch_tokens / max(training_ms / 1000.0, 1e-9))
    if status != "ok":
        return RunResult(**base, val_history=val_history, wall_s=time.perf_counter() - t_start, status=status,
                         error=error, horizon_metrics=horizon_metrics)
    fields = finish(step, training_ms, out_dir)
    val_history.append({"step": step, "val_loss": fields["val_loss"], "val_bpb": fields["val_bpb"]})
    if cfg.horizons:
        horizon_metrics[str(step)] = horizon_entry(step, step, fields, training_ms / 1000.0)
    return RunResult(**base, val_history=val_history, **fields, wall_s=time.perf_counter() - t_start, status="ok",
                     error=None, horizon_metrics=horizon_metrics)


def main(argv: list[str] | None = None) -> int:
    """Script entry: config from env (PRESET, then UPPER-case fields), logs in logs/<run_id>.txt."""
    cfg = Hyperparameters.from_env()
    if not cfg.run_id:
        cfg = cfg.with_overrides(run_id=str(uuid.uuid4()))
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
