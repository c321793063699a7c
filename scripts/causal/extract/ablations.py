"""Ablation rows from a record README: markdown tables (here) and prose deltas (``extract.prose``).

Sign convention: ``delta_bpb`` < 0 means the change helped. Tables may give deltas (a Δ / delta / diff
column) or only absolute bpb values (then deltas are taken row to row for cumulative tables whose
labels start with "+", else against the first row). Prose like "-0.003 BPB" keeps its sign; a "+0.007
BPB" described as a gain/improvement is flipped. Deltas in nats are converted only when the record's
bpb-per-nat ratio is known (``nats_to_bpb``), else kept with ``delta_bpb`` None.
"""
from __future__ import annotations

import dataclasses
import re

from scripts.causal.core.schema import AblationRow
from scripts.causal.extract.knobs import knob_setting, knobs_set_in, trainer_default_reference
from scripts.causal.extract.prose import MAX_DELTA, list_sweeps, parent_lines, prose_ablations
from scripts.causal.extract.prose import NUM as _NUM
from scripts.causal.extract.prose import to_float as _to_float
from scripts.causal.extract.run_logs import LOG_BETWEEN, increment_between_runs, log_index, log_rows
from scripts.causal.extract.table_shapes import (
    ONE_COLUMN,
    OTHER_PARENT,
    before_after_columns,
    before_after_label,
    builds_on,
    column_pairs,
    config_columns,
    delta_header_run,
    eval_columns,
    is_log,
    label_column,
    log_reference,
    metric_pairs,
    other_settings,
    parent_column,
    this_base_columns,
)
from scripts.causal.extract.table_shapes import clean as _clean

NOT_QUALITY = re.compile(r"size|bytes|\bmb\b|time|ms/step|step_avg|\bsteps\b|params|memory|tok/s|throughput|"
                          r"artifact|speed|latency", re.I)
