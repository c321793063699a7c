"""Experiment logs (``| Run | Config | val_bpb |``, run ids in column 0): which run each run is measured against.

A log with a parent column (``| Run | Parent | Change | BPB |``) says each run's reference itself. A log without a
delta column or a parent column says what each run is compared with only through its layout. The rules, in order
(``references``):

1. the label names a run ("R34 + EMA@60%"): that run;
2. a "+ X" run (an increment, even where it starts a sweep): the row above when that is an increment too, else
   the best run of the sweep the row above belongs to ("+ Grad clip 1.0" after an LR sweep builds on the sweep's
   best LR, not on its last row);
3. the run belongs to a **sweep** (consecutive runs that set one key to different values, "Cosine LR=0.002",
   "Cosine LR=0.004", ...; a later run may leave out words the first states, "LR=0.003" after "LR=0.002, 65k
   batch"): the sweep's best run, as a sweep table's bold row. The best run itself is measured against nothing;
4. a **sibling**: when this run and the run above both extend one earlier run by one setting ("Mode 2 + EMA@0%"
   after "Mode 2 + EMA@60%", both on "Mode 2"), that earlier run;
5. an **override log**: the first run is the base (its label sets nothing: "— (dev baseline)") and every later label
   only sets knobs, with no "+" (``| d1 | TRAIN_BATCH_TOKENS=65536 (from 98304) |``, ``| d3 | MIN_LR=0.0 |``):
   each run overrides the base, so the base is every run's reference (this rule comes before 3 and 4);
6. else the row above.

Two runs of fewer than ``SMOKE_STEPS`` steps each are size or speed checks (``SMOKE``): their scores say nothing
about a change. A run whose label states a seed its reference's label does not ("EMA off (seed 42)" in a seed-1337
log) differs in seed as well (``OWN_SEED``).

A "+ K v" run that does not restate K's old value takes it from the nearest run up its chain of references that
sets K ("+ Momentum 0.80" on a chain through "+ Momentum 0.85": 0.85 -> 0.80).

``increment_between``: a summary table elsewhere in the README ("| Momentum | val_bpb |") may compare two runs
that the log shows are not one step apart; when the later run's chain passes an increment ("+ Seq len schedule")
made after the earlier run, the pair differs in more than the table's one column.
"""
from __future__ import annotations

import dataclasses
import re

from scripts.causal.core.schema import AblationRow
from scripts.causal.extract.table_shapes import (
    clean,
    label_items,
    log_change,
    log_reference,
    other_settings,
    parent_column,
    trim_common,
)

__all__ = ["LOG_BETWEEN", "ONE_SETTING", "OWN_SEED", "SMOKE", "LogIndex", "LogRef", "increment_between",
           "increment_between_runs", "log_index", "log_rows", "references"]

_SETTING = re.compile(r"^(.*?)\s*=\s*(-?\d+(?:\.\d+)?)$")


@dataclasses.dataclass(frozen=True)
class LogRef:
    """Run ``index`` is measured against run ``ref`` (None: against nothing), for the reason ``how``; ``label`` is
    the run's label as the change ("+ EMA@60%" when the label named its reference run)."""

    index: int
    ref: int | None
    how: str
    label: str


LogIndex = tuple[list[str], list[float], list[LogRef]]   # a log's labels, scores and references


def _sweep_key(label: str) -> tuple[str, str, frozenset[str]] | None:
    """(key, value, the other words) of a label that sets exactly one ``KEY=VALUE`` (or "Word value") setting."""
    items = label_items(label)
    settings = [(_SETTING.match(it), it) for it in items]
    found = [(m.group(1), m.group(2)) for m, _ in settings if m]
    if len(found) != 1:
        return None
    words = frozenset(w for m, it in settings if not m for w in re.findall(r"\w+", it))
    return found[0][0], found[0][1], words


def _sweeps(labels: list[str], scores: list[float]) -> dict[int, int]:
    """Run index -> the best run of the sweep it belongs to (rule 3 of the module docstring)."""
    keys = [_sweep_key(lbl) for lbl in labels]
    out: dict[int, int] = {}
    k = 0
    while k < len(labels):
        if keys[k] is None:
            k += 1
            continue
        key, _, words = keys[k]
        m = k + 1
        while m < len(labels) and keys[m] and keys[m][0] == key and keys[m][2] <= words \
                and not labels[m].lstrip().startswith("+"):
            m += 1
        block = range(k, m)
        if len(block) >= 2 and len({keys[j][1] for j in block}) == len(block):
            best = min(block, key=lambda j: scores[j])
            out.update({j: best for j in block})
        k = m
    return out


_OVERRIDES = re.compile(r"(?:[A-Z][A-Z0-9_]{2,}\s*=\s*[\w.+-]+[\s,;]*)+")


