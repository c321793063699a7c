"""The miner's ablation rows scored against the verified evidence table: precision of typing, recall of single changes.

A mined row **claims** "this row is one change of knob K, from -> to" when it is typed ``ablation`` (one feature or
trainer knob, a direction). It is matched to the verified entries of its record whose delta equals its own within
``DELTA_TOL`` (bpb), or within half a unit of the mined figure's last digit when the record states it rounded
("+0.003" against scores that give +0.0028); an entry stated in nats only matches a claim of the same sign at a
bpb-per-nat ratio a tokenizer can have (``BPB_PER_NAT``). The claim is **right** when one of those entries is a
``single_change`` of the same knob in the same direction (and, where both state them, the same from and to values);
it is **wrong** when the matched entries
are another class (a bundle, a quoted estimate, a penalty, ...), another knob or direction, or when no verified entry
has that delta at all. Precision = right / claims. Recall = verified single-change entries (with a bpb delta) that
some right claim of their record matches / all of them. The registry-restricted precision counts only claims whose
knob a registry intervention moves (the rows the calibration and ranking could use).

``cutoff``: the figures are given overall and on the records dated after the cutoff (rules written against the
records up to it are scored once on the later ones).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scripts.causal.core.schema import EvidenceEntry, VerifiedRecord
from scripts.causal.dag.effects import _direction
from scripts.causal.extract.row_gates import half_unit

DELTA_TOL = 1.5e-4
CUTOFF = "2026-04-03"  # the miner's rules were written against records dated up to this day


@dataclasses.dataclass(frozen=True)
class TypingScore:
    """Precision of mined one-change claims and recall of verified single changes over a set of records."""

    n_records: int
    n_claims: int
    n_right: int
    precision: float | None
    n_registry_claims: int
    n_registry_right: int
    registry_precision: float | None
    n_single_change: int
    n_found: int
    recall: float | None
    wrong: tuple[str, ...]
    missed: tuple[str, ...]


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return True  # a value one side does not state is not a disagreement
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return str(a).lower() == str(b).lower()


def _knob_of(row: Mapping) -> str | None:
    feats = list(row.get("features") or ())
    return feats[0] if len(feats) == 1 else None


def reversed_row(row: Mapping) -> dict:
    """The same measurement read the other way: "1.0 -> 0.0, +0.003" is "0.0 -> 1.0, -0.003" (a sweep row measured
    against the record's chosen setting states the chosen setting's effect, reversed)."""
    d = row.get("delta_bpb")
    return {**row, "from_value": row.get("to_value"), "to_value": row.get("from_value"),
            "direction": -int(row.get("direction") or 1), "delta_bpb": None if d is None else -float(d)}


def claim_is_right(row: Mapping, entry: EvidenceEntry) -> bool:
    """A mined one-change row says what the verified entry says: a single change of that knob, that way."""
    if not entry.is_single_change or entry.knob is None or not same_knob(_knob_of(row), entry.knob):
        return False
    categorical = isinstance(entry.to_value, str) or isinstance(entry.from_value, str)
    if not categorical and int(row.get("direction") or 1) != _direction(entry.from_value, entry.to_value, entry.knob):
        return False  # a categorical level has no direction: its from and to values decide
    if isinstance(row.get("to_value"), bool) and isinstance(entry.to_value, str) and entry.from_value is None:
        return False  # "adds XSA" against "XSA -> all layers" from an unstated level: the entry may widen, not add
    return _same(row.get("from_value"), entry.from_value) and _same(row.get("to_value"), entry.to_value)


def same_knob(a: str | None, b: str | None) -> bool:
    """The same knob, named as a canonical feature or as the trainer field that sets it (bigram_hash / bigram_buckets,
    muon_weight_decay / muon_wd, qk_gain / qk_gain_init, ...)."""
    if a is None or b is None:
        return False
    from scripts.causal.screen.registry import FIELD_FEATURE

    return a == b or FIELD_FEATURE.get(a, a) == FIELD_FEATURE.get(b, b)


def _registry_knobs() -> set[str]:
    from scripts.causal.screen import registry as reg
    from train_gpt import Hyperparameters

    out = set()
    for iv in reg.list_interventions():
        if iv.transfer is None:
            continue
        if iv.feature:
            out.add(iv.feature)
        else:
            out |= set(reg.resolve_overrides(iv.name, Hyperparameters()))
    return out


BPB_PER_NAT = (0.3, 1.5)   # bits per byte per nat per token: 1 / (ln 2 x bytes per token), byte-level to sp8192+


def _delta_matches(d: float, entry: EvidenceEntry, tol: float) -> bool:
    """The mined bpb delta is the entry's: within ``tol`` of its bpb delta, or, for an entry the source states in
    nats only, the same sign at a bpb-per-nat ratio a tokenizer can have (the miner converts nats with the
    record's own ratio; the table keeps the figure as stated)."""
    if entry.delta_bpb is not None:
        return abs(d - entry.delta_bpb) <= tol
    if entry.delta_nats:
        ratio = d / entry.delta_nats
        return BPB_PER_NAT[0] <= ratio <= BPB_PER_NAT[1]
    return False


def score_typing(pred_records: Sequence[Mapping], table: Mapping[str, VerifiedRecord], *,
                 after: str | None = None) -> TypingScore:
    """Score the mined rows of the records in ``table`` (those dated after ``after`` when given)."""
    mined = {r.get("record_id"): r for r in pred_records}
    chosen = {rid: rec for rid, rec in table.items() if after is None or (rec.date or "") > after}
    reg_knobs = _registry_knobs()
    n_claims = n_right = n_reg = n_reg_right = n_single = n_found = 0
    wrong, missed = [], []
    for rid, rec in sorted(chosen.items()):
        rows = [a for a in (mined.get(rid) or {}).get("ablations") or () if a.get("kind") == "ablation"
                and a.get("delta_bpb") is not None and _knob_of(a)]
        right_entries: set[int] = set()
        for row in rows:
            tol = max(DELTA_TOL, half_unit(float(row["delta_bpb"])))
            near, ok = [], []
            for r in (row, reversed_row(row)) if row.get("from_value") is not None else (row,):
                close = [e for e in rec.entries if _delta_matches(float(r["delta_bpb"]), e, tol)]
                near += [e for e in close if e not in near]
                ok += [e for e in close if claim_is_right(r, e) and e not in ok]
            n_claims += 1
            n_right += bool(ok)
            if _knob_of(row) in reg_knobs:
                n_reg += 1
                n_reg_right += bool(ok)
            right_entries |= {e.id for e in ok}
            if not ok:
                why = ("; ".join(f"#{e.id} {e.klass} {e.knob} {e.from_value!r}->{e.to_value!r}" for e in near)
                       or "no verified entry has this delta")
                wrong.append(f"{rid}: '{row.get('change')}' {row['delta_bpb']:+.5f} typed {_knob_of(row)} "
                             f"{row.get('from_value')!r}->{row.get('to_value')!r}: {why}")
        for e in rec.entries:
            if e.is_single_change and e.delta_bpb is not None and e.knob is not None:
                n_single += 1
                if e.id in right_entries:
                    n_found += 1
                else:
                    missed.append(f"{rid}#{e.id}: {e.knob} {e.from_value!r}->{e.to_value!r} {e.delta_bpb:+.5f} "
                                  f"'{e.change[:80]}'")
    rate = lambda k, n: k / n if n else None  # noqa: E731
    return TypingScore(n_records=len(chosen), n_claims=n_claims, n_right=n_right, precision=rate(n_right, n_claims),
                       n_registry_claims=n_reg, n_registry_right=n_reg_right,
                       registry_precision=rate(n_reg_right, n_reg), n_single_change=n_single, n_found=n_found,
                       recall=rate(n_found, n_single), wrong=tuple(wrong), missed=tuple(missed))
