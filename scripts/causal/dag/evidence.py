"""Evidence items for one candidate intervention: leaderboard ablation rows, our screen, observational effects.

Each item is a normal estimate of the candidate's delta val_bpb at target scale (< 0 = better) with an sd that
carries every discount, and a readable label. ``select_interventions`` combines them by precision with a
weak prior.

Leaderboard rows (typed by ``extract.row_types``, pooled by ``dag.effects.pool_ablations``). A row's sd is

    sd = metric_factor x stack_factor x sqrt(TAU^2 + SEED_SD^2 / n_seeds)

``TAU`` is the between-stack spread of one feature's effect (the same change measured on two different
record stacks), ``SEED_SD`` the seed noise of a difference of two single runs (n_seeds = 1 when the row does
not state it). ``metric_factor`` (``METRIC_FACTOR``) widens rows measured on a score our control does not
report (post-TTT) or not named; ``stack_factor`` = (1 + ``DISTANCE_STEP`` x features where the record's
stack differs from the control) x ``NON_RECORD_FACTOR`` for the non-record track. A numeric row measured in
the opposite direction of the candidate (9L -> 8L for a +2 layers candidate) enters with its sign flipped
and its sd x ``REVERSED_FACTOR``; a row whose from -> to interval shares no stretch with the candidate's
(11L -> 13L or 9L -> 8L for a 9L -> 11L candidate) is an extrapolation, sd x ``OUT_OF_RANGE_FACTOR`` too.

Rows of one record (the same stack and runs, often one result stated in a table and again in prose) enter as one
item: their mean, with the sd of the most precise row. When a candidate's rows disagree beyond their sds (binary-weight and JEPA studies next to record stacks), the
DerSimonian-Laird between-record variance tau^2 is added to every row's variance (random-effects pooling).

Our screen results enter with the sd of their CI, widened by 1 / agreement when the proxy-to-H100 transfer
agreement of the candidate's class is known; absent, undiscounted, and the label says so. Observational
effects enter only when the identifiability check says the feature is identified.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Sequence

from scripts.causal.core.schema import BASELINE_FEATURES, CandidateIntervention

TAU = 0.0015
SEED_SD = 0.0012
METRIC_FACTOR = {"post_quant": 1.0, "sliding": 1.0, "pre_quant": 1.15, "post_ttt": 1.3, "unknown": 1.2}
DISTANCE_STEP = 0.03
NON_RECORD_FACTOR = 2.0
REVERSED_FACTOR = 1.5
OUT_OF_RANGE_FACTOR = 2.0
#: Features whose leaderboard effect comes from a training length the proxy cannot represent.
SCALE_LIMITED = {
    "ema": "EMA averages over thousands of steps; leaderboard rows come from ~7k-20k-step record runs, the "
           "proxy screen runs a few hundred steps",
    "swa": "SWA averages checkpoints of a long warmdown; the proxy's short run has few to average",
    "warmdown_iters": "warmdown lengths are set for ~7k-20k-step runs; the proxy schedule is far shorter",
    "qat": "late QAT switches on near the end of a long run; the proxy has little run to switch on in",
}


@dataclasses.dataclass(frozen=True)
class EvidenceItem:
    """One estimate of the candidate's delta val_bpb (< 0 = better) with its discounted sd."""

    source: str  # "leaderboard", "experiments", "observational"
    mean: float
    sd: float
    label: str


def numeric_direction(c: CandidateIntervention) -> int | None:
    """+1 / -1 when the candidate raises / lowers a numeric feature from the baseline; None otherwise."""
    base = BASELINE_FEATURES.get(c.feature)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not isinstance(c.value, (int, float)):
        return None
    if c.value == base:
        return None
    return 1 if c.value > base else -1


def _row_matches(c: CandidateIntervention, row: Mapping) -> bool:
    """A categorical candidate takes rows whose new level is its own (or, untyped, whose text names it)."""
    if not isinstance(c.value, str):
        return True
    to = row.get("to_value")
    if isinstance(to, str):
        return to.lower() == c.value.lower()
    token = re.split(r"[_\d]", c.value.lower())[0]
    return bool(token) and token in str(row.get("change", "")).lower()