def _override_base(labels: list[str]) -> int | None:
    """Rule 5: 0 when run 0 sets nothing and every later run only sets KEY=VALUE knobs, else None."""
    bare = [re.sub(r"\([^)]*\)", " ", clean(lbl)).strip() for lbl in labels]
    if len(bare) < 3 or _OVERRIDES.search(bare[0]) or "=" in bare[0]:
        return None
    return 0 if all(_OVERRIDES.fullmatch(b) for b in bare[1:]) else None


def _sibling_base(labels: list[str], k: int) -> int | None:
    """The earlier run that both run ``k`` and the run above extend by one setting (rule 4), else None."""
    if k < 2:
        return None
    mine, above = set(label_items(labels[k])), set(label_items(labels[k - 1]))
    if len(mine) < 2 or len(mine) != len(above) or len(mine - above) != 1:
        return None
    for j in range(k - 2, -1, -1):
        base = set(label_items(labels[j]))
        if len(base) == len(mine) - 1 and base < mine and base < above:
            return j
    return None


def references(cells: list[list[str]], labels: list[str], scores: list[float],
               parent_col: int | None = None) -> list[LogRef]:
    """The reference of every run of a log (``cells``: its rows, column 0 the run ids), by the module's rules; a
    log with a parent column (``table_shapes.parent_column``) says each run's reference itself."""
    sweeps = _sweeps(labels, scores)
    ids = {clean(r[0]).lower(): j for j, r in enumerate(cells) if r}
    overridden = _override_base(labels) if parent_col is None else None
    out = []
    for k, label in enumerate(labels):
        if overridden is not None:
            out.append(LogRef(k, None if k == overridden else overridden,
                              f"vs run {_id(cells, overridden)}, the base each override row changes (experiment log)",
                              label))
            continue
        if parent_col is not None:
            parent = clean(cells[k][parent_col]).lower() if len(cells[k]) > parent_col else ""
            j = ids.get(parent)
            out.append(LogRef(k, j, f"vs run {_id(cells, j)}, its parent column (experiment log)" if j is not None
                              else "the log's base run (no parent)", label))
            continue
        if k == 0 and k not in sweeps:
            out.append(LogRef(0, None, "the log's first run", label))
            continue
        j, change, how = log_reference(cells, k, label)
        if how.startswith("vs run"):
            out.append(LogRef(k, j, how, change))
        elif label.lstrip().startswith("+") and k:
            above = labels[k - 1].lstrip().startswith("+")
            j = k - 1 if above else sweeps.get(k - 1, k - 1)
            how = "vs row above (experiment log)" if j == k - 1 else \
                f"vs run {_id(cells, j)}, the best run of the sweep above (experiment log)"
            out.append(LogRef(k, j, how, label))
        elif k in sweeps:
            best = sweeps[k]
            out.append(LogRef(k, None if best == k else best, f"vs run {_id(cells, best)}, {SWEEP_BEST}", label))
        elif (base := _sibling_base(labels, k)) is not None:
            out.append(LogRef(k, base, f"vs run {_id(cells, base)}, which the run above extends too (experiment "
                                       "log)", label))
        else:
            out.append(LogRef(k, k - 1, "vs row above (experiment log)", label))
    return out


def _id(cells: list[list[str]], j: int) -> str:
    return clean(cells[j][0]) if cells[j] else f"row {j + 1}"


def _inherited(refs: list[LogRef], labels: list[str], k: int, key: str) -> tuple[str, int] | None:
    """The nearest setting of ``key`` up run ``k``'s chain of references: (its item, run index)."""
    seen, j = set(), refs[k].ref
    while j is not None and j not in seen:
        seen.add(j)
        for it in label_items(labels[j]).values():
            m = _SETTING.match(it)
            if m and m.group(1).lower() == key.lower():
                return it, j
        j = refs[j].ref
    return None


def increment_between(refs: list[LogRef], labels: list[str], earlier: int, later: int) -> str | None:
    """The label of a "+ X" increment on run ``later``'s chain made after run ``earlier`` (the two runs differ in
    more than one setting), else None."""
    seen, j = set(), refs[later].ref
    while j is not None and j > earlier and j not in seen:
        seen.add(j)
        if labels[j].lstrip().startswith("+"):
            return labels[j]
        j = refs[j].ref
    return None


SWEEP_BEST = "the best run of its sweep (experiment log)"
LOG_BETWEEN = "the run log has an increment between the two runs"
ONE_SETTING = "the one setting the labels differ in"   # "10L 1024 BPE" vs "11L 1024 BPE": 10L against 11L
SMOKE_STEPS = 100
SMOKE = f"both runs under {SMOKE_STEPS} steps"   # a size or speed check: the score measures no change
OWN_SEED = "the run states a seed its reference does not"   # "EMA off (seed 42)" against a seed-1337 run
_SEED = re.compile(r"\bseed\s*=?\s*(\d+)\b", re.I)


