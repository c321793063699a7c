"""Table shapes records use for ablations, beyond a plain "label | bpb | delta" table.

- **Experiment logs** (``| Exp | Description | val_bpb | Delta | Status |``): the first column is an id ("E3",
  "R12", "#4"), so the change is read from the description column (``label_column``); without a delta column each
  run is measured against the run its label names ("R34 + EMA@60%"), else the run above (``log_reference``).
- **Before / after tables** (``| Change | PR #374 | This | Impact |``): the change is the label with its two
  settings, "Warmdown: 3000 -> 3500", or "+ EMA" when the before cell says it was off (``before_after_label``).
- **Config tables with two eval-stage columns** (``| Config | Sliding BPB | Standard BPB |``): each row is one
  model scored two ways, the effect of the evaluation stage on that row (``column_pairs``).
- **Metric / value tables** (``| Metric | Value |`` with "Int6 roundtrip val_bpb" and "Int6 sliding val_bpb
  (s64)"): the same exported model scored two ways is the effect of the evaluation stage (``metric_pairs``):
  plain round trip -> sliding window, and pre-TTT -> post-TTT.
"""
from __future__ import annotations

import re

from scripts.causal.core.schema import AblationRow

__all__ = ["ONE_COLUMN", "OTHER_PARENT", "before_after_columns", "before_after_label", "builds_on", "clean",
           "column_pairs", "config_columns", "delta_header_run", "eval_columns", "is_log", "label_column", "label_items",
           "log_change", "log_reference", "metric_pairs", "other_settings", "parent_column",
           "this_base_columns", "trim_common"]

_ID_HEADER = re.compile(r"^(?:exp(?:eriment)?|run|id|#|no\.?|step|trial|v(?:ersion)?)$", re.I)
_ID_CELL = re.compile(r"^[A-Za-z]{0,3}[-_]?\d{1,3}[a-z]?$")
_DESC_HEADER = re.compile(r"descr|change|what|config|setting|modification|experiment|idea|note|override|variant|tweak",
                          re.I)
_BEFORE = re.compile(r"^(?:before|from|old|previous|prior|baseline|base|pr ?#\d+(?: base(?:line)?)?|default|was|"
                     r"[\w#.-]+ (?:record|base|baseline|stack))$", re.I)   # "04-01 record", "PR #1736 base"
_AFTER = re.compile(r"^(?:after|to|new|this|ours|now|this (?:pr|submission|record)|change[ds]? to)$", re.I)
_OFF = re.compile(r"^(?:none|no|off|n/?a|disabled|—|-|–)(?:\b|$)|^0$", re.I)


def clean(s: str) -> str:
    """A cell without markdown emphasis, code ticks and escaped underscores."""
    return re.sub(r"[*`]+", "", s.replace("\\_", "_")).strip()


def this_base_columns(header: list[str]) -> tuple[int | None, int | None]:
    """(this column, base column) of a this-vs-base table (``| Metric | PR #1394 | This submission |``)."""
    low = [h.lower() for h in header]
    this_col = next((j for j, h in enumerate(low) if re.search(r"\bthis\b|ours|new|submission", h)), None)
    base_col = next((j for j, h in enumerate(low) if j != this_col and re.search(r"pr ?#|base|naive|old|before", h)),
                    None)
    return this_col, base_col


_PARENT_HEADER = re.compile(r"^(?:parent|base|built on|branch(?:ed)? from|from|on top of|extends)$", re.I)


def parent_column(header: list[str], rows: list[list[str]]) -> int | None:
    """The column of an experiment log that names each run's parent run ("| Run | Parent | Change | BPB |"): its
    header says so and its cells are run ids of the log (or empty / a dash for the base run)."""
    ids = {clean(r[0]).lower() for r in rows if r}
    for j, h in enumerate(header):
        if j and _PARENT_HEADER.match(clean(h)):
            cells = [clean(r[j]).lower() for r in rows if len(r) > j]
            named = [c for c in cells if c and not re.fullmatch(r"[—–-]+|none|n/a", c)]
            if named and all(c in ids for c in named):
                return j
    return None


def label_column(header: list[str], rows: list[list[str]], default: int) -> int:
    """The column that names each row's change: a description column when the first column holds run ids."""
    if not is_log(header, rows):
        return default
    named = next((j for j, h in enumerate(header) if j > 0 and _DESC_HEADER.search(h)), None)
    if named is not None:
        return named
    # no header says so ("| # | Run | BPB |"): the first configuration column after the ids whose cells are words
    if not _ID_HEADER.match(clean(header[0])):
        return default
    for j in config_columns(header, (0,)):
        cells = [clean(r[j]) for r in rows if len(r) > j and clean(r[j])]
        if cells and sum(bool(re.search(r"[A-Za-z]{2,}", c)) for c in cells) > len(cells) / 2:
            return j
    return default


