"""The final-line table (scripts/causal/core/log_formats.py): each format's stage, and every record log's score.

The acceptance test reads every training log in ``../shared/records`` and checks that the table's final score
equals what the record states for that log: the submission JSON's value for the log's seed, the JSON headline,
or a README table row that names the log's seed (or file). >= 95% must match; the misses are listed below with
the reason, and the list must stay exact (a miss fixed, or a new one, fails the test).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts.causal.core import log_formats as lf
from scripts.causal.extract import records as rp

RECORDS = Path(__file__).resolve().parents[2].parent / "shared" / "records"

_0423 = "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE"
_XNOR = "2026-04-05_118M_XNOR-Net_FP8_1024D_10L"

# (record folder, log file) -> why the log's final score is not the value its record states (a real miss).
KNOWN_MISSES = {
    # The stated per-seed scores come from an eval-only TTT re-run of the same artifacts (ttt_pr1767/seed_*.log,
    # PR #1767's TTT settings); the train logs hold the first TTT pass (seed 0: 1.06353 vs stated 1.06308).
    (_0423, "train_seed0.log"): "stated score is the eval-only TTT re-run in ttt_pr1767/, not this log's pass",
    (_0423, "train_seed1234.log"): "stated score is the eval-only TTT re-run in ttt_pr1767/, not this log's pass",
    (_0423, "train_seed42.log"): "stated score is the eval-only TTT re-run in ttt_pr1767/, not this log's pass",
    # README per-seed table, seed 1337: sliding 1.15055135, post-quant 1.18484075; the committed train.log has
    # sliding 1.16660881 and post-quant 1.19979073 (an earlier run; neither stage matches any stated number).
    ("2026-03-19_MLP3x_QAT_Int6_SlidingWindow", "train.log"): "the committed log is another run than the stated one",
}

# Logs for which their record states no score at all (exploration runs beside the submission): not comparable,
# so outside the match rate, and listed here so that none is dropped silently.
NO_STATED_VALUE = {
    (_XNOR, "log_eggroll_3-last-layers.txt"): "EGGROLL exploration run; the README gives no per-run score",
    (_XNOR, "log_eggroll_all-layers-perturbed.txt"): "EGGROLL exploration run (no final eval); no stated score",
    (_XNOR, "log_eggroll_last-layer-only.txt"): "EGGROLL exploration run; the README gives no per-run score",
    (_XNOR, "log_eggroll_lora.txt"): "EGGROLL exploration run; the README gives no per-run score",
}


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def _same(score: float, stated: str) -> bool:
    """``score`` rounded to the precision ``stated`` is written with equals it (a record states 1.0728 for
    1.07280131). Stated values with fewer than 3 decimals are too coarse to count."""
    d = _decimals(stated)
    return d >= 3 and abs(round(score, d) - float(stated)) < 0.6 * 10 ** -d


def _as_written(raw: str, value: float) -> str:
    """``value`` as the JSON text writes it (1.06400 keeps its 5 decimals; ``repr`` would give 1.064)."""
    written = [n for n in re.findall(r"-?\d+\.\d+", raw) if float(n) == value]
    return max(written, key=_decimals) if written else repr(value)


def stated_match(folder: Path, log: Path, score: float, stages: dict) -> str | None:
    """Where the record states ``score`` for ``log`` ("json seed", "json headline", "README row", "README row
    (stages)", "README mention"), or None. ``stages``: every stage score of the log (corroboration)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    seed = rp.log_seed(log.name, rp.strip_line_prefixes(text))
    jsons = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file())
    for jp in jsons:
        raw = jp.read_text(encoding="utf-8")
        jd = json.loads(raw)
        per_seed = dict(rp.json_seed_scores(jd))
        if seed is not None and per_seed.get(seed) is not None and _same(score, _as_written(raw, per_seed[seed])):
            return "json seed"
        head, _ = rp.json_headline(jd)
        tops = [v for v in jd.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(_same(score, _as_written(raw, float(v))) for v in ([head] if head is not None else []) + tops):
            return "json headline"
    notes = [folder / n for n in ("README.md", "RESULTS.md") if (folder / n).is_file()]
    lines = [ln for p in notes for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    name_seed = re.search(r"seed[_-]?(\d+)", log.name)
    keys = {log.stem} | {str(s) for s in (seed, name_seed and int(name_seed.group(1))) if s is not None}
    for line in lines:
        words = set(re.findall(r"[\w.-]+", line))
        if any(k in words for k in keys) and any(_same(score, n) for n in re.findall(r"\d+\.\d+", line)):
            return "README row"
    others = [st.val_bpb for st in stages.values() if st.val_bpb != score]
    for line in lines:  # a results row without the file's name, whose other numbers are this log's other stages
        nums = re.findall(r"\d+\.\d+", line)
        if any(_same(score, n) for n in nums) and any(_same(o, n) for o in others for n in nums):
            return "README row (stages)"
    for line in lines:  # a list of per-run scores ("bpb: [1.1927, 1.1935, ...]"): 4+ decimals only
        if any(_decimals(n) >= 4 and _same(score, n) for n in re.findall(r"\d+\.\d+", line)):
            return "README mention"
    return None


def record_logs() -> list[tuple[Path, Path]]:
    return [(folder, log) for folder in rp.discover_records(RECORDS) for log in rp._log_files(folder)]


@pytest.mark.skipif(not RECORDS.is_dir(), reason="../shared/records is not beside the repo")
def test_every_record_log_final_score_matches_the_stated_value():
    pairs = record_logs()
    assert len(pairs) >= 100, f"only {len(pairs)} logs found under {RECORDS}"
    bad, kinds = {}, {}
    for folder, log in pairs:
        text = log.read_text(encoding="utf-8", errors="replace")
        stages, fin = lf.parse_stages(text), lf.final_score(text)
        key = (folder.name, log.name)
        where = stated_match(folder, log, fin.val_bpb, stages) if fin is not None else None
        if where is None:
            bad[key] = f"{fin.stage}={fin.val_bpb} ({fin.format})" if fin else "no score line"
        kinds[where] = kinds.get(where, 0) + 1
    compared = [k for k in ((f.name, g.name) for f, g in pairs) if k not in NO_STATED_VALUE]
    misses = {k: v for k, v in bad.items() if k not in NO_STATED_VALUE}
    rate = 1 - len(misses) / len(compared)
    print(f"{len(compared) - len(misses)}/{len(compared)} logs with a stated value match it ({rate:.1%}); "
          f"{len(pairs)} logs in all, {len(NO_STATED_VALUE)} without a stated value; by source: {kinds}")
    for k, v in sorted(bad.items()):
        print("  miss:", k, v, "--", KNOWN_MISSES.get(k) or NO_STATED_VALUE.get(k) or "NOT EXPLAINED")
    assert rate >= 0.95
    assert set(bad) == set(KNOWN_MISSES) | set(NO_STATED_VALUE), \
        {k: bad.get(k, "now matches") for k in set(bad) ^ (set(KNOWN_MISSES) | set(NO_STATED_VALUE))}


@pytest.mark.parametrize("fmt", lf.FORMATS, ids=lambda f: f.name)
def test_each_format_example_parses_to_its_stage(fmt):
    stages = lf.parse_stages(fmt.example + "\n")
    assert list(stages) == [fmt.stage] and stages[fmt.stage].format == fmt.name


def test_our_trainer_lines_give_every_stage_and_the_last_stage_is_final():
    log = ("step:200/200 val_loss:2.1000 val_bpb:1.2500 train_time:10ms\n"
           "final_export_roundtrip val_loss:2.2000 val_bpb:1.3000 eval_time:1ms\n"
           "final_export_roundtrip_exact val_loss:2.20000001 val_bpb:1.30000001\n"
           "final_sliding val_loss:2.10000000 val_bpb:1.28000000 eval_time:1ms\n"
           "final_ttt val_loss:2.00000000 val_bpb:1.27000000 eval_time:1ms\n")
    st = lf.parse_stages(log)
    assert {k: v.val_bpb for k, v in st.items()} == {"pre_quant": 1.25, "post_quant": 1.30000001, "sliding": 1.28,
                                                     "ttt": 1.27}
    assert st["post_quant"].val_loss == 2.20000001 and st["post_quant"].format == "roundtrip_exact"
    assert lf.final_score(log).stage == "ttt"
    assert lf.final_score(log.split("final_sliding")[0]).val_bpb == 1.30000001


def test_exact_line_wins_over_a_later_rounded_twin_and_prefixes_are_stripped():
    log = ("[rank0]: final_int6_sliding_window_exact val_loss:1.9 val_bpb:1.12707468\n"
           "1776000000.123 final_int6_sliding_window val_loss:1.9 val_bpb:1.1271 stride:64 eval_time:9ms\n")
    assert lf.final_score(log).val_bpb == 1.12707468
    assert lf.final_score("final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n").val_bpb != 1.0  # nan kept
    assert lf.final_score("    log0(f\"final_int8_zlib_roundtrip_exact val_loss:1 val_bpb:2\")\n") is None  # code
    assert lf.final_score("no score here\n") is None
