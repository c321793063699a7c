"""Right or silent: the checks a typed one-change row (``kind == "ablation"``) must pass to stay one.

A wrong mapping is worse than none, so a row keeps the ``ablation`` class only when nothing in its own words says
it is something else. Each rule demotes the row to the class a reader would give it (``core.schema.ABLATION_KINDS``)
and says why in ``note``:

- ``multi_feature``: the words say the change came combined with others ("combined with XSA and ..."), or a
  config-table row differs from its reference row in other configuration columns too ("Layers 13" with "MLP 3x"
  where the reference has "4x");
- ``quoted_estimate``: the figure is another submission's or a projection ("PR #493 (ablated at -0.003)",
  "reported as", "estimated", "should give", "expected", a range "0.005-0.006");
- ``penalty``: a quantization / export row that states a penalty or gap of one model (pre-quant -> round trip)
  rather than two export schemes; a bit-width row must name both widths ("int8 -> int6", "int5 vs int6");
- ``nonadjacent``: a row of a configuration table compared with the table's first row (or a run of an experiment
  log compared with the run above it, unless its label is a "+ X" increment), unless the row sets one
  knob of the trainer's vocabulary against that row (a sweep: ``MATRIX_LR=0.02`` vs ``MATRIX_LR=0.04``) or the two
  labels differ only in switching one thing ("with SmearGate" vs "without SmearGate"); configs
  such as "10L uniform" against "9L every=2" differ in more than their label says; an experiment-log row whose
  delta column names its reference run ("Δ vs E0") while the row builds on another run ("E3 + XSA"); a log
  run whose label states a seed its reference run does not ("EMA off (seed 42)");
- ``no_direction``: a numeric row whose "from" value was assumed (the naive baseline's), not stated: the record's
  stack is not the naive baseline;
- ``multi_feature`` for a tokenizer change (``vocab_size``): two tokenizers differ in vocabulary, embedding table
  and bytes per token at once (the verified table classes such rows ``cross_tokenizer``);
- ``restated``: a prose row that repeats a change the record's own table measures, with another figure beyond the
  prose figure's rounding (the table row is the measurement; the prose figure comes from elsewhere);
- ``multi_feature`` again, record-level: an evaluation-stage pair (plain score -> sliding / TTT score of one model)
  in a record whose text applies another evaluation-time transform as well (temperature scaling of the logits, an
  n-gram tilt or cache): the staged score carries both, and the text does not separate them.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from scripts.causal.core.schema import AblationRow
from scripts.causal.extract.row_types import ON_STACK
from scripts.causal.extract.run_logs import LOG_BETWEEN, ONE_SETTING, OWN_SEED, SMOKE
from scripts.causal.extract.table_shapes import ONE_COLUMN, OTHER_PARENT

__all__ = ["gate_record", "gate_row", "half_unit"]

_QUOTED = re.compile(r"\bPR\s*#?\s*\d{2,5}\b|\bpull/\d+|\breported\b|\baccording to\b|\bestimat\w*|\bexpected\b|"
                     r"\bshould\b|\bwould\b|\bprojected?\b|\bused in\b|\bablated at\b|\bper (?:the )?(?:paper|pr)\b|"
                     r"\broughly\b|(?<![\d.])\d*\.\d+\s*[-–]\s*\d*\.\d+(?![\d.])", re.I)  # "~0.005-0.006": a range
# "vs PR #1394's default 0.99": the PR named as the base the change is measured on, not a figure quoted from it
_BASE_PR = re.compile(r"\b(?:vs\.?|versus|than)\s+\[?PR\s*#?\s*\d+\]?(?:\([^)]*\))?'s\s+(?:default|baseline|base)\b", re.I)
_PENALTY = re.compile(r"penalt|quant\w*[\s-]*(?:gap|loss|cost|degrad\w*|error|hit)|\bgap\b|quality loss|"
                      r"\bvs\.?\s*(?:pre[\s-]?quant|fp16|bf16|fp32|float)|\bpre[\s-]?quant\b|round[\s-]?trip", re.I)
_BUNDLE = re.compile(r"\bcombined\b|\btogether with\b|\balong with\b|\bon top of\b|\bas well as\b", re.I)
_EXPORT = {"quant_bits", "gptq", "qat", "compression", "fp16_embed"}
_TWO_WIDTHS = re.compile(r"\b(?:int|fp)(\d{1,2})\b.{0,40}?(?:->|→|=>|\bto\b|\bvs\.?|\bover\b|\binstead of\b).{0,20}?"
                         r"\b(?:int|fp)(\d{1,2})\b", re.I)
RESTATE_TOL = 1.5e-4


def _demote(row: AblationRow, kind: str, note: str) -> AblationRow:
    return dataclasses.replace(row, kind=kind, note=f"{note} (typed {row.features} before)")


def gate_row(row: AblationRow) -> AblationRow:
    """``row`` unchanged unless it is an ``ablation`` that one of the module's rules demotes."""
    if row.kind != "ablation":
        return row
    text = f"{row.change} {row.context}"
    if _QUOTED.search(ON_STACK.sub(" ", _BASE_PR.sub(" ", text))):
        return _demote(row, "quoted_estimate", "another submission's figure or a projection, not measured here")
    if _BUNDLE.search(row.change) or "other columns differ" in row.source:
        return _demote(row, "multi_feature", "the row's change comes combined with others")
    if SMOKE in row.source:
        return _demote(row, "no_delta", "smoke runs: a size or speed check of a few steps measures no change")
    if LOG_BETWEEN in row.source:
        return _demote(row, "nonadjacent", "a summary row whose two runs the record's run log shows differ by an "
                                           "increment between them as well")
    if OWN_SEED in row.source:
        return _demote(row, "nonadjacent", "the run states its own seed, which its reference run does not: the two "
                                           "differ in seed as well")
    if OTHER_PARENT in row.source:
        return _demote(row, "nonadjacent", "an experiment-log row whose delta is against the run the delta header "
                                           "names, while the row builds on another run")
    if ("(vs first row" in row.source or "(vs row above" in row.source) and not row.note.startswith("a setting of") \
            and not _ab_pair(row) and not row.change.lstrip().startswith("+") and ONE_COLUMN not in row.source \
            and not (ONE_SETTING in row.source and "reference row" in row.note):
        return _demote(row, "nonadjacent", "a configuration row against the table's first row, which may differ in "
                                           "more than the row's label names")
    feat = row.features[0] if row.features else None
    if feat == "vocab_size":
        return _demote(row, "multi_feature", "a tokenizer change: the vocabulary, the embedding table and the bytes "
                                             "per token change with it (cross-tokenizer, not one change)")
    if feat in _EXPORT and _PENALTY.search(f"{text} {row.source}"):
        return _demote(row, "penalty", "a quantization / export penalty of one model, not two export schemes")
    if feat == "quant_bits" and not _TWO_WIDTHS.search(text):
        return _demote(row, "penalty", "a bit-width row that names one width only: a penalty, not int A -> int B")
    if "from assumed" in row.note:
        return _demote(row, "no_direction", "the row states the new value only; the record's stack is not the naive "
                                            "baseline, so 'from' is unknown")
    return row