def _int(cell: str) -> int | None:
    m = re.fullmatch(r"\s*(\d[\d,]*)\s*", clean(cell))
    return int(m.group(1).replace(",", "")) if m else None


def log_index(cells: list[list[str]], vals: list[tuple[str, float]], parent_col: int | None = None) -> LogIndex:
    """(labels, scores, references) of a log: computed once, read by ``log_rows`` and ``increment_between_runs``."""
    labels, scores = [v[0] for v in vals], [v[1] for v in vals]
    return labels, scores, references(cells, labels, scores, parent_col)


def increment_between_runs(logs: list[LogIndex], a: float, b: float) -> str | None:
    """The increment between the runs scored ``a`` and ``b`` in a log that holds each score exactly once
    (``increment_between``), else None: a score found twice, or in no log, says nothing."""
    for labels, scores, refs in logs:
        ia, ib = ([i for i, s in enumerate(scores) if abs(s - x) < 1e-9] for x in (a, b))
        if len(ia) == 1 and len(ib) == 1 and ia != ib:
            found = increment_between(refs, labels, min(ia[0], ib[0]), max(ia[0], ib[0]))
            if found:
                return found
    return None


def _other_length(a: str, b: str) -> bool:
    """Two step counts of two runs differ as run lengths: by 2% or more ("6,930" and "6,918" under one wallclock
    cap are one length, the cap's jitter; "6,915" and "6,410" on a slower node are not)."""
    x, y = _int(a), _int(b)
    if x is None or y is None:
        return clean(a) != clean(b)
    return abs(x - y) >= 0.02 * max(x, y, 1)


def log_rows(header: list[str], cells: list[list[str]], index: LogIndex, heading: str, label_col: int,
             bpb_col: int) -> list[AblationRow]:
    """One row per run with a reference (``index``: the log's ``log_index``); a run that also differs in another
    configuration column, or in its step count, carries that difference in its label (a bundle)."""
    labels, scores, refs = index
    steps = [j for j, h in enumerate(header) if re.fullmatch(r"steps?|iters?|iterations", clean(h), re.I)]
    out = []
    for r in refs:
        if r.ref is None:
            continue
        k, j, change, how = r.index, r.ref, r.label, r.how
        ref_label = labels[j]
        seed = _SEED.search(labels[k])
        if seed and not re.search(rf"\bseed\s*=?\s*{seed.group(1)}\b", ref_label, re.I):
            how += f"; {OWN_SEED} ({seed.group(0)})"
        if SWEEP_BEST in how:   # a sweep's runs differ in the swept setting only (later runs inherit the rest)
            diff = trim_common(*(next(it for it in label_items(x).values() if _SETTING.match(it))
                                 for x in (change, ref_label)))
        else:
            diff = log_change(change, ref_label)
        if diff is not None:   # the labels differ in one setting: that setting is the change (and the value it
            was = re.search(rf"{re.escape(diff[0])}\s*(\((?:from|was|previously)\s+[^)]*\))", change, re.I)  # replaced)
            change, ref_label = diff[0] + (f" {was.group(1)}" if was else ""), diff[1] or ref_label
            how += f"; {ONE_SETTING}"
        elif change.lstrip().startswith("+") and len(label_items(change)) == 1:
            change = "+ " + next(iter(label_items(change).values()))   # "+ Momentum 0.80" -> "+ Momentum=0.80"
            m = _SETTING.match(change[2:])
            old = _inherited(refs, labels, k, m.group(1)) if m else None
            if old is not None:   # the old value, from the run up the chain that set it
                ref_label = old[0]
                how += f"; {m.group(1)} was {old[0].split('=')[-1]} since run {_id(cells, old[1])}"
        others = other_settings(header, cells[j], cells[k], (0, label_col, bpb_col, parent_column(header, cells)))
        others += [(clean(header[c]), clean(cells[j][c]), clean(cells[k][c])) for c in steps
                   if c < min(len(cells[j]), len(cells[k])) and _other_length(cells[j][c], cells[k][c])]
        if others:
            change += f" (also differs in {', '.join(f'{h} {a}/{b}' for h, a, b in others)})"
            how += "; other columns differ"
        counts = [_int(cells[i][c]) for c in steps for i in (j, k) if c < len(cells[i])]
        if counts and all(n is not None and n < SMOKE_STEPS for n in counts):
            how += f"; {SMOKE}"
        out.append(AblationRow(change=change, delta_bpb=round(scores[k] - scores[j], 8), reference=ref_label,
                               source=f"README table '{heading}' ({how})"))
    return out