def leaderboard_items(c: CandidateIntervention, pooled: Mapping | None) -> tuple[list[EvidenceItem], list[str]]:
    """One item per typed leaderboard row about the candidate's feature (see the module docstring)."""
    items, notes, records = [], [], []
    if not pooled or not c.feature:
        return items, notes
    want = numeric_direction(c)
    is_numeric = c.feature in BASELINE_FEATURES and isinstance(BASELINE_FEATURES[c.feature], (int, float)) \
        and not isinstance(BASELINE_FEATURES[c.feature], bool)
    for row in pooled.get("rows", []):
        if not _row_matches(c, row):
            continue
        n = int(row.get("n_seeds") or 1)
        metric = str(row.get("metric") or "unknown")
        dist = row.get("distance")
        factor = METRIC_FACTOR.get(metric, METRIC_FACTOR["unknown"]) * (1 + DISTANCE_STEP * (dist or 0))
        if str(row.get("track") or "").startswith("track_non_record"):
            factor *= NON_RECORD_FACTOR
        mean = float(row["delta_bpb"])  # effect of adding / increasing the feature
        how = ""
        if is_numeric:
            if want is None:
                notes.append(f"row '{_short(row)}' not used: the candidate's direction of {c.feature} is unknown")
                continue
            if want < 0:
                mean = -mean
            if int(row.get("direction") or 1) != want:
                factor *= REVERSED_FACTOR
                how = f", opposite direction: sign flipped, sd x{REVERSED_FACTOR}"
            if not _overlaps(row, c):  # another region of the knob (a reversed row usually is)
                factor *= OUT_OF_RANGE_FACTOR
                how += f", outside the candidate's range {BASELINE_FEATURES[c.feature]} -> {c.value}: sd x{OUT_OF_RANGE_FACTOR}"
        sd = factor * math.sqrt(TAU**2 + SEED_SD**2 / n)
        seeds = f"{n} seed{'s' if n > 1 else ''}" if row.get("n_seeds") else "seeds not stated (1 assumed)"
        frm_to = (f", {row.get('from_value')} -> {row.get('to_value')}"
                  if row.get("from_value") is not None or row.get("to_value") is not None else "")
        label = (f"{row.get('record_id')}: '{_short(row)}' {mean:+.4f} ({seeds}, metric {metric}, "
                 f"{dist if dist is not None else '?'} features from control{frm_to}{how}; sd {sd:.4f})")
        items.append(EvidenceItem("leaderboard", mean, sd, label))
        records.append(str(row.get("record_id")))
    items = _one_per_record(items, records)
    tau2 = dersimonian_laird_tau2([(it.mean, it.sd) for it in items])
    if tau2 > 0:
        items = [dataclasses.replace(it, sd=math.sqrt(it.sd**2 + tau2),
                                     label=f"{it.label[:-1]}, with tau {math.sqrt(it.sd**2 + tau2):.4f})")
                 for it in items]
        notes.append(f"leaderboard rows disagree beyond their sds: between-record spread tau {math.sqrt(tau2):.4f} "
                     "(DerSimonian-Laird) added to each row's sd")
    return items, notes


def _one_per_record(items: list[EvidenceItem], records: list[str]) -> list[EvidenceItem]:
    """Rows of one record share its stack and runs: they enter as one item (their mean, the sd of its most precise
    row), so a record that states a result twice (table and prose) is not counted twice."""
    by: dict[str, list[EvidenceItem]] = {}
    for it, rid in zip(items, records, strict=True):
        by.setdefault(rid, []).append(it)
    out = []
    for group in by.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        mean = sum(it.mean for it in group) / len(group)
        sd = min(it.sd for it in group)
        out.append(EvidenceItem("leaderboard", mean, sd, f"one record, {len(group)} rows, mean {mean:+.4f}, sd {sd:.4f}: "
                                + " | ".join(it.label for it in group)))
    return out


def dersimonian_laird_tau2(rows: Sequence[tuple[float, float]]) -> float:
    """Between-study variance of (mean, sd) estimates by DerSimonian-Laird; 0 for fewer than two rows."""
    if len(rows) < 2:
        return 0.0
    w = [1 / sd**2 for _, sd in rows]
    sw = sum(w)
    mean = sum(wi * x for wi, (x, _) in zip(w, rows, strict=True)) / sw
    q = sum(wi * (x - mean) ** 2 for wi, (x, _) in zip(w, rows, strict=True))
    denom = sw - sum(wi**2 for wi in w) / sw
    return max(0.0, (q - (len(rows) - 1)) / denom) if denom > 0 else 0.0


