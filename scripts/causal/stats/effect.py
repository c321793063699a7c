"""The effect of interest: the Parameter Golf record bar (0.005 nats per token) in bpb of the val split.

Per token, val_loss is in nats and val_bpb = (val_loss / ln 2) * (tokens / bytes) (bits per UTF-8 byte of the
val split). A difference of ``nats`` per token is therefore ``nats / (ln 2 * bytes_per_token)`` bpb, and the
bytes per token of the val split can be measured from any run that reports both numbers:
``bytes_per_token = val_loss / (ln 2 * val_bpb)``. Every run of a screen evaluates the same val split with the
same tokenizer, so the ratio is the same for all of them (checked to 1e-6 relative).

At sp1024 on FineWeb (about 2.44 bytes per token) the record bar is about 0.0030 bpb, not 0.005.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scripts.causal.core.errors import ConfigError, DataFormatError

__all__ = ["RECORD_BAR_NATS", "bpb_to_nats", "bytes_per_token_from_runs", "nats_to_bpb", "record_bar_bpb"]

RECORD_BAR_NATS = 0.005
_PAIRS = (("val_loss", "val_bpb"), ("post_quant_val_loss", "post_quant_val_bpb"))


def nats_to_bpb(nats: float, *, bytes_per_token: float) -> float:
    """A per-token difference in nats as bpb of the val split: nats / (ln 2 * bytes_per_token)."""
    if not (math.isfinite(bytes_per_token) and bytes_per_token > 0):
        raise ConfigError(f"bytes_per_token={bytes_per_token!r} must be a finite number > 0")
    return float(nats) / (math.log(2.0) * bytes_per_token)


def bpb_to_nats(bpb: float, *, bytes_per_token: float) -> float:
    """Inverse of ``nats_to_bpb``: bpb * ln 2 * bytes_per_token."""
    if not (math.isfinite(bytes_per_token) and bytes_per_token > 0):
        raise ConfigError(f"bytes_per_token={bytes_per_token!r} must be a finite number > 0")
    return float(bpb) * math.log(2.0) * bytes_per_token


def record_bar_bpb(bytes_per_token: float, *, nats: float = RECORD_BAR_NATS) -> float:
    """The record bar (default 0.005 nats per token) in bpb."""
    return nats_to_bpb(nats, bytes_per_token=bytes_per_token)


def _ratios(row: Mapping) -> list[float]:
    out = []
    candidates = [(row.get(a), row.get(b)) for a, b in _PAIRS]
    candidates += [(h.get("val_loss"), h.get("val_bpb")) for h in row.get("val_history") or [] if isinstance(h, Mapping)]
    for loss, bpb in candidates:
        if isinstance(loss, (int, float)) and isinstance(bpb, (int, float)) and math.isfinite(loss) \
                and math.isfinite(bpb) and bpb > 0 and loss > 0:
            out.append(float(loss) / (math.log(2.0) * float(bpb)))
    return out


def bytes_per_token_from_runs(rows: Sequence[Mapping], *, rtol: float = 1e-6, source: str = "runs") -> float:
    """Measured bytes per token of the val split, from the (loss, bpb) pairs of every run that reports both.

    Uses ``val_loss``/``val_bpb``, ``post_quant_val_loss``/``post_quant_val_bpb`` and ``val_history`` entries.
    Raises DataFormatError when no run reports both, or when runs disagree (different val splits).
    """
    ratios = [r for row in rows if isinstance(row, Mapping) for r in _ratios(row)]
    if not ratios:
        raise DataFormatError(
            f"{source}: no run reports both val_loss and val_bpb, so the bytes per token of the val split cannot "
            "be measured; pass the effect of interest explicitly (effect_bpb=... / --effect-bpb)")
    lo, hi = min(ratios), max(ratios)
    if hi - lo > rtol * hi:
        raise DataFormatError(
            f"{source}: runs disagree on bytes per token of the val split ({lo:.6f} .. {hi:.6f}); they do not "
            "evaluate the same val split and tokenizer, so they cannot be compared")
    return float(sum(ratios) / len(ratios))
