"""
The Parameter Golf baseline trainer (torch), extended with the knobs the causal screening pipeline needs.

Runs as a script (single CPU process in fp32, or `torchrun` DDP on CUDA with bf16 autocast) and imports with
no side effects: it exposes the config dataclass, the model, the optimizers and `train(config, seed) -> RunResult`.
It reads top to bottom in sections like upstream's, stays self-contained (stdlib, numpy, torch; sentencepiece
when data is loaded) and at most 3,000 lines; its bytes count in the artifact size, as in the challenge.
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
import platform
import random
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# -----------------------------
# DATA FORMAT (FineWeb shards)
# -----------------------------
# A shard is 256 little-endian int32 header words (magic 20240520, version 1, token count, rest zero),
# followed by `token count` little-endian uint16 tokens.
# Code between `# >>> twin: NAME >>>` banners is framework-free and copied verbatim into train_gpt_mlx.py
# (tests/causal/test_standalone_trainers.py compares the copies): change both files together.

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
# Default Simple Baseline run (upstream): 9 blocks at width 512, 8 heads / 4 KV heads (GQA), relu^2 MLP x2,
# vocab 1024, seq len 1024, tied embeddings, 524,288 train tokens per step, 20,000 iterations, 10 minute cap.
# Each field is read from the upper-case env var of the same name. The screening knobs after grad_clip_norm
# default to the baseline's behaviour.

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


# -----------------------------
# MUON OPTIMIZER
# -----------------------------
# Muon (from modded-nanogpt): momentum, then an approximate orthogonalisation of each matrix update by a
# quintic Newton-Schulz iteration. It runs in bf16 on CUDA (as upstream) and in fp32 on CPU.

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


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 10, eps: float = 1e-7,
                                coeffs: tuple[tuple[float, float, float], ...] | None = None) -> Tensor:
    X = G.bfloat16() if G.is_cuda else G.float()
    X = X / (X.norm() + eps)
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    for a, b, c in coeffs or (NS_COEFFS,) * steps:
        gram = X @ X.T
        poly = b * gram + c * gram @ gram
        X = a * X + poly @ X
    return X.T if transposed else X


_newton_schulz: Callable[..., Tensor] = zeropower_via_newtonschulz5


class Muon(torch.optim.Optimizer):
    """Muon; optional decoupled weight decay, MuonEq-R row normalisation and Newton-Schulz coefficients."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True, *,
                 weight_decay: float = 0.0, row_normalize: bool = False, ns: str = "default"):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      weight_decay=weight_decay, row_normalize=row_normalize, ns=ns))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            coeffs = ns_coefficients(group["ns"], group["backend_steps"])
            total = sum(int(p.numel()) for p in params)
            flat_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            updates = torch.zeros(total, device=params[0].device, dtype=flat_dtype)
            offset = 0
            for i, p in enumerate(params):
                if i % world_size == rank and p.grad is not None:
                    g = p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=group["momentum"])
                    if group["row_normalize"]:
                        g = g / g.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(g.dtype)
                    g = _newton_schulz(g, steps=group["backend_steps"], coeffs=coeffs)
                    g = g * max(1, g.size(0) / g.size(1)) ** 0.5
                    updates[offset : offset + p.numel()] = g.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(updates, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                if group["weight_decay"] > 0:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(updates[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return loss


# -----------------------------
# TOKENIZER-AGNOSTIC EVALUATION
# -----------------------------
# val_loss is token cross-entropy (nats); val_bpb = bits per token x tokens per byte over the FULL val split,
# with bytes counted from the SentencePiece pieces (build_sentencepiece_luts above).


@dataclass
class EvalContext:
    val_tokens: Tensor  # int64 on device, trimmed to a multiple of seq_len plus one
    base_bytes: Tensor
    has_leading_space: Tensor
    is_boundary: Tensor


def make_eval_context(val_tokens: np.ndarray, luts, device: torch.device) -> EvalContext:
    base_bytes, has_leading_space, is_boundary = luts
    return EvalContext(
        val_tokens=torch.from_numpy(np.asarray(val_tokens, dtype=np.int64)).to(device),
        base_bytes=torch.as_tensor(base_bytes, dtype=torch.int16, device=device),
        has_leading_space=torch.as_tensor(has_leading_space, dtype=torch.bool, device=device),
        is_boundary=torch.as_tensor(is_boundary, dtype=torch.bool, device=device),
    )


def eval_val(
    args: Hyperparameters, model: nn.Module, ctx: EvalContext, *, rank: int = 0, world_size: int = 1,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """(val_loss, val_bpb) over the full validation split, batched by val_batch_size tokens per rank."""
    seq_len = args.train_seq_len
    device = ctx.val_tokens.device if device is None else device
    local_batch_seqs = max(1, args.val_batch_size // (world_size * seq_len))
    total_seqs = (ctx.val_tokens.numel() - 1) // seq_len
    seq_start, seq_end = (total_seqs * rank) // world_size, (total_seqs * (rank + 1)) // world_size
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    token_count = torch.zeros((), device=device, dtype=torch.float64)
    byte_count = torch.zeros((), device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(seq_start, seq_end, local_batch_seqs):
            end = min(start + local_batch_seqs, seq_end)
            local = ctx.val_tokens[start * seq_len : end * seq_len + 1]
            x = local[:-1].reshape(-1, seq_len)
            y = local[1:].reshape(-1, seq_len)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                batch_loss = model(x, y).detach()
            n = float(y.numel())
            loss_sum += batch_loss.to(torch.float64) * n
            token_count += n
            prev, tgt = x.reshape(-1), y.reshape(-1)
            nbytes = ctx.base_bytes[tgt].to(torch.int16)
            nbytes += (ctx.has_leading_space[tgt] & ~ctx.is_boundary[prev]).to(torch.int16)
            byte_count += nbytes.to(torch.float64).sum()
    if dist.is_available() and dist.is_initialized():
        for t in (loss_sum, token_count, byte_count):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    model.train(was_training)
    val_loss = (loss_sum / token_count).item()
    return float(val_loss), float(val_loss / math.log(2.0) * token_count.item() / byte_count.item())


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



# -----------------------------
# SLIDING-WINDOW AND SCORE-FIRST TTT EVALUATION
# -----------------------------
# Both run on the round-tripped (exported) model, score each val target once with the plans above and divide by
# the byte count of the whole stream, as eval_val does. TTT adapts a copy of the model: per chunk of
# ttt_chunk_tokens targets it first scores the chunk (no gradient), then trains on it; the last chunk is only
# scored. A target's score therefore depends only on the tokens before it.


def token_nll(model: GPT, x: Tensor, y: Tensor) -> Tensor:
    """Per-target cross-entropy in nats, shaped like y (the eval-mode loss before its mean)."""
    h = model.final_norm(model.hidden(x))
    logits = model._logits(h).float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none").view(y.shape)


def stream_bytes(ctx: EvalContext) -> int:
    """UTF-8 bytes of every target of the val stream (the denominator of every evaluation mode)."""
    prev, tgt = ctx.val_tokens[:-1], ctx.val_tokens[1:]
    nbytes = ctx.base_bytes[tgt].to(torch.int64) + (ctx.has_leading_space[tgt] & ~ctx.is_boundary[prev]).to(torch.int64)
    return int(nbytes.sum().item())


def _windows(tokens: Tensor, starts: np.ndarray, window: int) -> tuple[Tensor, Tensor]:
    idx = torch.as_tensor(starts, device=tokens.device)[:, None] + torch.arange(window + 1, device=tokens.device)
    seqs = tokens[idx]
    return seqs[:, :-1], seqs[:, 1:]


def score_plan(model: GPT, tokens: Tensor, plan: np.ndarray, window: int, batch_windows: int, *,
               score_fn: Callable[[GPT, Tensor, Tensor], Tensor] = token_nll, out: Tensor | None = None) -> float:
    """Summed NLL of the targets a plan scores (see sliding_window_plan); `out[j]` receives target j's NLL."""
    total = torch.zeros((), dtype=torch.float64, device=tokens.device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=tokens.device.type == "cuda")
    with torch.no_grad(), autocast:
        for b in range(0, len(plan), batch_windows):
            rows = plan[b : b + batch_windows]
            x, y = _windows(tokens, rows[:, 0], window)
            nll = score_fn(model, x, y)
            offset = torch.arange(window, device=tokens.device)[None, :]
            lo = torch.as_tensor(rows[:, 1] - rows[:, 0], device=tokens.device)[:, None]
            hi = torch.as_tensor(rows[:, 2] - rows[:, 0], device=tokens.device)[:, None]
            keep = (offset >= lo) & (offset < hi)
            total += nll.double()[keep].sum()
            if out is not None:
                pos = torch.as_tensor(rows[:, 0], device=tokens.device)[:, None] + offset
                out[pos[keep]] = nll.detach()[keep].to(out.dtype)
    return float(total.item())


def eval_sliding(args: Hyperparameters, model: GPT, ctx: EvalContext, *, rank: int = 0,
                 world_size: int = 1) -> tuple[float, float]:
    """(val_loss, val_bpb) with sliding windows of train_seq_len advancing eval_stride targets."""
    window, n = args.train_seq_len, ctx.val_tokens.numel() - 1
    plan = np.array_split(sliding_window_plan(n, window, args.eval_stride or window), world_size)[rank]
    was_training = model.training
    model.eval()
    nll = torch.tensor(score_plan(model, ctx.val_tokens, plan, window, max(1, args.val_batch_size // window)),
                       dtype=torch.float64, device=ctx.val_tokens.device)
    model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(nll, op=dist.ReduceOp.SUM)
    return bits_per_byte(float(nll.item()), n, stream_bytes(ctx))


class LoRAAdapters(nn.Module):
    """Rank-r adapters added by forward hooks to each block's attention q and v projections (B starts at 0)."""

    def __init__(self, model: GPT, rank: int, seed: int):
        super().__init__()
        gen = torch.Generator(device="cpu").manual_seed(_param_seed(seed, "ttt_lora"))
        self.a, self.b, self.hooks = nn.ParameterList(), nn.ParameterList(), []
        for block in model.blocks:
            for lin in (block.attn.c_q, block.attn.c_v):
                a = torch.randn(rank, lin.in_features, generator=gen) / math.sqrt(lin.in_features)
                self.a.append(nn.Parameter(a.to(lin.weight.device)))
                self.b.append(nn.Parameter(torch.zeros(lin.out_features, rank, device=lin.weight.device)))
                self.hooks.append(lin.register_forward_hook(self._hook(len(self.a) - 1)))

    def _hook(self, i: int):
        def add(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            x = inputs[0]
            return output + F.linear(F.linear(x, self.a[i].to(x.dtype)), self.b[i].to(x.dtype))
        return add

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def eval_ttt(args: Hyperparameters, model: GPT, ctx: EvalContext, *,
             score_fn: Callable[[GPT, Tensor, Tensor], Tensor] = token_nll,
             out: Tensor | None = None) -> tuple[float, float]:
    """(val_loss, val_bpb) of score-first test-time training on a copy of `model` (ttt = full | lora).

    Windows follow eval_stride (plain windows when 0). Each rank runs the whole stream (no sharding: the chunks
    are sequential). `score_fn` and `out` expose per-target scores to tests.
    """
    window, tokens = args.train_seq_len, ctx.val_tokens
    n = tokens.numel() - 1
    bounds = chunk_boundaries(n, args.ttt_chunk_tokens)
    chunks = split_plan(sliding_window_plan(n, window, args.eval_stride or window), bounds)
    edges = [0, *bounds.tolist(), n]
    adapted = copy.deepcopy(model).eval()
    for p in adapted.parameters():
        p.requires_grad_(args.ttt == "full")
    lora = LoRAAdapters(adapted, args.ttt_lora_rank, args.seed) if args.ttt == "lora" else None
    params = list(lora.parameters()) if lora is not None else list(adapted.parameters())
    opt = torch.optim.SGD(params, lr=args.ttt_lr, momentum=0.9)
    batch_windows = max(1, args.val_batch_size // window)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=tokens.device.type == "cuda")
    nll = 0.0
    for k, rows in enumerate(chunks):
        nll += score_plan(adapted, tokens, rows, window, batch_windows, score_fn=score_fn, out=out)
        lo, hi = edges[k], edges[k + 1]
        if k == len(chunks) - 1 or hi - lo < window:
            continue
        starts = train_windows(lo, hi, window)
        for _ in range(args.ttt_epochs):
            for b in range(0, len(starts), batch_windows):
                x, y = _windows(tokens, starts[b : b + batch_windows], window)
                with autocast:
                    loss = token_nll(adapted, x, y).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
    if lora is not None:
        lora.remove()
    return bits_per_byte(nll, n, stream_bytes(ctx))


# -----------------------------
# POST-TRAINING QUANTIZATION
# -----------------------------
# int8 per-row for large 2-D float tensors (clipped at a high percentile), per-tensor int8 for other large float
# tensors, small float tensors passed through (fp32 for control tensors, fp16 otherwise), then zlib level 9.

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
INT8_KEEP_FLOAT_STORE_DTYPE = torch.float16
INT8_PER_ROW_SCALE_DTYPE = torch.float16


def tensor_nbytes(t: Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


def _quantize_float(t: Tensor) -> tuple[Tensor, Tensor]:
    t32 = t.float()
    if t32.ndim == 2:
        if t32.numel():
            clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
        else:
            clip = torch.empty((t32.shape[0],), dtype=torch.float32)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8).contiguous()
        return q, scale.to(INT8_PER_ROW_SCALE_DTYPE).contiguous()
    clip_abs = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip_abs / 127.0 if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -127, 127).to(torch.int8)
    return q.contiguous(), scale


def quantize_state_dict_int8(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Any], dict[str, int]]:
    quantized, scales, dtypes, passthrough, orig_dtypes, qmeta = {}, {}, {}, {}, {}, {}
    stats = dict.fromkeys(("param_count", "num_tensors", "baseline_tensor_bytes", "int8_payload_bytes"), 0)
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        stats["param_count"] += int(t.numel())
        stats["num_tensors"] += 1
        stats["baseline_tensor_bytes"] += tensor_nbytes(t)
        if not t.is_floating_point():
            passthrough[name] = t
        elif t.numel() <= INT8_KEEP_FLOAT_MAX_NUMEL:
            if any(p in name for p in INT8_KEEP_FLOAT_FP32_NAME_PATTERNS):
                passthrough[name] = t.float().contiguous()
            elif t.dtype in (torch.float32, torch.bfloat16):
                orig_dtypes[name] = str(t.dtype).removeprefix("torch.")
                passthrough[name] = t.to(INT8_KEEP_FLOAT_STORE_DTYPE).contiguous()
            else:
                passthrough[name] = t
        else:
            q, s = _quantize_float(t)
            if s.ndim > 0:
                qmeta[name] = {"scheme": "per_row", "axis": 0}
            quantized[name], scales[name] = q, s
            dtypes[name] = str(t.dtype).removeprefix("torch.")
            stats["int8_payload_bytes"] += tensor_nbytes(q) + tensor_nbytes(s)
            continue
        stats["int8_payload_bytes"] += tensor_nbytes(passthrough[name])
    obj: dict[str, Any] = {
        "__quant_format__": QUANT_FORMAT, "quantized": quantized, "scales": scales, "dtypes": dtypes,
        "passthrough": passthrough,
    }
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    return obj, stats


def dequantize_state_dict_int8(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    orig_dtypes = obj.get("passthrough_orig_dtypes", {})
    for name, q in obj["quantized"].items():
        dtype = getattr(torch, obj["dtypes"][name])
        s = obj["scales"][name]
        if s.ndim > 0:
            view = s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
            out[name] = (q.float() * view).to(dtype).contiguous()
        else:
            out[name] = (q.float() * float(s.item())).to(dtype).contiguous()
    for name, t in obj["passthrough"].items():
        t = t.detach().to("cpu").contiguous()
        if name in orig_dtypes:
            t = t.to(getattr(torch, orig_dtypes[name])).contiguous()
        out[name] = t
    return out


def export_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The artifact's tensors: the model's state minus training-only heads."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(EXPORT_EXCLUDED_PREFIXES)}


def serialize_int8_zlib(state_dict: Mapping[str, Tensor]) -> tuple[bytes, dict[str, int]]:
    obj, stats = quantize_state_dict_int8(state_dict)
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    stats["raw_torch_bytes"] = len(raw)
    return zlib.compress(raw, level=9), stats


def deserialize_int8_zlib(blob: bytes) -> dict[str, Tensor]:
    return dequantize_state_dict_int8(torch.load(io.BytesIO(zlib.decompress(blob)), map_location="cpu"))


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
# EXPORT + QAT (torch side of the shared export)
# -----------------------------
# export_artifact / load_artifact pick upstream's int8 + zlib format when every export knob is at its default,
# else the numpy format above. QAT fakes, in training, the quantization the export will apply to each block matrix
# (per row, the export's bits and plain clip, fp16 scales): w + alpha * (fake(w) - w).detach(), so the
# forward sees the quantized weights and the gradient passes straight through. alpha is a buffer (0 before the
# start step, 1 after), data to a compiled graph rather than a constant folded in at trace time.


def export_artifact(state: Mapping[str, Tensor], spec: ExportSpec) -> tuple[bytes, dict[str, int]]:
    """Compressed artifact bytes of an exported state dict, and size stats."""
    if spec.is_upstream_int8:
        return serialize_int8_zlib(state)
    arrays = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).numpy()
              for k, v in state.items()}
    return pack_artifact(arrays, spec)


def load_artifact(blob: bytes, spec: ExportSpec) -> dict[str, Tensor]:
    if spec.is_upstream_int8:
        return deserialize_int8_zlib(blob)
    return {k: torch.from_numpy(v) for k, v in unpack_artifact(blob, spec.compressor).items()}


def fake_quantize_rows(w: Tensor, bits: int, floor: float = 0.0) -> Tensor:
    """w after quantize_rows' plain per-row quantization at `bits` (clip at the PLAIN_CLIP_QUANTILE of |w|,
    interpolated between the two largest values as np.quantile does for rows under 625,000 values; fp16 scale
    of at least `floor`: 1/127 for plain int8, as the export)."""
    qmax = 2 ** (bits - 1) - 1
    w32 = w.float()
    top2 = w32.abs().topk(2, dim=1).values.double()
    frac = PLAIN_CLIP_QUANTILE * (w32.size(1) - 1) - (w32.size(1) - 2)
    clip = (top2[:, 1] + frac * (top2[:, 0] - top2[:, 1])).float()[:, None]
    scale = (clip / qmax).clamp_min(floor).to(torch.float16).float().clamp_min(2.0**-24)  # see emulate_fp16_scales
    clipped = torch.maximum(torch.minimum(w32, clip), -clip)
    return (torch.clamp(torch.round(clipped / scale), -qmax, qmax) * scale).to(w.dtype)


def configure_qat(model: GPT, spec: ExportSpec, enabled: bool) -> list[Tensor]:
    """With `enabled`, give every block CastedLinear that the export quantizes its bits and an alpha buffer (0)
    and return the buffers; otherwise (and for every other layer) turn QAT off. Call before compiling."""
    alphas = []
    for name, module in model.named_modules():
        if not isinstance(module, CastedLinear):
            continue
        store, bits = spec.storage_for(f"{name}.weight", tuple(module.weight.shape))
        module.qat_bits = bits if enabled and store == "q" and name.startswith("blocks.") else 0
        module.qat_floor = 1.0 / 127.0 if bits == 8 and not spec.clip_search else 0.0
        if not module.qat_bits:
            continue
        module.register_buffer("qat_alpha", torch.zeros((), device=module.weight.device), persistent=False)
        alphas.append(module.qat_alpha)
    return alphas


def emulate_fp16_scales() -> None:
    """Make compiled graphs round to fp16 where the code casts (inductor otherwise keeps the fp32 scale inside a
    fused kernel, and every fake-quantized weight drifts off the export's grid). Process-wide; call before
    compiling a model with QAT."""
    import torch._inductor.config as inductor_config

    inductor_config.emulate_precision_casts = True


def qat_start_step(cfg: Hyperparameters) -> int:
    return math.ceil(cfg.qat_start_frac * cfg.iterations)


# -----------------------------
# DATA LOADING
# -----------------------------
# Shards are memory-mapped, so FineWeb-sized data costs no RAM up front. Two orders:
# - sequential: upstream's stream, contiguous chunks that walk the shards in order and wrap around;
# - seeded: every sequence of every step starts at a window drawn by a generator seeded with the run's seed,
#   so the seed fixes the data order and both arms of a paired comparison see the same windows.


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


class TokenLoader(TokenStream):
    """TokenStream batches as torch tensors on ``device``."""

    def __init__(self, pattern: str | list, *, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                 order: str = "sequential", seed: int = 0):
        super().__init__(pattern, rank=rank, world_size=world_size, order=order, seed=seed)
        self.device = torch.device("cpu") if device is None else device

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        x, y = self.next_arrays(global_tokens, seq_len, grad_accum_steps)
        return (torch.from_numpy(x).to(self.device, non_blocking=True),
                torch.from_numpy(y).to(self.device, non_blocking=True))


# -----------------------------
# TRANSFORMER MODULES
# -----------------------------


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class CastedLinear(nn.Linear):
    # fp32 weights (optimizer quality), cast to the activation dtype at matmul time (bf16 under autocast).
    # qat_bits > 0 (set by enable_qat, before any compile): straight-through fake quantization mixed in by the
    # qat_alpha buffer.
    qat_bits, qat_floor = 0, 0.0

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        w = self.weight
        if self.qat_bits:
            w = w + self.qat_alpha * (fake_quantize_rows(w, self.qat_bits, self.qat_floor) - w).detach()
        return F.linear(x, w.to(x.dtype), bias)


def restore_low_dim_params_to_fp32(module: nn.Module) -> None:
    with torch.no_grad():
        for name, param in module.named_parameters():
            low_dim = param.ndim < 2 or any(p in name for p in CONTROL_TENSOR_NAME_PATTERNS)
            if low_dim and param.dtype != torch.float32:
                param.data = param.data.float()


class Rotary(nn.Module):
    """cos/sin tables for the first `dim` dims of a head, built by `build` OUTSIDE torch.compile (train() calls
    GPT.prepare_rotary first), so a compiled model only slices them and its first call may be an eval under
    inference_mode; eager callers get them built on first use. Positions take inv_freq's dtype, as upstream: fp32
    on CPU (unchanged), bf16 on CUDA, where build_model's `.bfloat16()` casts inv_freq as upstream's whole-model
    cast does (positions above 256 round in bf16 there too), so RoPE is not a difference when comparing with
    upstream. Upstream builds its tables inside its compiled graph, so an entry may differ in its last bf16 bit."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos_table", None, persistent=False)
        self.register_buffer("sin_table", None, persistent=False)

    @torch.no_grad()
    def build(self, seq_len: int, device: torch.device | None = None) -> None:
        """(Re)build the tables for positions [0, seq_len) on `device` (default: inv_freq's), in inv_freq's dtype."""
        inv_freq = self.inv_freq if device is None else self.inv_freq.to(device)
        with torch.inference_mode(False):  # plain tensors, so tables built during an eager eval still train
            t = torch.arange(seq_len, device=inv_freq.device, dtype=inv_freq.dtype)
            freqs = torch.outer(t, inv_freq)
            self.cos_table, self.sin_table = freqs.cos()[None, None], freqs.sin()[None, None]

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if self.cos_table is None or self.cos_table.size(2) < seq_len or self.cos_table.device != device:
            if torch.compiler.is_compiling():
                raise RuntimeError(f"rotary tables for seq_len={seq_len} on {device} were not built before "
                                   "torch.compile; call GPT.prepare_rotary(seq_len) first")
            self.build(seq_len, device)
        return self.cos_table[:, :, :seq_len].to(dtype), self.sin_table[:, :, :seq_len].to(dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
                 *, rope_partial_dims: int = 0, xsa: bool = False, out_gate: str = "none", gate_window: int = 12,
                 gate_scale: float = 1.0):
        super().__init__()
        if dim % num_heads != 0 or num_heads % num_kv_heads != 0:
            raise ConfigValueError(
                f"model_dim={dim} must be divisible by num_heads={num_heads}, and num_heads by "
                f"num_kv_heads={num_kv_heads}"
            )
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.rope_dims = rope_partial_dims or self.head_dim
        self.xsa = xsa
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.rope_dims, base=rope_base)
        # Attention-output gate (records): a per-head sigmoid gate on each head's output, from the block's normed
        # input: dense reads all of it (init N(0, 0.01)), sparse its first gate_window dims (zero init, scaled).
        self.out_gate, self.gate_window, self.gate_scale = out_gate, gate_window, gate_scale
        if out_gate != "none":
            self.attn_gate_w = nn.Parameter(torch.zeros(num_heads, dim if out_gate == "dense" else gate_window))

    def _rope(self, t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        if self.rope_dims == self.head_dim:
            return apply_rotary_emb(t, cos, sin)
        return torch.cat((apply_rotary_emb(t[..., : self.rope_dims], cos, sin), t[..., self.rope_dims :]), dim=-1)

    def forward(self, x: Tensor, v_embed: Tensor | None = None) -> Tensor:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x)
        if v_embed is not None:  # value embeddings: token identity re-injected into the values
            v = v + v_embed
        v = v.reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (q.size(-1),))
        k = F.rms_norm(k, (k.size(-1),))
        cos, sin = self.rotary(seqlen, x.device, q.dtype)
        q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        gqa = self.num_kv_heads != self.num_heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True, enable_gqa=gqa)
        if self.xsa:
            # Exclusive self-attention: remove from each head's output its component along the token's own
            # (normalised) value vector, so attention carries only what the token does not already hold.
            group = self.num_heads // self.num_kv_heads
            yg = y.reshape(bsz, self.num_kv_heads, group, seqlen, self.head_dim)
            vn = F.normalize(v, dim=-1).unsqueeze(2)
            y = (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(bsz, self.num_heads, seqlen, self.head_dim)
        if self.out_gate != "none":
            gate_in = x if self.out_gate == "dense" else x[..., : self.gate_window]
            logits = F.linear(gate_in, self.attn_gate_w.to(x.dtype))
            g = torch.sigmoid(logits if self.out_gate == "dense" else self.gate_scale * logits)
            y = y * g.transpose(1, 2)[..., None]
        y = y.transpose(1, 2).contiguous().reshape(bsz, seqlen, dim)
        return self.proj(y)


def apply_activation(x: Tensor, kind: str) -> Tensor:
    if kind == "relu2":
        return torch.relu(x).square()
    if kind == "leaky_relu2":
        return F.leaky_relu(x, negative_slope=0.5).square()
    if kind == "gelu":
        return F.gelu(x)
    if kind == "silu":
        return F.silu(x)
    if kind == "sin2":
        return torch.sin(x).square()
    raise ConfigValueError(f"activation={kind!r} is not supported; choose one of {list(ACTIVATIONS)}")


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_mult: int, activation: str = "relu2"):
        super().__init__()
        self.fc = CastedLinear(dim, mlp_mult * dim, bias=False)
        self.proj = CastedLinear(mlp_mult * dim, dim, bias=False)
        self.proj._zero_init = True
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(apply_activation(self.fc(x), self.activation))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, mlp_mult: int, rope_base: float,
                 qk_gain_init: float, *, activation: str = "relu2", rope_partial_dims: int = 0, xsa: bool = False,
                 norm_scale: float = 1.0, out_gate: str = "none", gate_window: int = 12, gate_scale: float = 1.0):
        super().__init__()
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(dim, num_heads, num_kv_heads, rope_base, qk_gain_init,
                                        rope_partial_dims=rope_partial_dims, xsa=xsa, out_gate=out_gate,
                                        gate_window=gate_window, gate_scale=gate_scale)
        self.mlp = MLP(dim, mlp_mult, activation)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        self.norm_scale = norm_scale  # ln_scale: 1/sqrt(layer_idx+1), else 1

    def _attn_out(self, x: Tensor, x0: Tensor, v_embed: Tensor | None) -> tuple[Tensor, Tensor]:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        h = self.attn_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        return x, self.attn_scale.to(x.dtype)[None, None, :] * self.attn(h, v_embed)

    def _mlp_out(self, x: Tensor) -> Tensor:
        h = self.mlp_norm(x)
        if self.norm_scale != 1.0:
            h = h * self.norm_scale
        return self.mlp_scale.to(x.dtype)[None, None, :] * self.mlp(h)

    def forward(self, x: Tensor, x0: Tensor, v_embed: Tensor | None = None) -> Tensor:
        x, attn_out = self._attn_out(x, x0, v_embed)
        x = x + attn_out
        return x + self._mlp_out(x)

    def parallel(self, lanes: tuple[Tensor, Tensor], x0: Tensor, post: Tensor, resid: Tensor,
                 v_embed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Two-lane parallel residual block (records): attention reads lane 0, the MLP reads lane 1, and both
        outputs are written to both lanes with learned weights post[branch, lane]; resid[lane] scales each lane."""
        lane0, lane1 = lanes
        _, attn_out = self._attn_out(lane0, x0, v_embed)
        mlp_out = self._mlp_out(lane1)
        post, resid = post.to(lane0.dtype), resid.to(lane0.dtype)
        return (resid[0] * lane0 + post[0, 0] * attn_out + post[1, 0] * mlp_out,
                resid[1] * lane1 + post[0, 1] * attn_out + post[1, 1] * mlp_out)


# >>> twin: bos-id >>>
BOS_ID = 1  # <s> of the challenge's SentencePiece tokenizers; SmearGate never smears across it
# <<< twin: bos-id <<<


class BigramHash(nn.Module):
    """BigramHash embedding (records): a table indexed by a hash of (previous token, token), projected to
    model_dim and scaled; position 0 uses the last bucket."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        self.embed._init_std = 0.0
        self.proj = CastedLinear(dim, model_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.to(torch.int32)
        mod = self.buckets - 1
        h = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % mod
        h = torch.cat((torch.full_like(t[:, :1], mod), h), dim=1).long()
        out = self.proj(self.embed(h))
        return out * self.scale.to(out.dtype)


class ValueEmbedding(nn.Module):
    """Value embeddings (records): one shared token table (N(0, 0.01)) projected to the kv width, added to the
    attention values of the chosen layers, each with its own learned scale (init 1) on top of a shared 0.1."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.embed._init_std = 0.01
        self.proj = CastedLinear(dim, kv_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.1, dtype=torch.float32))

    def forward(self, ids: Tensor) -> Tensor:
        out = self.proj(self.embed(ids))
        return out * self.scale.to(out.dtype)


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


class GPT(nn.Module):
    """The baseline U-Net-style GPT: the first half of the blocks stores skips the second half adds back.

    In training mode the loss follows `loss` (ce, rho1, mtp); in eval mode it is always plain next-token CE.
    The frontier knobs (SmearGate, BigramHash, value embeddings, gated skips, parallel residuals, depth
    recurrence, attention-output gates, MTP heads) add modules only when switched on.
    """

    def __init__(self, cfg: Hyperparameters):
        super().__init__()
        if cfg.logit_softcap <= 0.0:
            raise ConfigValueError(f"logit_softcap must be positive, got {cfg.logit_softcap}")
        self.cfg = cfg
        self.tie_embeddings = cfg.tie_embeddings
        self.tied_embed_init_std = cfg.tied_embed_init_std
        self.qk_gain_init = cfg.qk_gain_init
        self.logit_softcap = cfg.logit_softcap
        self.loss_kind, self.rho1_keep_frac, self.mtp_weight = cfg.loss, cfg.rho1_keep_frac, cfg.mtp_weight
        dim, num_layers = cfg.model_dim, cfg.num_layers
        self.tok_emb = nn.Embedding(cfg.vocab_size, dim)
        self.num_encoder_layers = num_layers // 2
        self.num_decoder_layers = num_layers - self.num_encoder_layers
        self.looping = False  # depth recurrence switches on at loop_start_frac (train) and for evaluation
        enc, dec = layer_schedule(cfg, cfg.num_loops > 0)
        self.num_skip_weights = min(len(enc), len(dec))
        self.skip_weights = nn.Parameter(torch.ones(self.num_skip_weights, dim, dtype=torch.float32))
        if cfg.skip_gates:
            self.skip_gates = nn.Parameter(torch.zeros(self.num_skip_weights, dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([
            Block(dim, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_mult, cfg.rope_base, cfg.qk_gain_init,
                  activation=cfg.activation, rope_partial_dims=cfg.rope_partial_dims,
                  xsa=i >= num_layers - cfg.xsa_last_n, norm_scale=1.0 / math.sqrt(i + 1) if cfg.ln_scale else 1.0,
                  out_gate=cfg.attn_out_gate, gate_window=cfg.gate_window, gate_scale=cfg.attn_gate_scale)
            for i in range(num_layers)
        ])
        if cfg.parallel_start_layer > 0:
            self.parallel_post_lambdas = nn.Parameter(torch.ones(num_layers, 2, 2, dtype=torch.float32))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((num_layers, 2), 1.1, dtype=torch.float32))
        if cfg.smear_gate:
            self.smear_gate = CastedLinear(cfg.gate_window, 1, bias=False)
            self.smear_gate._zero_init = True
            self.smear_lambda = nn.Parameter(torch.zeros(1, dtype=torch.float32))
        if cfg.bigram_buckets > 0:
            self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, dim)
        self.ve_layers = cfg.ve_layer_indices
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, cfg.num_kv_heads * (dim // cfg.num_heads))
            self.ve_layer_scales = nn.ParameterList(
                [nn.Parameter(torch.ones(1, dtype=torch.float32)) for _ in self.ve_layers])
        self.final_norm = RMSNorm()
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(dim, cfg.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        # mtp (records): k training-only zero-init vocab heads on the final-normed state; head j predicts t+j+2.
        self.mtp_heads = nn.ModuleList(
            [CastedLinear(dim, cfg.vocab_size, bias=False) for _ in range(cfg.mtp_heads if cfg.loss == "mtp" else 0)])
        for head in self.mtp_heads:
            head._zero_init = True

    @classmethod
    def from_config(cls, cfg: Hyperparameters) -> GPT:
        return cls(cfg)

    def prepare_rotary(self, seq_len: int) -> None:
        """Build every block's rotary tables (outside torch.compile), after the final device/dtype cast."""
        for block in self.blocks:
            block.attn.rotary.build(seq_len)

    def _logits(self, h: Tensor, head: nn.Module | None = None) -> Tensor:
        head = head if head is not None else self.lm_head
        proj = F.linear(h, self.tok_emb.weight) if head is None else head(h)
        return self.logit_softcap * torch.tanh(proj / self.logit_softcap)

    def _embed(self, input_ids: Tensor) -> Tensor:
        x = self.tok_emb(input_ids)
        if self.cfg.bigram_buckets > 0:
            x = x + self.bigram(input_ids)
        if self.cfg.smear_gate:
            w = self.cfg.gate_window
            g = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[:, 1:, :w]))
            not_bos = (input_ids[:, 1:] != BOS_ID).to(x.dtype).unsqueeze(-1)
            x = torch.cat((x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos), dim=1)
        return F.rms_norm(x, (x.size(-1),))

    def _skip(self, x: Tensor, j: int, skip: Tensor) -> Tensor:
        scaled = self.skip_weights[j].to(x.dtype)[None, None, :] * skip
        if self.cfg.skip_gates:
            return torch.lerp(scaled, x, torch.sigmoid(self.skip_gates[j].to(x.dtype))[None, None, :])
        return x + scaled

    def hidden(self, input_ids: Tensor) -> Tensor:
        x = self._embed(input_ids)
        ve_base = self.ve_shared(input_ids) if self.ve_layers else None

        def ve(i: int) -> Tensor | None:
            if ve_base is None or i not in self.ve_layers:
                return None
            return ve_base * self.ve_layer_scales[self.ve_layers.index(i)].to(ve_base.dtype)

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
                lane0 = self._skip(lanes[0], j, skips.pop()) if j < self.num_skip_weights and skips else lanes[0]
                lanes = self.blocks[i].parallel((lane0, lanes[1]), x0, self.parallel_post_lambdas[i],
                                                self.parallel_resid_lambdas[i], ve(i))
                continue
            if j < self.num_skip_weights and skips:
                x = self._skip(x, j, skips.pop())
            x = self.blocks[i](x, x0, ve(i))
        return x if lanes is None else 0.5 * (lanes[0] + lanes[1])

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        x = self.hidden(input_ids)
        h = self.final_norm(x)
        logits = self._logits(h.reshape(-1, h.size(-1))).float()
        targets = target_ids.reshape(-1)
        if not self.training or self.loss_kind == "ce":
            return F.cross_entropy(logits, targets, reduction="mean")
        if self.loss_kind == "rho1":
            per_token = F.cross_entropy(logits, targets, reduction="none")
            keep = max(1, int(self.rho1_keep_frac * per_token.numel()))
            return torch.topk(per_token, keep, sorted=False).values.mean()
        # mtp: main CE plus mtp_weight x the mean over heads of CE of token t+j+2 predicted at position t.
        main = F.cross_entropy(logits, targets, reduction="mean")
        aux = [F.cross_entropy(self._logits(h[:, : -(j + 1)].reshape(-1, h.size(-1)), head).float(),
                               target_ids[:, j + 1 :].reshape(-1), reduction="mean")
               for j, head in enumerate(self.mtp_heads) if target_ids.size(1) > j + 1]
        return main + self.mtp_weight * (sum(aux) / len(aux)) if aux else main


# >>> twin: init-keys >>>
def _param_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)
# <<< twin: init-keys <<<


@torch.no_grad()
def init_weights(model: GPT, seed: int) -> None:
    """Initialise every parameter from a generator keyed by (seed, parameter name) (common random numbers).

    Adding or removing a module leaves every other parameter's initial values bit-identical. The distributions
    are upstream's: tok_emb ~ N(0, tied_embed_init_std) when tied, zero for the _zero_init projections,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the other linear layers (torch's default), constants elsewhere.
    """
    zero_init = {f"{n}.weight" for n, m in model.named_modules() if getattr(m, "_zero_init", False)}
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    table_std = {f"{n}.weight": m._init_std for n, m in model.named_modules() if hasattr(m, "_init_std")}
    for name, p in model.named_parameters():
        gen = torch.Generator(device="cpu").manual_seed(_param_seed(seed, name))
        if name == "tok_emb.weight":
            std = model.tied_embed_init_std if model.tie_embeddings else 1.0
            value = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
        elif name in table_std:
            value = torch.randn(p.shape, generator=gen, dtype=torch.float32) * table_std[name]
        elif name.endswith("attn_gate_w"):
            std = DENSE_GATE_INIT_STD if model.cfg.attn_out_gate == "dense" else 0.0
            value = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
        elif name in zero_init:
            value = torch.zeros(p.shape, dtype=torch.float32)
        elif name in linear:
            bound = 1.0 / math.sqrt(p.shape[1])
            value = (torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound
        else:
            continue
        p.copy_(value.to(device=p.device, dtype=p.dtype))
    for block in model.blocks:
        block.attn.q_gain.fill_(model.qk_gain_init)
        block.attn_scale.fill_(1.0)
        block.mlp_scale.fill_(1.0)
        block.resid_mix[0].fill_(1.0)
        block.resid_mix[1].fill_(0.0)
    model.skip_weights.fill_(1.0)
    for name, p in model.named_parameters():  # the frontier knobs' constants (records' values)
        for prefix, value in CONSTANT_INITS:
            if name.startswith(prefix):
                p.fill_(value)


# >>> twin: constant-inits >>>
# Parameters of the frontier modules that start at a constant.
CONSTANT_INITS = (
    ("skip_gates", 0.0), ("parallel_post_lambdas", 1.0), ("parallel_resid_lambdas", 1.1), ("smear_lambda", 0.0),
    ("bigram.scale", 0.05), ("ve_shared.scale", 0.1), ("ve_layer_scales.", 1.0),
)
DENSE_GATE_INIT_STD = 0.01  # dense attention-output gate: N(0, 0.01) (records); the sparse one starts at zero
# <<< twin: constant-inits <<<


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
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


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
# TRAINING
# -----------------------------


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


def build_optimizers(cfg: Hyperparameters, model: GPT) -> tuple[list[torch.optim.Optimizer], Muon]:
    """Upstream's split, by optimizer_group: Adam for embedding tables (and an untied head), Muon for matrices,
    Adam for vectors/scalars and control tensors. Every parameter of the model is in exactly one group. With
    adam_wd > 0 the embedding and scalar groups use AdamW (decoupled decay, as the 11-layer records); at 0 they
    keep plain Adam, so the default is today's optimizer exactly."""
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    groups: dict[str, list[Tensor]] = {"tok": [], "head": [], "matrix": [], "scalar": []}
    for name, p in model.named_parameters():
        groups[optimizer_group(name, p.ndim)].append(p)
    token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
    adam = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, **fused)
    decayed = dict(adam, weight_decay=cfg.adam_wd) if cfg.adam_wd > 0 else adam
    adam_decayed = torch.optim.AdamW if cfg.adam_wd > 0 else torch.optim.Adam
    opt_tok = adam_decayed([{"params": groups["tok"], "lr": token_lr, "base_lr": token_lr}], **decayed)
    opt_muon = Muon(groups["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                    backend_steps=cfg.muon_backend_steps, weight_decay=cfg.muon_wd,
                    row_normalize=cfg.muon_row_normalize, ns=cfg.muon_ns)
    for group in opt_muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    opt_scalar = adam_decayed([{"params": groups["scalar"], "lr": cfg.scalar_lr, "base_lr": cfg.scalar_lr}],
                              **decayed)
    optimizers: list[torch.optim.Optimizer] = [opt_tok, opt_muon, opt_scalar]
    if groups["head"]:
        head = [{"params": groups["head"], "lr": cfg.head_lr, "base_lr": cfg.head_lr}]
        optimizers.insert(1, torch.optim.Adam(head, **adam))
    return optimizers, opt_muon


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


SDP_BACKENDS = {"cudnn": False, "flash": True, "mem_efficient": False, "math": False}  # upstream's pinning


def pin_cuda_kernels() -> str:
    """As upstream on CUDA (process-wide): TF32 matmuls, flash SDPA only. Returns the `sdp_backends:` line."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for name, enabled in SDP_BACKENDS.items():
        getattr(torch.backends.cuda, f"enable_{name}_sdp")(enabled)
    return "sdp_backends:" + " ".join(f"{n}={getattr(torch.backends.cuda, f'{n}_sdp_enabled')()}" for n in SDP_BACKENDS)


def build_model(cfg: Hyperparameters, device: torch.device) -> GPT:
    model = GPT.from_config(cfg).to(device)
    if device.type == "cuda":  # as upstream: bf16 body, fp32 CastedLinear weights and low-dim/control params
        model = model.bfloat16()
        for module in model.modules():
            if isinstance(module, CastedLinear):
                module.float()
        restore_low_dim_params_to_fp32(model)
    return model


def _noop_log(msg: str) -> None:
    return None


def vote_stop(loss_finite: bool, reached_cap: bool, *, rank: int = 0, world_size: int = 1,
              device: torch.device | None = None) -> tuple[list[int], bool]:
    """(ranks with a non-finite train loss, whether any rank hit the wallclock cap), agreed by every rank with one
    all-reduce per step before the next step's collectives, so a rank that saw NaN/inf stops with the others
    instead of leaving them blocked until the NCCL timeout. Without a process group: this process's answer."""
    if not (dist.is_available() and dist.is_initialized()):
        return ([] if loss_finite else [rank]), reached_cap
    flags = torch.zeros(world_size + 1, dtype=torch.int32, device=device)
    flags[rank], flags[world_size] = int(not loss_finite), int(reached_cap)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    votes = flags.tolist()
    return [r for r in range(world_size) if votes[r]], bool(votes[world_size])


def train(
    config: Hyperparameters, seed: int | None = None, *, log: Callable[[str], None] | None = None,
    data: TrainData | None = None, model: GPT | None = None, device: torch.device | None = None,
    out_dir: str | Path | None = None, rank: int = 0, world_size: int = 1,
    on_step: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Train one model and evaluate it (full val split, then the int8+zlib round trip).

    `seed` (default config.seed) fixes the initialisation (keyed by parameter name) and, with
    data_order="seeded", the data order. `data` and `model` let a caller reuse loaded data and a built model of
    the same architecture (it is re-initialised here). Files are written only when `out_dir` is given. A
    non-finite train loss stops the run early with status "diverged"; other errors propagate. `on_step(step,
    iterations)` is called after every training step (a progress callback; it must not touch the model).
    """
    t_start = time.perf_counter()
    log = log or _noop_log
    cfg = config if seed is None else config.with_overrides(seed=seed)
    seed = cfg.seed
    if data is None:
        cfg = resolve_data_paths(cfg)
        data = load_train_data(cfg)
    else:
        cfg = cfg.with_overrides(data_path=data.data_path, tokenizer_path=data.tokenizer_path)
    if data.vocab_size != cfg.vocab_size:
        raise ConfigValueError(f"VOCAB_SIZE={cfg.vocab_size} does not match the loaded data's {data.vocab_size}")
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    distributed = dist.is_available() and dist.is_initialized()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

    ctx = make_eval_context(trim_val_tokens(data.val_tokens, cfg.train_seq_len), data.luts, device)
    log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={cfg.tokenizer_path}")
    log(f"train_loader:dataset:{Path(cfg.data_path).name} train_shards:{len(data.train_shards)}")
    log(f"val_loader:shards pattern={cfg.val_files} tokens:{ctx.val_tokens.numel() - 1}")

    base_model = model if model is not None else build_model(cfg, device)
    init_weights(base_model, seed)
    base_model.looping = False
    base_model.train()
    base_model.prepare_rotary(cfg.train_seq_len)  # outside torch.compile: a compiled first call may be an eval
    spec = ExportSpec.from_config(cfg)
    qat_alphas = configure_qat(base_model, spec, cfg.qat)
    qat_step, qat_ms = qat_start_step(cfg), cfg.qat_start_frac * 1000.0 * cfg.max_wallclock_seconds
    global _newton_schulz
    compiled = cfg.compile and device.type == "cuda"
    _newton_schulz = torch.compile(zeropower_via_newtonschulz5) if compiled else zeropower_via_newtonschulz5
    if compiled and qat_alphas:
        emulate_fp16_scales()
    run_model: nn.Module = torch.compile(base_model, dynamic=False, fullgraph=True) if compiled else base_model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run_model = DDP(run_model, device_ids=[device.index] if device.type == "cuda" else None,
                        broadcast_buffers=False)
    optimizers, opt_muon = build_optimizers(cfg, base_model)
    grad_accum = max(1, min(8 // world_size, cfg.train_batch_tokens // (world_size * cfg.train_seq_len))) \
        if device.type == "cuda" else 1
    n_params = sum(p.numel() for p in base_model.parameters())
    log(f"model_params:{n_params}")
    log(f"world_size:{world_size} grad_accum_steps:{grad_accum} device:{device.type}")
    if device.type == "cuda":  # flash SDPA only, as upstream; the peak memory logged below is this run's
        log(pin_cuda_kernels())
        torch.cuda.reset_peak_memory_stats(device)
    log(f"attention_mode:gqa num_heads:{cfg.num_heads} num_kv_heads:{cfg.num_kv_heads}")
    log(f"tie_embeddings:{cfg.tie_embeddings} embed_lr:{cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr} "
        f"head_lr:{cfg.head_lr if base_model.lm_head is not None else 0.0} matrix_lr:{cfg.matrix_lr} "
        f"scalar_lr:{cfg.scalar_lr}")
    log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
        f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
        f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
    log(f"activation:{cfg.activation} loss:{cfg.loss} rope_partial_dims:{cfg.rope_partial_dims} "
        f"ln_scale:{cfg.ln_scale} xsa_last_n:{cfg.xsa_last_n} ema_decay:{cfg.ema_decay} data_order:{cfg.data_order}")
    log(f"seed:{seed} config_hash:{config_hash(cfg)}")

    def new_loader() -> TokenLoader:
        return TokenLoader(data.train_shards, rank=rank, world_size=world_size, device=device,
                           order=cfg.data_order, seed=seed if cfg.data_seed < 0 else cfg.data_seed)

    def zero_grad_all() -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    autocast = lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    loader = new_loader()
    lr_mul = make_lr_schedule(cfg)
    training_frac = make_training_frac(cfg)
    max_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else None

    def forward_backward() -> Tensor:
        total = torch.zeros((), device=device)
        for micro in range(grad_accum):
            if distributed:
                run_model.require_backward_grad_sync = micro == grad_accum - 1
            x, y = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)
            with autocast():
                loss = run_model(x, y)
            total += loss.detach()
            (loss / grad_accum).backward()
        return total / grad_accum

    # Warmup primes the (compiled) paths, then restores the initial weights, optimizer state and data order.
    if cfg.warmup_steps > 0:
        init_state = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
        init_opt = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
        for warmup_step in range(cfg.warmup_steps):
            zero_grad_all()
            forward_backward()
            for opt in optimizers:
                opt.step()
            if cfg.warmup_steps <= 20 or (warmup_step + 1) % 10 == 0 or warmup_step + 1 == cfg.warmup_steps:
                log(f"warmup_step:{warmup_step + 1}/{cfg.warmup_steps}")
        base_model.load_state_dict(init_state, strict=True)
        for opt, state in zip(optimizers, init_opt, strict=True):
            opt.load_state_dict(state)
        zero_grad_all()
        loader = new_loader()

    ema: dict[str, Tensor] | None = None
    swa: dict[str, Tensor] | None = None
    swa_count = 0
    step_losses: list[float] = []
    val_history: list[dict[str, float]] = []
    status, error = "ok", None
    training_ms, stop_after = 0.0, None

    def train_step(step: int, scale: float) -> float:
        """One optimisation step at lr multiplier `scale` (then the EMA / SWA updates); returns the train loss."""
        nonlocal ema, swa, swa_count
        zero_grad_all()
        train_loss = forward_backward()
        frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
        for group in opt_muon.param_groups:
            group["momentum"] = (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(base_model.parameters(), cfg.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        zero_grad_all()
        if ema is not None:
            with torch.no_grad():
                for k, p in base_model.named_parameters():
                    ema[k].mul_(cfg.ema_decay).add_(p.detach().float(), alpha=1.0 - cfg.ema_decay)
        if cfg.swa_every > 0 and scale < cfg.swa_start_scale and (step + 1) % cfg.swa_every == 0:
            with torch.no_grad():
                if swa is None:
                    swa = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in base_model.named_parameters()}
                for k, p in base_model.named_parameters():
                    swa[k].add_(p.detach().float())
                swa_count += 1
        return float(train_loss.item())

    def finish(step: int, training_ms: float, out_dir: str | Path | None) -> dict[str, Any]:
        """The final stage on the model as trained: averaging, evaluation, export round trip, later stages. Returns
        the RunResult fields it scores; files are written only when out_dir is given (never for a branch)."""
        for alpha in qat_alphas:  # every evaluation sees the float (or round-tripped) weights as they are
            alpha.fill_(0.0)
        if ema is not None:
            with torch.no_grad():
                for k, p in base_model.named_parameters():
                    p.copy_(ema[k].to(p.dtype))
            log(f"ema:applied decay:{cfg.ema_decay} start_frac:{cfg.ema_start_frac}")
        if swa is not None:
            with torch.no_grad():
                for k, p in base_model.named_parameters():
                    p.copy_((swa[k] / swa_count).to(p.dtype))
            log(f"swa:applied checkpoints:{swa_count}")
        if cfg.num_loops > 0:
            base_model.looping = True  # evaluation runs the looped depth, as the records do
        eval_s: dict[str, float] = {}
        sync()
        t_e = time.perf_counter()
        val_loss, val_bpb = eval_val(cfg, run_model, ctx, rank=rank, world_size=world_size, device=device)
        sync()
        eval_s["pre_quant"] = time.perf_counter() - t_e
        log(f"step:{step}/{cfg.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
            f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")

        # Serialization + round trip: export (upstream int8 + zlib by default), reload, re-evaluate.
        code_bytes = len(Path(__file__).read_bytes())
        state = export_state_dict(base_model)
        blob, qstats = export_artifact(state, spec)
        fmt = "int8+zlib" if spec.is_upstream_int8 else spec.label()
        budget = BudgetCheck(len(blob), code_bytes)
        if out_dir is not None and rank == 0:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(state, out / "final_model.pt")
            model_bytes = (out / "final_model.pt").stat().st_size
            log(f"Serialized model: {model_bytes} bytes")
            log(f"Code size: {code_bytes} bytes")
            log(f"Total submission size: {model_bytes + code_bytes} bytes")
            (out / ("final_model.int8.ptz" if spec.is_upstream_int8 else "final_model.pgq.ptz")).write_bytes(blob)
        if spec.is_upstream_int8:
            ratio = qstats["baseline_tensor_bytes"] / max(qstats["int8_payload_bytes"], 1)
            log(f"Serialized model int8+zlib: {len(blob)} bytes (payload:{qstats['int8_payload_bytes']} "
                f"raw_torch:{qstats['raw_torch_bytes']} payload_ratio:{ratio:.2f}x)")
        else:
            log(f"Serialized model {fmt}: {len(blob)} bytes (payload:{qstats['payload_bytes']} "
                f"raw:{qstats['raw_bytes']} quantized_params:{qstats['quantized_params']}/{qstats['param_count']})")
        log(f"Total submission size {fmt}: {budget.artifact_bytes} bytes")
        log(f"artifact_budget: {budget.message()}")
        restored = load_artifact(blob, spec)
        missing, unexpected = base_model.load_state_dict(restored, strict=False)
        if unexpected or any(not k.startswith(EXPORT_EXCLUDED_PREFIXES) for k in missing):
            raise RuntimeError(f"round trip state mismatch: missing={missing} unexpected={unexpected}")
        sync()
        t_q = time.perf_counter()
        q_loss, q_bpb = eval_val(cfg, run_model, ctx, rank=rank, world_size=world_size, device=device)
        sync()
        eval_s["post_quant"] = time.perf_counter() - t_q
        tag = "int8_zlib" if spec.is_upstream_int8 else "export"
        log(f"final_{tag}_roundtrip val_loss:{q_loss:.4f} val_bpb:{q_bpb:.4f} "
            f"eval_time:{1000.0 * eval_s['post_quant']:.0f}ms")
        log(f"final_{tag}_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")
        stages: dict[str, float] = {}
        for stage, run_eval in (("sliding", lambda: eval_sliding(cfg, base_model, ctx, rank=rank, world_size=world_size)),
                                ("ttt", lambda: eval_ttt(cfg, base_model, ctx))):
            if not cfg.stage_enabled(stage):
                continue
            t_s = time.perf_counter()
            stages[f"{stage}_val_loss"], stages[f"{stage}_val_bpb"] = run_eval()
            sync()
            eval_s[stage] = time.perf_counter() - t_s
            log(f"final_{stage} val_loss:{stages[f'{stage}_val_loss']:.8f} val_bpb:{stages[f'{stage}_val_bpb']:.8f} "
                f"eval_time:{1000.0 * eval_s[stage]:.0f}ms")
        return dict(val_loss=val_loss, val_bpb=val_bpb, post_quant_val_loss=q_loss, post_quant_val_bpb=q_bpb, **stages,
                    artifact_bytes=budget.artifact_bytes, model_bytes=budget.model_bytes, code_bytes=code_bytes,
                    within_budget=budget.within_budget, export_format=fmt, eval_s=eval_s)

    def run_branch(h: int, branch_step: int, trunk_ms: float) -> dict[str, Any]:
        """Horizon h's cooldown from the trunk at branch_step and its final stage; the trunk is then restored."""
        nonlocal ema, swa, swa_count
        saved = ({k: v.detach().clone() for k, v in base_model.state_dict().items()},
                 [copy.deepcopy(opt.state_dict()) for opt in optimizers], copy.deepcopy(ema), copy.deepcopy(swa),
                 swa_count, loader.get_state(), base_model.looping, torch.get_rng_state())
        own_lr = make_lr_schedule(cfg.with_overrides(iterations=h, horizons=""))
        t_b, b_status, b_error = time.perf_counter(), "ok", None
        for s in range(branch_step, h):
            loss_value = train_step(s, own_lr(s, 0.0))
            if not math.isfinite(loss_value):
                b_status, b_error = "diverged", f"train loss became {loss_value} at step {s + 1} (horizon {h})"
                break
        train_s = (trunk_ms / 1000.0) + time.perf_counter() - t_b
        fields = finish(h, 1000.0 * train_s, None) if b_status == "ok" else {}
        log(f"horizon:{h} branch_step:{branch_step} status:{b_status} "
            + " ".join(f"{k}:{fields[k]:.8f}" for k in ("val_bpb", "post_quant_val_bpb") if k in fields))
        base_model.load_state_dict(saved[0], strict=True)
        for opt, state in zip(optimizers, saved[1], strict=True):
            opt.load_state_dict(state)
        ema, swa, swa_count = saved[2], saved[3], saved[4]
        loader.set_state(saved[5])
        base_model.looping = saved[6]
        torch.set_rng_state(saved[7])
        return horizon_entry(h, branch_step, fields, train_s, b_status, b_error)

    branches = horizon_branches(cfg) if cfg.horizons else []
    horizon_metrics: dict[str, dict[str, Any]] = {}
    sync()
    t0 = time.perf_counter()
    step = 0
    while True:
        last = step == cfg.iterations or (stop_after is not None and step >= stop_after)
        if not last and cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0:
            sync()
            training_ms += 1000.0 * (time.perf_counter() - t0)
            vl, vb = eval_val(cfg, run_model, ctx, rank=rank, world_size=world_size, device=device)
            val_history.append({"step": step, "val_loss": vl, "val_bpb": vb})
            log(f"step:{step}/{cfg.iterations} val_loss:{vl:.4f} val_bpb:{vb:.4f} "
                f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
            sync()
            t0 = time.perf_counter()
        if last:
            if stop_after is not None and step < cfg.iterations:
                log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{cfg.iterations}")
            break
        elapsed_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        scale, frac_done = lr_mul(step, elapsed_ms), training_frac(step, elapsed_ms)
        if cfg.num_loops > 0 and not base_model.looping and frac_done >= cfg.loop_start_frac:
            base_model.looping = True
            log(f"layer_loop:enabled step:{step} frac:{frac_done:.3f}")
        if cfg.ema_decay > 0 and ema is None and frac_done >= cfg.ema_start_frac:
            ema = {k: p.detach().float().clone() for k, p in base_model.named_parameters()}
        if qat_alphas and not qat_alphas[0].item() and (step >= qat_step or (max_ms is not None and elapsed_ms >= qat_ms)):
            for alpha in qat_alphas:
                alpha.fill_(1.0)
            log(f"qat:enabled step:{step} layers:{len(qat_alphas)} format:{spec.label()}")
        while branches and branches[0][1] == step:  # branched cooldowns: the clock stops while a branch runs
            sync()
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
        bad_ranks, reached_cap = vote_stop(math.isfinite(loss_value), max_ms is not None and approx_ms >= max_ms,
                                           rank=rank, world_size=world_size, device=device)
        if bad_ranks:
            status, error = "diverged", f"train loss became {loss_value} at step {step}"
            if bad_ranks != [rank]:
                error = f"train loss became non-finite on rank(s) {bad_ranks} at step {step} (rank {rank}: {loss_value})"
            log(f"step:{step}/{cfg.iterations} train_loss:{loss_value} nonfinite_ranks:{bad_ranks} diverged: stopping")
            training_ms = approx_ms
            break
        if cfg.train_log_every > 0 and (step <= 10 or step % cfg.train_log_every == 0 or stop_after is not None):
            log(f"step:{step}/{cfg.iterations} train_loss:{loss_value:.4f} "
                f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        if stop_after is None and reached_cap:
            stop_after = step
    sync()
    if status == "ok":
        training_ms += 1000.0 * (time.perf_counter() - t0)
    if device.type == "cuda":
        log(f"peak memory allocated: {torch.cuda.max_memory_allocated(device) // 1024 // 1024} MiB "
            f"reserved: {torch.cuda.max_memory_reserved(device) // 1024 // 1024} MiB")

    base = dict(config=cfg.to_dict(), config_hash=config_hash(cfg), seed=seed, backend="torch",
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
    """Script entry: config from env (PRESET, then UPPER-case fields), upstream-style logs in logs/<run_id>.txt."""
    code = Path(__file__).read_text(encoding="utf-8")
    cfg = Hyperparameters.from_env()
    if not cfg.run_id:
        cfg = cfg.with_overrides(run_id=str(uuid.uuid4()))
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 0 or 8 % world_size != 0:
        raise ConfigValueError(f"WORLD_SIZE={world_size} must divide 8 so grad_accum_steps stays integral")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        if distributed:
            dist.init_process_group(backend="nccl", device_id=device)
            dist.barrier()
    else:
        if distributed and world_size > 1:
            raise ConfigValueError("torchrun DDP needs CUDA; on CPU run a single process (python train_gpt.py)")
        device = torch.device("cpu")
    master = rank == 0
    logfile = None
    if master:
        os.makedirs("logs", exist_ok=True)
        logfile = f"logs/{cfg.run_id}.txt"
        print(logfile)

    def log0(msg: str, console: bool = True) -> None:
        if not master:
            return
        if console:
            print(msg, flush=True)
        if logfile is not None:
            with open(logfile, "a", encoding="utf-8") as f:
                print(msg, file=f)

    log0(code, console=False)
    log0("=" * 100, console=False)
    log0(f"Running Python {sys.version}", console=False)
    log0(f"Running PyTorch {torch.__version__}", console=False)
    if device.type == "cuda":
        smi = subprocess.run(["nvidia-smi"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        log0(smi.stdout, console=False)
    log0(f"config:{json.dumps(cfg.to_dict(), sort_keys=True)}", console=False)
    log0("=" * 100, console=False)
    try:
        result = train(cfg, cfg.seed, log=log0, device=device, out_dir=Path("."), rank=rank, world_size=world_size)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if result.status != "ok":
        log0(f"run_status:{result.status} error:{result.error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