def _overlaps(row: Mapping, c: CandidateIntervention) -> bool:
    """Whether a numeric row's from -> to interval shares more than a point with the candidate's baseline -> value
    (a row without both values is taken to overlap)."""
    a, b = row.get("from_value"), row.get("to_value")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return True
    lo, hi = sorted((float(BASELINE_FEATURES[c.feature]), float(c.value)))
    return min(hi, max(a, b)) - max(lo, min(a, b)) > 0


def _short(row: Mapping) -> str:
    text = " ".join(str(row.get("change", "")).split())
    return text if len(text) <= 60 else text[:57] + "..."


def screen_item(c: CandidateIntervention, row: Mapping | None, *, transfer: Mapping | None,
                klass: str, default_sd: float) -> tuple[EvidenceItem | None, str | None]:
    """Our own paired result (any decision, inconclusive included) as one item, with the transfer discount."""
    if not row or row.get("mean_delta_bpb") is None:
        return None, None
    lo, hi = row.get("ci_low"), row.get("ci_high")
    sd = (hi - lo) / (2 * 1.96) if lo is not None and hi is not None and hi > lo else default_sd
    agree = _agreement(transfer, klass, c.name)
    if agree is None:
        note = f"proxy-to-H100 transfer of class '{klass}' not measured: screen result not discounted"
    else:
        sd = sd / max(agree, 1e-3)
        note = f"proxy-to-H100 agreement of class '{klass}' {agree:.2f}: screen sd x{1 / max(agree, 1e-3):.2f}"
    decision = row.get("decision") or "no decision yet"
    label = (f"our screen {float(row['mean_delta_bpb']):+.4f} (CI {_fmt(lo)}..{_fmt(hi)}, {decision}"
             f"{', n=' + str(row['n_pairs']) if row.get('n_pairs') else ''}; sd {sd:.4f})")
    return EvidenceItem("experiments", float(row["mean_delta_bpb"]), sd, label), note


def _fmt(v) -> str:
    return "?" if v is None else f"{float(v):+.4f}"


def _agreement(transfer: Mapping | None, klass: str, name: str) -> float | None:
    if not transfer:
        return None
    for key in (name, klass):
        v = transfer.get(key)
        if isinstance(v, Mapping):
            v = v.get("agreement")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"transfer agreement for '{key}' must lie in [0, 1], got {v}")
            return float(v)
    return None


def observational_item(c: CandidateIntervention, eff: Mapping | None, identifiability: Mapping | None,
                       decrease_words: Sequence[str]) -> tuple[EvidenceItem | None, str | None]:
    """The DAG stage's adjusted estimate, only where the feature is identified and the estimate reliable."""
    if eff is None or not eff.get("se"):
        return None, None
    mu, sd = float(eff["estimate"]), float(eff["se"])
    scale_note = ""
    if eff.get("unit", "0 -> 1") != "0 -> 1":
        base = BASELINE_FEATURES.get(c.feature)
        if isinstance(c.value, (int, float)) and isinstance(base, (int, float)) and eff.get("scale"):
            steps = (float(c.value) - float(base)) / float(eff["scale"])
            scale_note = f" per SD x {steps:+.2f} SD ({c.feature} {base} -> {c.value})"
        else:
            steps = -1.0 if any(k in c.name.lower() for k in decrease_words) else 1.0
            scale_note = f" per SD of {c.feature} ({'decrease' if steps < 0 else 'increase'} of 1 SD assumed)"
        mu, sd = mu * steps, sd * abs(steps)
    ident = identifiability or {}
    status = (ident.get("verdict") or {}).get("status", "identified")
    per = (ident.get("per_feature") or {}).get(c.feature) or {}
    if status == "under_identified":
        return None, f"observational {mu:+.4f} ±{sd:.4f} not used (matrix under-identified)"
    if per and not per.get("identifiable", True):
        return None, f"observational {mu:+.4f} not used ({c.feature} not identified)"
    if not eff.get("reliable", True) or not eff.get("adjustment_valid", True):
        return None, f"observational {mu:+.4f} not used ({eff.get('note', 'no valid adjustment set')})"
    return EvidenceItem("observational", mu, sd, f"observational {mu:+.4f}{scale_note} ±{sd:.4f} "
                                                 f"(n={eff.get('n')}, {c.feature} identified)"), None