_AB_WORDS = re.compile(r"\b(?:with|without|w/o|no|off|on|enabled|disabled)\b|[+]", re.I)


def _ab_pair(row: AblationRow) -> bool:
    """"with SmearGate" against "without SmearGate": the two labels differ only in the words that switch one thing."""
    norm = lambda t: " ".join(re.sub(r"[^\w]+", " ", _AB_WORDS.sub(" ", t or "").lower()).split())  # noqa: E731
    return bool(row.reference) and norm(row.change) == norm(row.reference) and bool(norm(row.change))


def half_unit(x: float) -> float:
    """Half a unit of the last digit a figure is stated to ("~0.034" -> 0.0005): a rounded restatement is no
    other figure."""
    decimals = len(f"{abs(x):.8f}".rstrip("0").split(".")[1])
    return 0.5 * 10.0 ** -decimals + 1e-12


_EVAL_STAGES = {"sliding_window_eval", "ttt", "lora_ttt"}
# a temperature only with a stated value below 1 ("Temperature scaling (T=0.90)"; "optimal temperature 1.02" is ~none)
_EVAL_TRANSFORM = re.compile(r"\btemperature\b[^.\n]{0,40}?(?<![\d.])0\.\d+|\bT\s*=\s*0\.\d+|"
                             r"\bn[\s-]?gram[\s-]*(?:token[\s-]*)?(?:tilt|cache|mix\w*|bias)", re.I)
_NEGATED = re.compile(r"\b(?:no|not|without|disabled?|never|nor)\b|\bw/o\b", re.I)
_STAGE_PAIR = re.compile(r"\((?:metric pair|mean row|column pair)\)|eval-stage", re.I)


def eval_transform(text: str) -> str | None:
    """The words of a record's text that apply another evaluation-time transform ("Temperature scaling (T=0.90)",
    "causal n-gram token tilt"), or None."""
    for m in _EVAL_TRANSFORM.finditer(text or ""):
        line_start = (text.rfind("\n", 0, m.start()) + 1)
        if not _NEGATED.search(text[line_start:m.start()]):  # "No TTT, SLOT, n-gram cache": not applied
            return m.group(0)
    return None


def gate_record(rows: Sequence[AblationRow], *, text: str = "") -> tuple[AblationRow, ...]:
    """``gate_row`` on each row, then the record-level rules: an evaluation-stage pair in a record that applies
    another evaluation-time transform (``text``: the record's README), prose restating a table-measured change."""
    rows = [gate_row(r) for r in rows]
    other = eval_transform(text)
    if other:
        rows = [_demote(r, "multi_feature", f"an evaluation-stage score of a record that also applies '{other}' at "
                                            "evaluation: the staged score carries both")
                if r.kind == "ablation" and set(r.features) & _EVAL_STAGES and _STAGE_PAIR.search(r.source) else r
                for r in rows]
    # (a row that states other values than the table's, "WARMDOWN_ITERS=4000 vs 3000" against "+ warmdown 1200 ->
    # 3000", is another change)
    measured = {(r.features, r.direction): r for r in rows
                if r.kind == "ablation" and r.source_kind == "table" and r.delta_bpb is not None}
    out = []
    for r in rows:
        t = measured.get((r.features, r.direction))
        if (r.kind == "ablation" and r.source_kind == "prose" and t is not None and r.delta_bpb is not None
                and abs(r.delta_bpb - t.delta_bpb) > max(RESTATE_TOL, half_unit(r.delta_bpb))
                and all(a is None or b is None or a == b for a, b in ((r.from_value, t.from_value),
                                                                       (r.to_value, t.to_value)))):
            r = _demote(r, "restated", f"restates a change the record's table measures at {t.delta_bpb:+.4f}")
        out.append(r)
    return tuple(out)
