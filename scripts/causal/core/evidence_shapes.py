"""Data shapes of the verified evidence table and the proxy-to-H100 transfer built on it.

Re-exported by ``core.schema`` (stages import every shape from there); kept in their own module so that schema.py
stays one readable page.
"""
from __future__ import annotations

import dataclasses
from typing import Any

#: Classes of a verified entry (evidence/README.md); only ``single_change`` says what one change does.
EVIDENCE_CLASSES: tuple[str, ...] = ("single_change", "bundle", "cross_tokenizer", "quoted_estimate", "penalty_only",
                                     "nonadjacent_reference")
EVIDENCE_METRICS: tuple[str, ...] = ("pre_quant", "post_quant", "sliding", "ttt", "quant_penalty", "unknown")


@dataclasses.dataclass(frozen=True)
class EvidenceEntry:
    """One ablation-style statement of a record, read by a person against its source (evidence/README.md).

    ``delta_bpb`` = score with the change minus without (< 0: it helped); ``intervention`` is the registry entry
    that makes exactly this change (only on ``single_change`` entries); ``quote`` is verbatim from ``file`` at
    ``line``."""

    record_id: str
    id: int
    klass: str  # "class" in the JSON file
    change: str
    knob: str | None
    from_value: Any
    to_value: Any
    intervention: str | None
    delta_bpb: float | None
    delta_nats: float | None
    delta_stated: str
    metric: str
    stack: str
    stack_record: str | None
    reference: str
    seeds: int | None
    hardware: str
    quote: str
    file: str
    line: int
    track: str | None = None
    date: str | None = None

    @property
    def key(self) -> str:
        return f"{self.record_id}#{self.id}"

    @property
    def is_single_change(self) -> bool:
        return self.klass == "single_change"


@dataclasses.dataclass(frozen=True)
class VerifiedRecord:
    """Everything the verified table says about one record folder: its entries, or that it has none."""

    record_id: str
    track: str
    date: str | None
    files_read: tuple[str, ...]
    no_ablation_statements: bool
    note: str
    entries: tuple[EvidenceEntry, ...]


@dataclasses.dataclass(frozen=True)
class CalibrationItem:
    """One leaderboard ablation row mapped to a registry intervention: its H100 delta is the transfer target."""

    intervention: str
    transfer_class: str
    feature: str
    record_id: str
    change: str  # the row's own words (with record_id, it names the row)
    h100_delta: float  # val_bpb change of the intervention's direction on H100 (< 0 = better)
    metric: str  # the score the row was measured on (post_quant, sliding, post_ttt, unknown, ...)
    n_seeds: int | None
    from_value: Any = None
    to_value: Any = None
    in_range: bool = True  # False: the row moves the knob over another stretch than the registry entry does
    track: str | None = None  # the record's leaderboard track (track_10min_16mb, track_non_record_16mb, ...)
    hardware: str = "unknown"  # 8xH100, 1xH100, other:<gpu>, ... (rows off 8xH100 form their own class)
    quote: str = ""  # the verified source line the row rests on
    source: str = ""  # record file:line of the quote
    entry: str = ""  # the verified entry's key (record_id#id)
    reversed: bool = False  # the row measured the opposite direction (to -> from): its delta was sign-flipped


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """Proxy -> target transfer of one intervention's effect (ratio = target / proxy, Fieller interval)."""

    intervention: str
    proxy_mean: float
    target_mean: float
    sign_agree: bool
    ratio: float | None
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    ratio_ci_kind: str
    level: float