def log_reference(rows: list[list[str]], k: int, label: str) -> tuple[int, str, str]:
    """In an experiment log (column 0: run ids, chronological), the row that row ``k`` is measured against: the run
    its label names ("R34 + EMA@60%" -> R34; the label loses the id: "+ EMA@60%"), else the row above.
    Returns (reference row index, the row's label, how)."""
    ids = {clean(r[0]).lower(): j for j, r in enumerate(rows) if r and clean(r[0])}
    letter = re.match(r"([A-Z])\s*(?=\+|scored\b)", label)   # a ladder's "B + 11 layers", "E scored with ..."
    if letter and letter.group(1) in _letter_ids(rows) and ids[letter.group(1).lower()] != k:
        rest = label[letter.end():].strip(" ,;:")
        return (ids[letter.group(1).lower()], rest if rest.startswith("+") else f"+ {rest}",
                f"vs run {letter.group(1)}, named in the label")
    for m in re.finditer(r"\b([A-Za-z]{0,3}[-_]?\d{1,3}[a-z]?)\b", label):
        j = ids.get(m.group(1).lower())
        if j is not None and j != k and re.search(r"[A-Za-z]", m.group(1)):
            rest = (label[:m.start()] + label[m.end():]).strip(" ,;:")
            return j, (rest if rest.startswith("+") else f"+ {rest}"), f"vs run {m.group(1)}, named in the label"
    return k - 1, label, "vs row above (experiment log)"


OTHER_PARENT = "the delta header names another run than the one the row builds on"
_NAMED_RUN = re.compile(r"\b(?:vs\.?|versus|against|from|relative to|over)\s+([A-Za-z]{1,3}[-_]?\d{1,3}[a-z]?)\b", re.I)


def delta_header_run(header_cell: str, rows: list[list[str]]) -> str | None:
    """The run id an experiment log's delta column names as the reference of every delta ("Δ vs E0", "vs E5"; the
    run may sit in another table), lower case; None when it names none (each delta is then read against the run
    the row names or the row above). The id must look like the log's own ids (same letters: "E5" in an E-log)."""
    m = _NAMED_RUN.search(clean(header_cell))
    prefixes = {re.match(r"[A-Za-z]*", clean(r[0])).group(0).lower() for r in rows if r and clean(r[0])}
    if not m or re.match(r"[A-Za-z]*", m.group(1)).group(0).lower() not in prefixes:
        return None
    return m.group(1).lower()


def builds_on(rows: list[list[str]], k: int, label: str) -> str:
    """The run row ``k`` of an experiment log builds on, lower case: the run id its label starts with or names
    ("E3 + XSA last 4" -> "e3"), else the id of the row above."""
    m = re.match(r"\W*([A-Za-z]{1,3}[-_]?\d{1,3}[a-z]?)\b", label)
    if m and re.search(r"[A-Za-z]", m.group(1)):
        return m.group(1).lower()
    j = log_reference(rows, k, label)[0]
    return clean(rows[j][0]).lower() if 0 <= j < len(rows) and rows[j] else ""


_ITEM_SPLIT = re.compile(r"\s*(?:,|;|\s\+\s|^\+\s*)\s*")
_WORDS_NUM = re.compile(r"^([A-Za-z][A-Za-z _-]*?)\s+(-?\d+(?:\.\d+)?)$")
_NEG = re.compile(r"^(?:no|without|w/o)\s+", re.I)


def label_items(label: str) -> dict[str, str]:
    """A run's label as its settings, lower case -> as written: "Mode 2 (MLP down BWN) + EMA@60%" -> {"mode 2",
    "ema@60%"}; "Momentum 0.75" -> {"momentum=0.75": "Momentum=0.75"} (a knob word and its value as a setting)."""
    out = {}
    for it in _ITEM_SPLIT.split(re.sub(r"\([^)]*\)", " ", clean(label))):
        it = " ".join(it.split())
        m = _WORDS_NUM.match(it)
        if it:
            it = f"{m.group(1)}={m.group(2)}" if m else it
            out[it.lower()] = it
    return out