_RUN_FIRST = re.compile(r"\W*[A-Za-z]{1,3}[-_]?\d{1,3}[a-z]?\s*\+")   # "E2 + SmearGate": builds on run E2
_ALTERNATIVES = re.compile(r"^\W*(?:both|all (?:of (?:the above|them)|three|four)|combined|together)\b", re.I)
_SUMMARY = re.compile(r"^(?:total|net|sum|overall|combined|all)\b", re.I)


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]], str]]:
    """Every markdown table of ``text``: (header cells, body rows of cells, the heading above it)."""
    out = []
    lines = text.splitlines()
    i = 0
    heading = ""
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("#"):
            heading = s.lstrip("#").strip()
        if s.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-+:?\s*\|", lines[i + 1].strip()):
            header = [c.strip() for c in s.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append((header, rows, heading))
            continue
        i += 1
    return out


def _bpb_in(cell: str) -> float | None:
    m = re.search(r"(?<![\d.])(\d\.\d{3,8})(?![\d.])", cell)
    if m:
        v = float(m.group(1))
        return v if 0.5 < v < 4.5 else None
    return None


def table_ablations(text: str, *, nats_to_bpb: float | None = None) -> list[AblationRow]:
    rows_out: list[AblationRow] = []
    logs, checks = [], []   # the README's experiment logs; sweep rows to check against them (run_logs)
    for header, rows, heading in markdown_tables(text):
        header = _stage_headers(header, rows)
        low = [h.lower() for h in header]
        if len(header) < 2 or not rows:
            continue
        delta_col = next((j for j, h in enumerate(low) if re.search(r"δ|delta|diff|change vs|vs\.? |gain|improv|"
                                                                    r"effect|impact|\bd ?bpb", h)), None)
        bpb_col = next((j for j, h in enumerate(low) if re.search(r"bp[bp]", h) and j != delta_col),
                       next((j for j, h in enumerate(low) if re.search(r"score|loss", h) and j != delta_col), None))
        label_col = label_column(header, rows, 1 if delta_col == 0 or bpb_col == 0 else 0)
        sides = before_after_columns(header)
        if delta_col is None and bpb_col is None:
            pairs = metric_pairs(header, rows, heading)
            rows_out += pairs or _comparison_rows(header, rows, heading, nats_to_bpb)
            continue
        is_nats = delta_col is not None and "nat" in low[delta_col]
        gain_header = delta_col is not None and re.search(r"gain|improv|reduc", low[delta_col]) is not None
        from_base = _deltas_from_base(rows, delta_col, bpb_col, label_col) if delta_col is not None else None
        if delta_col is not None:
            ref_label = _reference_row(header, rows, delta_col, label_col, heading)
            labels = [_clean(r[label_col]) if len(r) > label_col else "" for r in rows]
            stacked = sum(lbl.startswith("+") for lbl in labels[1:]) >= max(1, (len(rows) - 1) // 2)
            # an experiment log whose delta column names one run ("Δ vs E0"): a row built on another run is not
            # that run plus its label's change
            named_run = delta_header_run(header[delta_col], rows) if label_col and is_log(header, rows) else None
            for k, r in enumerate(rows):
                if len(r) <= max(delta_col, label_col) or (named_run and _clean(r[0]).lower() == named_run):
                    continue
                m = re.search(_NUM, r[delta_col])
                label = _knob_value_label(header, r, label_col) or _clean(r[label_col])
                # (a label that names no run and adds nothing, "WARMDOWN_ITERS 3000 → 4000", is a variant of the
                # named run)
                j_parent, parent_change, how = log_reference(rows, k, label) if named_run else (k - 1, label, "")
                other_parent = named_run is not None and builds_on(rows, k, label) != named_run and (
                    how.startswith("vs run") or label.lstrip().startswith("+") or _RUN_FIRST.match(label) is not None)
                if other_parent and bpb_col is not None and how.startswith("vs run"):
                    # its increment over the run it builds on, from the two runs' scores
                    a, b = (_bpb_in(x[bpb_col]) if len(x) > bpb_col else None for x in (rows[j_parent], r))
                    if a is not None and b is not None and label:
                        rows_out.append(AblationRow(
                            change=parent_change, delta_bpb=round(b - a, 8), reference=labels[j_parent],
                            source=f"README table '{heading}' column '{_clean(header[bpb_col])}' (vs run "
                                   f"{_clean(rows[j_parent][0])}, the run it builds on; scores)"))
                if sides is not None and label and not _SUMMARY.match(label):
                    label = before_after_label(label, r, sides)
                if not m or not label or NOT_QUALITY.search(label) or _SUMMARY.match(label):
                    continue
                swept = knob_setting(f"{_knob_column(header[label_col], heading)}=1") is not None
                if re.fullmatch(r"\d+", label) and not swept:
                    continue   # per-seed rows of a results table ("| 3 |" under "| MLP_MULT |" is a sweep value)
                staged = _staged(header, r, label, m.group(0))
                if staged is not None:
                    rows_out.append(dataclasses.replace(staged, source=f"README table '{heading}' (column pair)"))
                    continue
                # a row scored under both eval-stage columns is also one model scored two ways (the delta column
                # is its increment over the row above; the two cells are the stage's effect on this config)
                rows_out += column_pairs(header, [r], heading, label_col)
                col_note, grid = "", _grid_change(header, rows, r, (delta_col, bpb_col), delta_col) \
                    if re.match(r"[\d.]+(?:\s*\(|$)", label) else None
                if re.fullmatch(r"(?:mean|avg|average)", label, re.I):
                    label = f"{_clean(header[delta_col])} ({label.lower()})"
                elif grid is not None:   # a grid of settings: the columns where the row differs from the reference
                    label, ref_label = grid
                    col_note = "; other columns differ" if "(also differs in" in label else ""
                elif re.match(r"[\d.]+(?:\s*\(|$)", label):
                    label = f"{_knob_column(header[label_col], heading)} = {label}"
                d = _to_float(m.group(0))
                if from_base is not None and k in from_base:  # a "+ X" stack whose Δ column is vs its first row
                    d, label = from_base[k], f"{label} (increment; the table's delta is vs its first row)"
                if d is None or abs(d) > MAX_DELTA:
                    continue
                if gain_header and not re.search(r"[+\-−–]", m.group(0)):
                    d = -d
                if is_nats or "nat" in r[delta_col].lower():
                    if nats_to_bpb is None:
                        rows_out.append(AblationRow(change=f"{label} (nats {d:+g}; no bpb ratio)", delta_bpb=None,
                                                    source=f"README table '{heading}'"))
                        continue
                    d = d * nats_to_bpb
                if re.search(r"^(?:base(?:line)?|control|reference|ours?|final|total|sota)\b", label, re.I) and d == 0:
                    continue
                col = f" column '{_clean(header[bpb_col])}'" if bpb_col is not None else ""
                col += f" (grid row vs its reference row{col_note})" if grid is not None else ""
                # a "+ X" stack's rows are increments over the row above ("+ bigram=10240" after "+ bigram=8192")
                ref = labels[k - 1] if stacked and k and labels[k].startswith("+") else ref_label
                if stacked:   # "+ NUM_LAYERS=11" on a stack that starts from the trainer's defaults
                    ref = trainer_default_reference(labels, k) or ref
                if other_parent:
                    col += f" ({OTHER_PARENT})"
                # what the delta cell says after its figure, and a source column: "(as reported in PR #2480)"
                said = " ".join([_clean(r[delta_col][m.end():])] + [_clean(r[j]) for j, h in enumerate(header)
                                 if j < len(r) and re.fullmatch(r"source|origin|credit|from", _clean(h), re.I)])
                rows_out.append(AblationRow(change=label, delta_bpb=round(d, 8), source=f"README table '{heading}'{col}",
                                            reference=ref, context=said.strip()))
            continue
        # absolute values only
        vals, cells = [], []
        for r in rows:
            if len(r) <= max(bpb_col, label_col):
                continue
            v = _bpb_in(r[bpb_col])
            label = _knob_value_label(header, r, label_col) or _clean(r[label_col])
            if v is not None and label:
                if re.match(r"[\d.]+(?:\s*\(|$)", label):  # "0.02 (optimal)": a value of the column's knob
                    label = f"{_knob_column(header[label_col], heading)} = {label}"
                vals.append((label, v))
                cells.append(r)
        if len(vals) < 2 or not re.search(r"bp[bp]|score", low[bpb_col]):
            continue
        if re.search(r"seed|run\b", low[label_col]) or all(re.fullmatch(r"\d+", lbl) for lbl, _ in vals):
            rows_out += _ttt_effect(header, rows, heading)  # per-seed tables: only the mean TTT effect
            continue
        pairs = column_pairs(header, rows, heading, label_col)
        if pairs:  # each config scored two ways: the eval stage's effect per row, not config vs config
            rows_out += pairs
            continue
        if label_col and is_log(header, cells):
            logs.append(log_index(cells, vals, parent_column(header, cells)))
            rows_out += log_rows(header, cells, logs[-1], heading, label_col, bpb_col)
            continue
        # "+ X" rows are a stack, unless a "+ both" row shows they are alternatives on the first row
        cumulative = sum(lbl.startswith("+") for lbl, _ in vals[1:]) >= max(1, (len(vals) - 1) // 2) \
            and not any(_ALTERNATIVES.match(lbl) for lbl, _ in vals)
        bold = [k for k, r in enumerate(cells) if "**" in r[label_col] or "**" in r[bpb_col]]
        # a sweep's one bold row is the setting the record chose: the other rows are measured against it
        base = bold[0] if not cumulative and len(bold) == 1 else 0
        for k in range(len(vals)):
            if k == base or (cumulative and k == 0):
                continue
            ref_label, ref = vals[k - 1] if cumulative else vals[base]
            change, how = vals[k][0], "cumulative" if cumulative else "vs the bold row" if base else "vs first row"
            others = [] if cumulative else other_settings(header, cells[base], cells[k], (label_col, bpb_col))
            others += [(_clean(header[j]), "", _clean(cells[k][j])) for j in _note_columns(header)
                       if not cumulative and j < len(cells[k]) and knobs_set_in(cells[k][j])]   # "momentum 0.99 run"
            if len(others) == 1 and _clean(cells[k][label_col]) == _clean(cells[base][label_col]):
                (h, a, b), others = others[0], []   # "| 10 | 5x |" vs "| **10** | **4x** |": the MLP column changed
                change, ref_label, how = f"{h} {b}", f"{h} {a}", f"{how}; {ONE_COLUMN}"
            if others:  # other config columns that differ from the reference row belong to the change too
                change += f" (also differs in {', '.join(f'{h} {a}/{b}' for h, a, b in others)})"
                how += "; other columns differ"
            if not cumulative:
                checks.append((len(rows_out), ref, vals[k][1]))
            rows_out.append(AblationRow(change=change, delta_bpb=round(vals[k][1] - ref, 8), reference=ref_label,
                                        source=f"README table '{heading}' ({how})"))
    for i, a, b in checks:   # a summary sweep whose two runs the README's own log shows are not one step apart
        between = increment_between_runs(logs, a, b)
        if between:
            r = rows_out[i]
            rows_out[i] = dataclasses.replace(r, source=f"{r.source[:-1]}; {LOG_BETWEEN} '{between}')")
    return rows_out


def _staged(header: list[str], row: list[str], label: str, stated: str) -> AblationRow | None:
    """A delta-column row that is one config scored two ways (its delta = the staged column - the plain one)."""
    cols = eval_columns(header)
    if cols is None:
        return None
    a, b, name = cols
    va, vb = (_bpb_in(row[j]) if j < len(row) else None for j in (a, b))
    d = _to_float(stated)
    if va is None or vb is None or d is None or abs((vb - va) - d) > 2e-4:
        return None
    return AblationRow(change=f"{name} ({label}: {_clean(header[a])} -> {_clean(header[b])})",
                       delta_bpb=round(d, 8), source="", reference=label)  # the stated figure, to its precision


def _knob_column(cell: str, heading: str) -> str:
    """The name of a sweep's value column, qualified by its table's heading when only the heading names a knob:
    "Steps" under "NS Step Count Ablation" -> "NS Step Count" (a bare "Steps" is no knob)."""
    name = _clean(cell)
    core = re.sub(r"\s*\b(?:ablations?|sweeps?|analysis|study|comparison|results?|search|scan)\b.*$", "", heading or "",
                  flags=re.I).strip(" :-")
    if core and knob_setting(f"{name}=1") is None and knob_setting(f"{core}=1") is not None:
        return core
    return name


_STAGE_WORD = re.compile(r"pre[\s_-]?quant|post[\s_-]?quant|round[\s_-]?trip|quantized|slid|\bttt\b|post[\s_-]?ttt|"
                         r"pre[\s_-]?ttt|\bplain\b|\bint\d\b|\bs\d{2,3}\b", re.I)
_NOT_SCORE = re.compile(r"loss|nats?|time|size|param|steps?|bytes|\bmb\b|\bkb\b|artifact|\bms\b|tok|%", re.I)


def _stage_headers(header: list[str], rows: list[list[str]]) -> list[str]:
    """A per-seed table whose columns name eval stages but not the unit ("| Seed | Pre-quant (post-EMA) | int6 round
    trip | Sliding s64 |"): each such column whose cells are all bpb-like values is read as a bpb column."""
    if any(re.search(r"bp[bp]", h, re.I) for h in header) or not re.fullmatch(r"seeds?", _clean(header[0]), re.I):
        return header
    out = list(header)
    for j, h in enumerate(header):
        if j == 0 or not _STAGE_WORD.search(h) or _NOT_SCORE.search(h):
            continue
        cells = [_clean(r[j]) for r in rows if len(r) > j and _clean(r[j]) not in ("", "-", "—")]
        if cells and all(re.fullmatch(r"[0-1]\.\d{3,6}", c) and 0.5 < float(c) < 1.6 for c in cells):
            out[j] = f"{h} bpb"
    return out


def _knob_value_label(header: list[str], row: list[str], label_col: int) -> str | None:
    """"| knob | value |" columns: the row's label is "KEY = value" (several keys and values, "MATRIX_LR, MUON_WD |
    0.026, 0.100", pair up in order); None for other tables."""
    j = label_col + 1
    if j >= len(header) or j >= len(row) or not re.fullmatch(r"knob|param(?:eter)?|hyper-?parameter|setting|flag|env",
                                                             _clean(header[label_col]), re.I) \
            or not re.fullmatch(r"values?|setting|to|new", _clean(header[j]), re.I):
        return None
    keys, values = (re.split(r"\s*[,;/]\s*", _clean(row[c])) for c in (label_col, j))
    if not all(keys) or not all(values) or len(keys) != len(values):
        return None
    return ", ".join(f"{k} = {v}" for k, v in zip(keys, values, strict=True))


def _note_columns(header: list[str]) -> list[int]:
    return [j for j, h in enumerate(header) if re.search(r"note|comment|remark", h, re.I)]


def _grid_change(header: list[str], rows: list[list[str]], row: list[str], skip: tuple, delta_col: int
                 ) -> tuple[str, str] | None:
    """A row of a grid of settings (two or more configuration columns: "| LoRA rank | Prefix docs | Phases | BPB |
    Δ |") against the grid's reference row (its delta cell "—" / 0; the bold one of several): ("<column> = <value>",
    "<column> = <reference value>") when one column differs, with the others named ("also differs in ...") when
    several do; None when the table is no such grid or has no one reference row."""
    config = config_columns(header, skip)
    refs = [x for x in rows if len(x) > delta_col and re.fullmatch(r"[—–-]|[+±]?0(?:\.0+)?|ref\w*|base\w*",
                                                                    _clean(x[delta_col]).lower())]
    if len(refs) > 1:   # a row with no score has no delta either: the reference is the bold one
        refs = [x for x in refs if any("**" in c for c in x)]
    if len(config) < 2 or len(refs) != 1 or refs[0] is row:
        return None
    diff = other_settings(header, refs[0], row, tuple(j for j in range(len(header)) if j not in config))
    if not diff:
        return None
    (h, a, b), rest = diff[0], diff[1:]
    also = f" (also differs in {', '.join(f'{c} {x}/{y}' for c, x, y in rest)})" if rest else ""
    return f"{h} = {b}{also}", f"{h} = {a}"


def _reference_row(header: list[str], rows: list[list[str]], delta_col: int, label_col: int,
                   heading: str = "") -> str | None:
    """The label of a sweep table's reference row: the one whose delta cell says "baseline" / "—" / 0 (the row the
    other rows' deltas are measured from), as "<knob> = <value>" when the label is a bare value."""
    for r in rows:
        if len(r) <= max(delta_col, label_col):
            continue
        cell = _clean(r[delta_col]).lower()
        if re.fullmatch(r"baseline|base|ref(?:erence)?|default|[—–-]|[+±]?0(?:\.0+)?", cell):
            label = _clean(r[label_col])
            return f"{_knob_column(header[label_col], heading)} = {label}" if re.match(r"[\d.]+(?:\s*\(|$)", label) \
                else label
    # no reference row: the delta column may name it ("Δ vs 0.04", "delta from default 0.04")
    named = re.search(r"(?:vs\.?|from|against|default|baseline)\s*[=:(]?\s*(\d*\.?\d+)", _clean(header[delta_col]), re.I)
    return f"{_knob_column(header[label_col], heading)} = {named.group(1)}" if named else None


def _deltas_from_base(rows: list[list[str]], delta_col: int, bpb_col: int | None,
                      label_col: int) -> dict[int, float] | None:
    """Row index -> increment over the previous row, when a "+ X" stack's Δ column is measured from its first
    row (every Δ equals bpb minus the first bpb, and at least one differs from the row-to-row step)."""
    if bpb_col is None:
        return None
    vals = [(k, _bpb_in(r[bpb_col]) if len(r) > bpb_col else None, r) for k, r in enumerate(rows)]
    vals = [(k, v, r) for k, v, r in vals if v is not None]
    if len(vals) < 3 or sum(_clean(r[label_col]).startswith("+") for _, _, r in vals[1:]) < len(vals) - 1:
        return None
    base, out, differs = vals[0][1], {}, False
    for (_, prev, _), (k, v, r) in zip(vals, vals[1:], strict=False):
        m = re.search(_NUM, r[delta_col]) if len(r) > delta_col else None
        d = _to_float(m.group(0)) if m else None
        if d is None or abs(d - (v - base)) > 1.5e-4:
            return None
        differs = differs or abs(d - (v - prev)) > 1.5e-4
        out[k] = round(v - prev, 8)
    return out if differs else None


_APPROX = re.compile(r"^\s*(?:~|≈|about|approx|circa|ca\.)|\?", re.I)


def _column_means(rows: list[list[str]], cols: list[int]) -> dict[int, tuple[float, int]]:
    """Per column: the Mean row's value, else the mean over seed rows (first cell an integer): (mean, n).

    A seed whose cell in any of ``cols`` is approximate ("~1.1815") is left out of every column's mean, so that the
    columns stay paired on the same seeds; the Mean row is then not used either (it averages the approximations).
    """
    seeds = [r for r in rows if r and re.fullmatch(r"\d+", _clean(r[0]))]
    mean_row = next((r for r in rows if r and re.fullmatch(r"mean|avg|average", _clean(r[0]), re.I)), None)
    exact = [r for r in seeds if not any(j < len(r) and _APPROX.search(_clean(r[j])) for j in cols)]
    if len(exact) < len(seeds):
        seeds, mean_row = exact, None
    out = {}
    for j in cols:
        v = _bpb_in(mean_row[j]) if mean_row is not None and j < len(mean_row) else None
        if v is None:
            xs = [_bpb_in(r[j]) for r in seeds if j < len(r)]
            xs = [x for x in xs if x is not None]
            v = round(sum(xs) / len(xs), 8) if xs and len(xs) == len(seeds) else None
        if v is not None:
            out[j] = (v, len(seeds))
    return out


_POST_Q, _NOT_POST_Q = r"post[\s-]?quant|quantized|round[\s_-]?trip|\brt[\s_]?bp|\bint\d\b", r"pre[\s-]?quant|ttt|slid"


def _ttt_effect(header: list[str], rows: list[list[str]], heading: str) -> list[AblationRow]:
    """Per-seed results with eval-stage score columns: the TTT effect (no-TTT / sliding / post-quant column ->
    TTT column), the sliding-window effect (post-quant column -> sliding column) and the weight average's effect
    (pre-EMA -> post-EMA column: one run's raw and averaged weights), on the column means."""
    low = [h.lower() for h in header]
    bpb = [j for j, h in enumerate(low) if re.search(r"bp[bp]", h)]
    first = lambda rx, excl=None: next((j for j in bpb if re.search(rx, low[j])  # noqa: E731
                                        and not (excl and re.search(excl, low[j]))), None)
    ttt = first(r"post[\s-]?ttt|\bttt\b", r"pre[\s-]?ttt|no[\s-]?ttt|gain|time")
    sliding = first(r"pre[\s-]?ttt|slid|no[\s-]?ttt") if ttt is not None else first(r"slid")
    post_q = first(_POST_Q, _NOT_POST_Q)
    if post_q is not None and sliding is not None:   # of several exports, the one scored in the sliding column too
        post_q = max((j for j in bpb if j < sliding and re.search(_POST_Q, low[j])
                      and not re.search(_NOT_POST_Q, low[j])), default=post_q)
    if post_q is None and sliding is not None and ttt is None:  # "val_bpb (standard)" next to "val_bpb (sliding)"
        post_q = first(r"standard|\bval[_ ]bpb\b|^bpb$", r"pre[\s-]?quant|ttt|sliding|post[\s-]?ema|std")
    means = _column_means(rows, [j for j in (ttt, sliding, post_q) if j is not None])
    out = []
    before = sliding if sliding in means else post_q
    if ttt in means and before in means:
        (a, n), (b, _) = means[before], means[ttt]
        name = "LoRA TTT" if "lora" in low[ttt] else "TTT"   # "| LoRA TTT bpb |": the LoRA variant
        out.append(AblationRow(change=f"{name} ({_clean(header[before])} -> {_clean(header[ttt])}, mean)",
                               delta_bpb=round(b - a, 8), source=f"README table '{heading}' (mean row)", n_seeds=n or None))
    pre_avg, post_avg = first(r"pre[\s-]?(?:ema|swa)\b"), first(r"post[\s-]?(?:ema|swa)\b")
    if pre_avg is not None and post_avg is not None:   # raw end-of-training weights -> the averaged weights
        avg = _column_means(rows, [pre_avg, post_avg])
        if len(avg) == 2:
            (a, n), (b, _) = avg[pre_avg], avg[post_avg]
            kind = "EMA" if "ema" in low[post_avg] else "SWA"
            out.append(AblationRow(change=f"{kind} ({_clean(header[pre_avg])} -> {_clean(header[post_avg])}, mean)",
                                   delta_bpb=round(b - a, 8), source=f"README table '{heading}' (mean row)",
                                   n_seeds=n or None))
    # (next to a TTT column, a column named sliding is still the quantized model scored in sliding windows)
    if sliding in means and post_q in means and sliding != post_q and (ttt is None or "slid" in low[sliding]):
        (a, n), (b, _) = means[post_q], means[sliding]
        out.append(AblationRow(change=f"sliding window eval ({_clean(header[post_q])} -> {_clean(header[sliding])}, mean)",
                               delta_bpb=round(b - a, 8), source=f"README table '{heading}' (mean row)", n_seeds=n or None))
    return out


def _comparison_rows(header: list[str], rows: list[list[str]], heading: str,
                     nats_to_bpb: float | None) -> list[AblationRow]:
    """Tables without a delta/bpb column: an 'Improvement'/'Delta' row, or a bpb row of a base-vs-this table."""
    out = []
    this_col, base_col = this_base_columns(header)
    for r in rows:
        if not r:
            continue
        label = _clean(r[0])
        if re.search(r"improvement|\bdelta\b|δ|\bgain\b", label, re.I):
            nums = [m for c in r[1:] for m in re.findall(_NUM, c)]
            d = _to_float(nums[-1]) if nums else None
            if d is not None and abs(d) < 0.5:
                if not re.match(r"\s*[+\-−–]", nums[-1]) and re.search(r"improv|gain", label, re.I):
                    d = -abs(d)
                if re.search(r"\bnats?\b", label + " ".join(r[1:]), re.I) and not re.search(r"bpb", label, re.I):
                    if nats_to_bpb is None:
                        continue
                    d = d * nats_to_bpb
                out.append(AblationRow(change=f"{heading}: {label}".strip(": "), delta_bpb=round(d, 8),
                                       source=f"README table '{heading}' (summary row)"))
        elif this_col is not None and base_col is not None and re.search(r"bpb", label, re.I) \
                and max(this_col, base_col) < len(r):
            a, b = _bpb_in(r[base_col]), _bpb_in(r[this_col])
            if a is not None and b is not None:
                out.append(AblationRow(change=f"{heading or 'this vs base'} ({label})", delta_bpb=round(b - a, 8),
                                       source=f"README table '{heading}' (this vs base)"))
    return out


def extract_ablations(readme: str, *, nats_to_bpb: float | None = None) -> list[AblationRow]:
    """Swept lists and run lines naming their parent first, then table rows, then prose deltas that do not repeat a
    table row's value."""
    rows = list_sweeps(readme or "") + parent_lines(readme or "")
    for r in table_ablations(readme or "", nats_to_bpb=nats_to_bpb):
        # an effect computed from a per-seed table repeats a stated one (a "TTT gain" column's mean)
        if "(mean row)" in r.source and any(abs(r.delta_bpb - x.delta_bpb) < 6e-5 for x in rows
                                            if x.delta_bpb is not None):
            continue
        rows.append(r)
    seen = {r.delta_bpb for r in rows}
    for r in prose_ablations(readme or "", nats_to_bpb=nats_to_bpb):
        if r.delta_bpb not in seen:
            rows.append(r)
            seen.add(r.delta_bpb)
    return rows
