"""The one table of final-line formats: which log line reports which evaluation stage, and where its bpb is.

A Parameter Golf log ends with one or more score lines. Their names differ between scripts (the upstream
``final_int8_zlib_roundtrip_exact``, our ``final_export_roundtrip_exact`` / ``final_sliding`` / ``final_ttt``,
the records' ``final_int6_sliding_window_exact``, ``quantized_ttt_phased``, ``legal_ttt_exact``, ...), but each
reports one of four stages:

* ``pre_quant``: the trained model before export (``pre-quantization post-ema``, or the last ``step:N/M val_bpb``);
* ``post_quant``: the exported artifact, reloaded and re-evaluated (the round trip);
* ``sliding``: the round-tripped model under sliding-window evaluation;
* ``ttt``: the round-tripped model with test-time training (LoRA, phased, score-first "legal" TTT).

``FORMATS`` lists every line shape seen in ``../shared/records`` (survey: 143 logs) and in ``train_gpt.py``.
Each entry is a compiled pattern (anchored at a line start, groups ``loss`` (optional) and ``bpb``), the stage it
reports and whether it is the full-precision ("exact") print of its line. The torchrun executor, the log import
and leaderboard mining read logs only through ``parse_stages`` / ``final_score``.

Rules: within a stage, the last exact line wins over rounded ones (a script prints both twins); else the last line.
The final score is the latest stage that ran, in the order ``STAGES`` (ttt after sliding after post_quant after
pre_quant): the challenge's score is the last evaluation a submission runs. Lines are matched after stripping
``[rank0]:`` and timestamp prefixes.
"""
from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["FORMATS", "LogFormat", "STAGES", "StageScore", "final_score", "parse_stages", "strip_prefixes"]

STAGES = ("pre_quant", "post_quant", "sliding", "ttt")

_NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
_LOSS_BPB = rf"(?:val_loss[:=]\s*(?P<loss>{_NUM})[ \t,]+)?val_bpb[:=]\s*(?P<bpb>{_NUM})"  # loss optional


@dataclasses.dataclass(frozen=True)
class LogFormat:
    """One final-line shape: ``name`` (for reports), its ``pattern``, the ``stage`` it reports, ``exact``."""

    name: str
    pattern: re.Pattern
    stage: str
    exact: bool
    example: str


@dataclasses.dataclass(frozen=True)
class StageScore:
    """A stage's score read from a log: the stage, bpb, loss (None when the line has none) and the format."""

    stage: str
    val_bpb: float
    val_loss: float | None
    format: str
    line: str
    decimals: int = 0  # digits after the point of the printed bpb (8 for the full-precision lines)


def _f(name: str, regex: str, stage: str, example: str, *, exact: bool = False) -> LogFormat:
    return LogFormat(name, re.compile(regex, re.M), stage, exact, example)


