"""
The Parameter Golf baseline trainer (torch), extended with the knobs the causal screening pipeline needs.

Runs as a script (single CPU process in fp32, or `torchrun` DDP on CUDA with bf16 autocast) and imports with
no side effects: it exposes the config dataclass, the model, the optimizers and `train(config, seed) -> RunResult`.
Hard cap: at most 1500 lines, to keep it readable for newcomers.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

# -----------------------------
# DATA FORMAT (FineWeb shards)
# -----------------------------
# A shard is 256 little-endian int32 header words (magic 20240520, version 1, token count, rest zero),
# followed by `token count` little-endian uint16 tokens.

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


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
