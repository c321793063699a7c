"""A record against its base record, read as one change only when the README's table and both records' logs agree.

A this-vs-base table (``| Component | PR #1394 | This PR |`` with a score row) compares a whole record with its
base: ``row_types`` leaves its score row as ``record_vs_base``. It is one change when

1. the table's component rows (not scores, sizes or times) differ in exactly one row, leaving out rows of a stage
   the score comes before (TTT rows under a "sliding no-TTT" score);
2. the two records' logged hyperparameters (the ``Hyperparameters:`` block every late trainer prints,
   ``records.log_dump``) differ in exactly one field, with the same stage rule, and not in the parameter count (a
   code change the config does not show);
3. that field is the knob the table row names, and the row's two cells hold the two logged values.

A README can claim a change its logs do not show (a default changed in code while the base's run command already set
the new value): such a row stays a comparison of two records. Run paths, seeds, ranks and log names differ between
any two runs and are left out (``stable_dump``).
"""
from __future__ import annotations

import dataclasses
import re

from scripts.causal.core.schema import AblationRow
from scripts.causal.extract import records as rp
from scripts.causal.extract.ablations import NOT_QUALITY, markdown_tables
from scripts.causal.extract.knobs import NOT_A_CHANGE, knob_setting
from scripts.causal.extract.table_shapes import clean, this_base_columns

__all__ = ["MIN_DUMP_KEYS", "confirm_base_rows", "dump_diff", "stable_dump", "table_changes"]

MIN_DUMP_KEYS = 10  # a block shorter than this is a log's own summary, not the trainer's config
_RUN_FIELDS = re.compile(r"^(?:run_id|logfile|log_file|rank|local_rank|world_size|is_main_process|distributed|"
                         r"grad_accum_steps|device|\w*_(?:dir|path|files?))$")
_PATHLIKE = re.compile(r"[/\\]|\.(?:bin|model|pt|ptz|txt|log|json)$")
_PARAM_COUNT = re.compile(r"params$|param_count|n_params")
_TTT = re.compile(r"(?:^|_|\b)ttt(?:_|\b|$)|test[\s-]time", re.I)
_BEFORE_TTT = ("pre_quant", "post_quant", "sliding")   # scores taken before any test-time training
_OUTCOME = re.compile(rf"{NOT_QUALITY.pattern}|bp[bp]|\bloss\b|delta|δ|Δ|improv|score|\bseeds?\b|nats?\b", re.I)
_SAME = re.compile(r"\(same\)|^\W*(?:same|unchanged|identical)\W*$", re.I)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def stable_dump(logs: dict[str, str]) -> dict[str, str] | None:
    """The hyperparameters a record's logs all print with one value (the per-seed fields drop out); None when no
    log prints a ``Hyperparameters:`` block of ``MIN_DUMP_KEYS`` or more fields."""
    dumps = [d for d in (rp.log_dump(t) for t in logs.values()) if len(d) >= MIN_DUMP_KEYS]
    if not dumps:
        return None
    keys = set(dumps[0]).intersection(*dumps[1:])
    return {k: dumps[0][k] for k in sorted(keys) if all(d[k] == dumps[0][k] for d in dumps)}


def dump_diff(base: dict[str, str], this: dict[str, str], *, before_ttt: bool) -> dict[str, tuple] | None:
    """Fields whose logged values differ (a field only one side prints counts, with None on the other); run fields,
    paths and seeds left out, and TTT fields too when the score is taken before TTT. None when the parameter
    counts differ: the code changed the model in a way no field records."""
    out = {}
    for k in sorted(set(base) | set(this)):
        a, b = base.get(k), this.get(k)
        if a == b:
            continue
        if _PARAM_COUNT.search(k):
            return None
        if k in NOT_A_CHANGE or k == "seed" or _RUN_FIELDS.match(k) or any(_PATHLIKE.search(v or "") for v in (a, b)):
            continue
        if before_ttt and _TTT.search(k):
            continue
        out[k] = (a, b)
    return out


def table_changes(readme: str, heading: str, *, before_ttt: bool) -> list[tuple[str, str, str]] | None:
    """(label, base cell, this cell) of the component rows that differ in the this-vs-base table under
    ``heading``; None when there is no such table."""
    for header, rows, head in markdown_tables(readme):
        this_col, base_col = this_base_columns(header)
        if head != heading or this_col is None or base_col is None:
            continue
        out = []
        for r in rows:
            if len(r) <= max(this_col, base_col):
                continue
            label, base, this = clean(r[0]), clean(r[base_col]), clean(r[this_col])
            if _OUTCOME.search(label) or _SAME.search(this) or base == this:
                continue
            if before_ttt and _TTT.search(f"{label} {base} {this}"):
                continue
            out.append((label, base, this))
        return out
    return None


def _value(cell: str) -> float | None:
    nums = _NUMBER.findall(cell)
    return float(nums[0]) if len(nums) == 1 else None


def _one_change(row: AblationRow, readme: str, base: dict[str, str], this: dict[str, str]) -> AblationRow | None:
    heading = re.search(r"table '([^']*)' \(this vs base\)", row.source)
    if heading is None or row.delta_bpb is None:
        return None
    before_ttt = row.metric in _BEFORE_TTT
    changes = table_changes(readme, heading.group(1), before_ttt=before_ttt)
    diff = dump_diff(base, this, before_ttt=before_ttt)
    if not changes or len(changes) != 1 or not diff or len(diff) != 1:
        return None
    (label, base_cell, this_cell), ((field, (a, b)),) = changes[0], diff.items()
    named = knob_setting(f"{label} = 1")
    if named is None or named[0] != field or a is None or b is None:
        return None
    try:
        frm, to = float(a), float(b)
    except ValueError:
        return None
    if _value(base_cell) != frm or _value(this_cell) != to:
        return None
    from scripts.causal.extract.row_types import NUMERIC_FEATURES
    from scripts.causal.screen.registry import FIELD_FEATURE

    knob = FIELD_FEATURE[field] if FIELD_FEATURE.get(field) in NUMERIC_FEATURES else field
    as_num = (lambda v: int(v) if v.is_integer() and "." not in a + b else v)
    stage = " (TTT settings aside: the score is taken before TTT)" if before_ttt else ""
    return dataclasses.replace(
        row, kind="ablation", features=(knob,), from_value=as_num(frm), to_value=as_num(to),
        direction=1 if to > frm else -1,
        note=f"the record against its base record: the table's one changed component ({label}) is the one field "
             f"their logged hyperparameters differ in{stage}")


def confirm_base_rows(rows, readme: str, this: dict[str, str] | None,
                      base: dict[str, str] | None) -> tuple[AblationRow, ...]:
    """``rows`` with each this-vs-base score row retyped as one change where table and logs agree (module doc);
    ``this`` / ``base``: the two records' ``stable_dump``. Other rows pass unchanged."""
    rows = tuple(rows)
    if not this or not base:
        return rows
    return tuple((_one_change(r, readme, base, this) or r) if r.kind == "record_vs_base" else r for r in rows)