def log_change(label: str, reference: str) -> tuple[str, str] | None:
    """What one run of a log changes against its reference run, from the two labels: (change, reference setting).

    "g=128, softcap=10" against "g=128, softcap=15" -> ("softcap=10", "softcap=15"); "Mode 2 + EMA@60%" against
    "Mode 2" -> ("+ EMA@60%", ""); "no EMA, LR=0.005" against "EMA, LR=0.005" -> ("no EMA", "EMA"). None when the
    labels differ in more than one setting (the caller keeps the full label: a bundle or unmapped) or a "+ X" row,
    which states its increment itself."""
    if label.lstrip().startswith("+"):
        return None
    a, b = label_items(reference), label_items(label)
    only_a, only_b = [a[x] for x in a if x not in b], [b[x] for x in b if x not in a]
    if not only_a and len(only_b) == 1:
        return f"+ {only_b[0]}", ""
    if len(only_a) == 1 and len(only_b) == 1:
        return trim_common(only_b[0], only_a[0])
    return None


def trim_common(new: str, old: str) -> tuple[str, str]:
    """The two settings without the words they share in front or behind: "Cosine LR=0.002" against "Cosine
    LR=0.008" -> ("LR=0.002", "LR=0.008") (a word both runs have is no part of the change)."""
    a, b = new.split(), old.split()
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n].lower() == b[n].lower():
        n += 1
    e = 0   # and behind: "10L 1024 BPE" against "11L 1024 BPE" -> ("10L", "11L")
    while e < min(len(a), len(b)) - n - 1 and a[-1 - e].lower() == b[-1 - e].lower():
        e += 1
    return " ".join(a[n:len(a) - e]), " ".join(b[n:len(b) - e])


ONE_COLUMN = "the one column that differs"  # a config row whose other configuration columns equal its reference's
_RESULT_COLUMN = re.compile(r"bp[bp]|score|loss|round[\s_-]?trip|gap|note|comment|remark|status|time|size|param|"
                            r"bytes|\bmb\b|steps?|ms\b|tok(?:ens)?/s|speed|artifact|fits|under|[≤<]=?\s*\d+\s*mb|"
                            r"budget|delta|δ|diff", re.I)


def config_columns(header: list[str], skip: tuple[int, ...]) -> list[int]:
    """The columns of a table that hold configuration, not a result (bpb, size, time, notes), outside ``skip``."""
    return [j for j, h in enumerate(header) if j not in skip and not _RESULT_COLUMN.search(h)]


def other_settings(header: list[str], ref: list[str], row: list[str], skip: tuple[int, ...]
                   ) -> list[tuple[str, str, str]]:
    """(column, reference value, row value) of each configuration column (not a result: bpb, size, time, notes)
    where a config-table row differs from its reference row ("Layers 13" also has "MLP 3x" where the first row
    has "4x")."""
    out = []
    for j, h in enumerate(header):
        if j in skip or _RESULT_COLUMN.search(h) or j >= len(ref) or j >= len(row):
            continue
        a, b = clean(ref[j]), clean(row[j])
        if a and b and a.lower() != b.lower():
            out.append((clean(h), a, b))
    return out


def _letter_ids(rows: list[list[str]]) -> set[str]:
    """Single-letter run ids ("| B | A + MLP 3x |") of a ladder whose rows name the row they build on: every column-0
    cell one capital letter, and some other cell starting with another row's letter and "+" or "scored"."""
    first = [clean(r[0]) for r in rows if r]
    if len(first) < 3 or not all(re.fullmatch(r"[A-Z]", c) for c in first):
        return set()
    named = any(m and m.group(1) in first and m.group(1) != clean(r[0]) for r in rows for c in r[1:]
                for m in [re.match(r"([A-Z])\s*(?:\+|scored\b)", clean(c))])
    return set(first) if named else set()


def is_log(header: list[str], rows: list[list[str]]) -> bool:
    """Column 0 holds run ids ("R12", "E3", "#4", or a ladder's letters): an experiment log."""
    first = [clean(r[0]) for r in rows if r]
    return bool(first) and bool(_ID_HEADER.match(clean(header[0])) or all(_ID_CELL.match(c) for c in first if c)
                                or _letter_ids(rows))


def before_after_columns(header: list[str]) -> tuple[int, int] | None:
    """(before, after) column indexes of a before/after table, else None."""
    cells = [clean(h) for h in header]
    before = next((j for j, h in enumerate(cells) if j > 0 and _BEFORE.match(h)), None)
    after = next((j for j, h in enumerate(cells) if j > 0 and j != before and _AFTER.match(h)), None)
    return (before, after) if before is not None and after is not None else None


