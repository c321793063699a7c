"""Evidence items for one candidate intervention: verified H100 rows, within-lineage contrasts, our screen.

Each item is a normal estimate of the candidate's delta val_bpb at target scale (< 0 = better) with an sd that
carries every discount, and a readable label. ``select_interventions`` combines them by precision with a
weak prior. No cross-record association enters: the leaderboard's records with and without a feature differ in
date and in many other changes (``dag.identifiability``).

Verified rows (``dag.effects.pool_verified``: single-change entries of the verified evidence table). A row the
candidate makes exactly (the table names this intervention, and ``evidence.expresses`` confirms the knob, direction
and size) enters at full weight, sign-flipped when it was measured the other way round; a row with the same knob
values whose reader named no or another intervention (LoRA TTT of another recipe, XSA on 3 layers) is a variant,
sd x ``OUT_OF_RANGE_FACTOR``. A numeric row of the same knob over another stretch (11L -> 12L for a
+2 layers candidate) enters discounted (``OUT_OF_RANGE_FACTOR``, and ``REVERSED_FACTOR`` when it goes the other
way); a categorical or on/off row of another level or variant does not enter. A row's sd is

    sd = metric_factor x stack_factor x sqrt(TAU^2 + SEED_SD^2 / n_seeds)

``TAU`` is the between-stack spread of one feature's effect (the same change measured on two different
record stacks), ``SEED_SD`` the seed noise of a difference of two single runs (n_seeds = 1 when the row does
not state it). ``metric_factor`` (``METRIC_FACTOR``) widens rows measured on a score our control does not
report (TTT) or not named; ``stack_factor`` = (1 + ``DISTANCE_STEP`` x features where the row's stack differs
from the control stack) x ``NON_RECORD_FACTOR`` for the non-record track x ``OTHER_HARDWARE_FACTOR`` for rows
not measured on 8xH100.

Rows of one record (the same stack and runs, often one result stated in a table and again in prose) enter as one
item: their mean, with the sd of the most precise row. When a candidate's rows disagree beyond their sds, the
DerSimonian-Laird between-record variance tau^2 is added to every row's variance (random-effects pooling).

Within-lineage contrasts (a record against its stated base, differing in the candidate's feature alone among the
canonical features, with a Welch interval) enter with sd = sqrt(se^2 + ``LINEAGE_TAU``^2): the two records may
differ in changes no canonical feature names. Our screen results enter with the sd of their CI, widened by
1 / agreement when the proxy-to-H100 transfer agreement of the candidate's class is known; absent, undiscounted,
and the label says so.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Sequence

from scripts.causal.core.schema import BASELINE_FEATURES, CandidateIntervention

TAU = 0.0015
SEED_SD = 0.0012
METRIC_FACTOR = {"post_quant": 1.0, "sliding": 1.0, "pre_quant": 1.15, "post_ttt": 1.3, "ttt": 1.3, "unknown": 1.2}
DISTANCE_STEP = 0.03
NON_RECORD_FACTOR = 2.0
OTHER_HARDWARE_FACTOR = 2.0
LINEAGE_TAU = 0.005  # bpb: what changes outside the canonical features may add to a record-vs-base contrast
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


def _exact(c: CandidateIntervention, row: Mapping):
    """``evidence.expresses`` of a registry candidate on a row, or None when the candidate is not registered."""
    from scripts.causal.evidence.expresses import expresses
    from scripts.causal.screen import registry as reg

    try:
        reg.get_intervention(c.name)
    except Exception:  # noqa: BLE001 - an ad-hoc candidate (tests, combinations) has no registry entry
        return None
    return expresses(c.name, row.get("knob") or c.feature, row.get("from_value"), row.get("to_value"))


def leaderboard_items(c: CandidateIntervention, pooled: Mapping | None) -> tuple[list[EvidenceItem], list[str]]:
    """One item per verified row about the candidate's knob (see the module docstring)."""
    items, notes, records = [], [], []
    if not pooled:
        return items, notes
    want = numeric_direction(c)
    is_numeric = c.feature in BASELINE_FEATURES and isinstance(BASELINE_FEATURES[c.feature], (int, float)) \
        and not isinstance(BASELINE_FEATURES[c.feature], bool)
    for row in pooled.get("rows", []):
        expr = _exact(c, row)
        n = int(row.get("n_seeds") or 1)
        metric = str(row.get("metric") or "unknown")
        dist = row.get("distance")
        factor = METRIC_FACTOR.get(metric, METRIC_FACTOR["unknown"]) * (1 + DISTANCE_STEP * (dist or 0))
        if str(row.get("track") or "").startswith("track_non_record"):
            factor *= NON_RECORD_FACTOR
        if row.get("hardware") not in (None, "8xH100"):
            factor *= OTHER_HARDWARE_FACTOR
        variant = "intervention" in row and row["intervention"] != c.name  # the reader named no / another entry
        if expr is not None and expr.ok:
            mean = -float(row["reported_delta_bpb"]) if expr.reversed else float(row["reported_delta_bpb"])
            how = ", the candidate's exact change" + (" measured the other way round (sign flipped)"
                                                      if expr.reversed else "")
            if variant:  # same knob values, but the verified table says it is not this registry entry's recipe
                factor *= OUT_OF_RANGE_FACTOR
                how = (f", a variant of the candidate's change (the verified table names "
                       f"{row['intervention'] or 'no registry intervention'}): sd x{OUT_OF_RANGE_FACTOR}")
        elif not _row_matches(c, row) or (expr is not None and not is_numeric):
            continue  # another level or variant of a categorical / on-off knob says nothing about this one
        elif not is_numeric:  # an unregistered candidate (a combination part): the row's effect of adding
            mean, how = float(row["delta_bpb"]), ""
        else:
            mean = float(row["delta_bpb"])  # effect of increasing the feature
            how = ""
            if want is None:
                notes.append(f"row '{_short(row)}' not used: the candidate's direction of {c.feature} is unknown")
                continue
            if want < 0:
                mean = -mean
            if int(row.get("direction") or 1) != want:
                factor *= REVERSED_FACTOR
                how = f", opposite direction: sign flipped, sd x{REVERSED_FACTOR}"
            factor *= OUT_OF_RANGE_FACTOR
            how += f", another stretch than the candidate's {BASELINE_FEATURES[c.feature]} -> {c.value}: sd x{OUT_OF_RANGE_FACTOR}"
        sd = factor * math.sqrt(TAU**2 + SEED_SD**2 / n)
        seeds = f"{n} seed{'s' if n > 1 else ''}" if row.get("n_seeds") else "seeds not stated (1 assumed)"
        frm_to = (f", {row.get('from_value')} -> {row.get('to_value')}"
                  if row.get("from_value") is not None or row.get("to_value") is not None else "")
        hw = f", {row['hardware']}" if row.get("hardware") else ""
        label = (f"{row.get('record_id')}: '{_short(row)}' {mean:+.4f} ({seeds}, metric {metric}{hw}, "
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


def lineage_items(c: CandidateIntervention, contrasts: Sequence[Mapping]) -> list[EvidenceItem]:
    """Within-lineage contrasts (``dag.identifiability.lineage_contrasts``) of the candidate's feature and level, each
    with its Welch interval widened by ``LINEAGE_TAU``; contrasts without an interval do not enter."""
    out = []
    for k in contrasts:
        w = k.get("contrast")
        if k.get("feature") != c.feature or not w:
            continue
        frm, to = k.get("from_value"), k.get("to_value")
        row = {"from_value": frm, "to_value": to, "change": f"{k['record_id']} vs its base", "knob": c.feature}
        expr = _exact(c, row)
        if expr is not None and not expr.ok:
            continue
        sign = -1.0 if expr is not None and expr.reversed else 1.0
        sd = math.sqrt(float(w["se"]) ** 2 + LINEAGE_TAU**2)
        mean = sign * float(w["delta_bpb"])
        out.append(EvidenceItem("lineage", mean, sd, (
            f"within-lineage contrast {k['record_id']} vs its stated base {k['base']} ({c.feature} {frm} -> {to}): "
            f"{mean:+.4f} [{sign * w['ci_low']:+.4f}, {sign * w['ci_high']:+.4f}] (Welch, seeds {w['n'][0]}/{w['n'][1]}); "
            f"adjusts for {k['adjusts_for']}, not for {k['does_not_adjust_for']}: sd {sd:.4f}")))
    return out


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
        note = (f"proxy-to-H100 transfer of class '{klass}' not measured on enough verified rows: screen result not "
                "discounted")
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
            if v.get("verdict") in ("too_few_rows", "unmeasured"):
                return None  # one or two verified rows give an agreement of 0 or 1: no basis for a discount
            v = v.get("agreement")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"transfer agreement for '{key}' must lie in [0, 1], got {v}")
            return float(v)
    return None