FORMATS: tuple[LogFormat, ...] = (
    # --- pre-quantization ---------------------------------------------------------------------------------------
    _f("pre_quant_post_ema", rf"^(?:diagnostic )?pre-quantization post-ema {_LOSS_BPB}", "pre_quant",
       "pre-quantization post-ema val_loss:2.3 val_bpb:1.08 eval_time:9ms", exact=True),
    _f("diagnostic_post_ema", rf"^DIAGNOSTIC post_ema {_LOSS_BPB}", "pre_quant",
       "DIAGNOSTIC post_ema val_loss:1.9 val_bpb:1.13 eval_time:2ms", exact=True),
    _f("step_val", rf"^step:\d+/\d+ {_LOSS_BPB}", "pre_quant", "step:200/200 val_loss:2.1 val_bpb:1.22 train_time:1ms"),
    _f("step_val_bare", rf"^\d+/\d+ val_loss:\s*(?P<loss>{_NUM}) val_bpb:\s*(?P<bpb>{_NUM})", "pre_quant",
       "4000/20000 val_loss: 2.3 val_bpb: 1.09"),
    # --- post-quantization round trip (int8+zlib upstream, int6, int5, xnor, ternary, our export) ---------------
    _f("roundtrip_exact", rf"^final_(?:\w+_)?roundtrip_exact {_LOSS_BPB}", "post_quant",
       "final_int8_zlib_roundtrip_exact val_loss:2.07 val_bpb:1.2243657", exact=True),
    _f("roundtrip", rf"^final_(?:\w+_)?roundtrip {_LOSS_BPB}", "post_quant",
       "final_int6_roundtrip val_loss:2.07 val_bpb:1.2244 eval_time:2ms"),
    _f("quantized", rf"^(?:diagnostic )?quantized {_LOSS_BPB}", "post_quant",
       "quantized val_loss:2.3 val_bpb:1.09 eval_time:8ms", exact=True),
    # --- sliding-window evaluation -----------------------------------------------------------------------------
    _f("sliding_window_exact", rf"^final_(?:int\d+_)?sliding_window(?:_s\d+)?(?:_eval)?_exact(?: stride:\d+)? {_LOSS_BPB}",
       "sliding", "final_int6_sliding_window_exact val_loss:1.9 val_bpb:1.1271", exact=True),
    _f("sliding_window", rf"^final_(?:int\d+_)?sliding_window(?:_s\d+)?(?:_eval)?(?: stride:\d+)? {_LOSS_BPB}", "sliding",
       "final_sliding_window_eval stride:64 val_loss:1.9 val_bpb:1.19 eval_time:9ms"),
    _f("roundtrip_sliding", rf"^final_\w+_roundtrip(?P<exact>_exact)? sliding val_loss:(?P<loss>{_NUM}) "
       rf"sliding val_bpb:(?P<bpb>{_NUM})", "sliding", "final_int8_zlib_roundtrip_exact sliding val_loss:2.0 "
       "sliding val_bpb:1.19"),
    _f("final_sliding", rf"^final_sliding {_LOSS_BPB}", "sliding",
       "final_sliding val_loss:1.99 val_bpb:1.18 (stride=16, T=1024) eval_time:9ms", exact=True),
    _f("quantized_sliding_window", rf"^quantized_sliding_window {_LOSS_BPB}", "sliding",
       "quantized_sliding_window val_loss:2.3 val_bpb:1.08 eval_time:9ms", exact=True),
    # --- test-time training -------------------------------------------------------------------------------------
    _f("quantized_ttt", rf"^quantized_ttt(?:_\w+)? {_LOSS_BPB}", "ttt",
       "quantized_ttt_phased val_loss:2.3 val_bpb:1.06 eval_time:9ms", exact=True),
    _f("legal_ttt_exact", rf"^legal_ttt_exact {_LOSS_BPB}", "ttt",
       "legal_ttt_exact val_loss:1.8 val_bpb:1.1192 eval_time:9ms", exact=True),
    _f("legal_ttt", rf"^legal_ttt {_LOSS_BPB}", "ttt", "legal_ttt val_loss:1.8 val_bpb:1.1192 eval_time:9ms"),
    _f("final_ttt", rf"^final_(?:int\d+_)?ttt(?:_lora)? {_LOSS_BPB}", "ttt",
       "final_int8_ttt_lora val_loss:2.0 val_bpb:1.19 eval_time:9ms", exact=True),
    _f("ttt_sliding_done", rf"^ttt_sliding:done {_LOSS_BPB}", "ttt",
       "ttt_sliding:done val_loss=1.8 val_bpb=1.08 elapsed=9s", exact=True),
)

_PREFIX = re.compile(r"^(?:\d{9,}(?:\.\d+)?[ \t]|\[rank\d+\]:[ \t]?)", re.M)


def strip_prefixes(text: str) -> str:
    """``text`` without per-line ``[rank0]:`` and epoch-timestamp prefixes (some launchers add them)."""
    return _PREFIX.sub("", text)


def _float(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _matches(text: str) -> list[tuple[int, LogFormat, re.Match]]:
    out = []
    for fmt in FORMATS:
        for m in fmt.pattern.finditer(text):
            out.append((m.start(), fmt, m))
    out.sort(key=lambda t: t[0])
    return out


def parse_stages(text: str) -> dict[str, StageScore]:
    """Each stage's score in a log: the last exact line of the stage, else its last line (stage -> StageScore).

    Stages absent from the log are absent from the result. A non-finite bpb (``nan``) is kept: the caller
    decides that a run diverged."""
    text = strip_prefixes(text)
    best: dict[str, tuple[bool, StageScore]] = {}
    for _, fmt, m in _matches(text):
        bpb = _float(m.group("bpb"))
        if bpb is None:
            continue
        exact = fmt.exact or bool(m.groupdict().get("exact"))
        line = text[m.start():text.find("\n", m.start()) if "\n" in text[m.start():] else len(text)]
        digits = m.group("bpb").partition(".")[2]
        score = StageScore(fmt.stage, bpb, _float(m.groupdict().get("loss")), fmt.name, line.strip(),
                           len(digits) if digits.isdigit() else 0)
        prev = best.get(fmt.stage)
        if prev is None or exact or not prev[0]:
            best[fmt.stage] = (exact, score)
    return {s: best[s][1] for s in STAGES if s in best}


def final_score(text: str) -> StageScore | None:
    """The log's final score: the latest stage (``STAGES`` order) that has a line; None when no stage has one."""
    stages = parse_stages(text)
    for stage in reversed(STAGES):
        if stage in stages:
            return stages[stage]
    return None


def is_finite(score: StageScore | None) -> bool:
    return score is not None and math.isfinite(score.val_bpb)