def before_after_label(label: str, row: list[str], cols: tuple[int, int]) -> str:
    """"Label: before -> after", or "+ Label" when the before cell says the thing was off."""
    b, a = (clean(row[j]) if j < len(row) else "" for j in cols)
    if _OFF.match(b):
        return f"+ {label}"
    return f"{label}: {b} -> {a}"


_BPB = re.compile(r"(?<![\d.])(\d\.\d{3,8})(?![\d.])")
_PLAIN = re.compile(r"round[\s_-]?trip|post[\s_-]?quant|quantized|\bint\d\b|standard|\bexported\b", re.I)
_SLIDING = re.compile(r"slid", re.I)
_TTT = re.compile(r"post[\s_-]?ttt|\bttt\b", re.I)
_PRE_TTT = re.compile(r"pre[\s_-]?ttt|no[\s_-]?ttt|before ttt", re.I)
_NOT_BPB = re.compile(r"loss|nats|time|size|bytes|gap|penalt|pre[\s_-]?quant|\bmb\b|step", re.I)


def metric_pairs(header: list[str], rows: list[list[str]], heading: str) -> list[AblationRow]:
    """Eval-stage effects of a two-column metric / value table (see the module docstring)."""
    if len(header) != 2:
        return []
    scored = []
    for r in rows:
        if len(r) < 2:
            continue
        label, m = clean(r[0]), _BPB.search(clean(r[1]))
        if m and re.search(r"bp[bp]", label, re.I) and not _NOT_BPB.search(label):
            scored.append((label, float(m.group(1))))
    out = []

    def pick(keep, drop=None):
        return next(((lbl, v) for lbl, v in scored if keep.search(lbl) and not (drop and drop.search(lbl))), None)

    plain, sliding = pick(_PLAIN, re.compile(f"{_SLIDING.pattern}|{_TTT.pattern}", re.I)), pick(_SLIDING, _TTT)
    if plain and sliding:
        out.append(AblationRow(change=f"sliding window eval ({plain[0]} -> {sliding[0]})",
                               delta_bpb=round(sliding[1] - plain[1], 8), source=f"README table '{heading}' (metric pair)",
                               reference=plain[0]))
    pre, post = pick(_PRE_TTT), pick(_TTT, _PRE_TTT)
    if pre and post:
        out.append(AblationRow(change=f"TTT ({pre[0]} -> {post[0]})", delta_bpb=round(post[1] - pre[1], 8),
                               source=f"README table '{heading}' (metric pair)", reference=pre[0]))
    return out


def eval_columns(header: list[str]) -> tuple[int, int, str] | None:
    """(plain, staged, name) columns of a table that scores each row two ways: plain round trip -> sliding window
    ("sliding window eval"), or pre-TTT -> post-TTT ("TTT"); None otherwise."""
    cells = [clean(h) for h in header]
    bpb = [j for j, h in enumerate(cells) if re.search(r"bp[bp]", h, re.I) and not _NOT_BPB.search(h)]
    find = lambda keep, drop=None: next((j for j in bpb if keep.search(cells[j])  # noqa: E731
                                         and not (drop and drop.search(cells[j]))), None)
    post = find(_TTT, _PRE_TTT)
    pre = find(_PRE_TTT)
    if post is not None and pre is not None:
        return pre, post, "TTT"
    sliding = find(_SLIDING, _TTT)
    plain = find(re.compile(f"{_PLAIN.pattern}|^(?:val[_ ]?)?bp[bp]$", re.I), re.compile(f"{_SLIDING.pattern}|{_TTT.pattern}", re.I))
    if sliding is not None and plain is not None:
        return plain, sliding, "sliding window eval"
    return None


def column_pairs(header: list[str], rows: list[list[str]], heading: str, label_col: int) -> list[AblationRow]:
    """One eval-stage effect per row of a config table with two eval-stage columns (``eval_columns``)."""
    cols = eval_columns(header)
    if cols is None:
        return []
    a, b, name = cols
    out = []
    for r in rows:
        if len(r) <= max(a, b, label_col):
            continue
        label, va, vb = clean(r[label_col]), _BPB.search(clean(r[a])), _BPB.search(clean(r[b]))
        if label and va and vb and not re.fullmatch(r"(?:std|stdev|sd)\.?", label, re.I):
            out.append(AblationRow(change=f"{name} ({label}: {clean(header[a])} -> {clean(header[b])})",
                                   delta_bpb=round(float(vb.group(1)) - float(va.group(1)), 8),
                                   source=f"README table '{heading}' (column pair)", reference=label))
    return out
