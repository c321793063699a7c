"""Tests for scripts/causal/extract/base_contrast.py: a record against its base record is one change only when
the README's this-vs-base table and both records' logged hyperparameters agree."""
from __future__ import annotations

from scripts.causal.extract.ablations import extract_ablations
from scripts.causal.extract.base_contrast import confirm_base_rows, dump_diff, stable_dump
from scripts.causal.extract.row_types import type_rows

README = """## Changes from baseline (PR #1394)

| Component | PR #1394 | This PR |
|---|---|---|
| Tokenizer | SentencePiece BPE 8192 | SentencePiece BPE 8192 (same) |
| Architecture | 11L / 512d | (same) |
| **QK_GAIN_INIT** | **4.0** | **5.0** |
| **TTT** | **none** | **Legal score-first, LR=0.005** |
| val_bpb (3-seed mean, sliding no-TTT) | 1.08563 | **1.08486** |
| val_bpb (3-seed mean, post-TTT) | - | **1.08279** |
"""


def _log(seed: int, **fields) -> str:
    base = {"qk_gain_init": "4.0", "num_layers": "11", "model_dim": "512", "matrix_lr": "0.02", "muon_wd": "0.085",
            "mlp_mult": "4.0", "seed": str(seed), "run_id": f"run{seed}", "logfile": f"logs/run{seed}.txt",
            "data_dir": "/home/a/data", "train_files": "/home/a/data/train_*.bin", "num_heads": "8",
            "model_params": "35943512"}
    base.update(fields)
    return "Hyperparameters:\n" + "".join(f"  {k}: {v}\n" for k, v in base.items()) + "step:0/20000 val_bpb:4.1\n"


BASE = stable_dump({"a.log": _log(1), "b.log": _log(42)})


def _rows(this_logs: dict[str, str], readme: str = README):
    this = stable_dump(this_logs)
    return {r.change: r for r in confirm_base_rows(type_rows(extract_ablations(readme)), readme, this, BASE)}


def test_the_stable_dump_drops_what_differs_between_a_records_own_runs():
    assert "seed" not in BASE and "run_id" not in BASE and BASE["qk_gain_init"] == "4.0"
    assert stable_dump({"a.log": "step:1 val_bpb:1.2\n"}) is None             # no Hyperparameters block
    this = stable_dump({"x.log": _log(0, qk_gain_init="5.0", ttt_enabled="True", data_dir="/other/data")})
    assert dump_diff(BASE, this, before_ttt=True) == {"qk_gain_init": ("4.0", "5.0")}
    assert dump_diff(BASE, this, before_ttt=False) == {"qk_gain_init": ("4.0", "5.0"), "ttt_enabled": (None, "True")}
    grown = stable_dump({"x.log": _log(0, qk_gain_init="5.0", model_params="35943513")})
    assert dump_diff(BASE, grown, before_ttt=True) is None                   # a code change no field shows


def test_a_this_vs_base_score_row_is_the_one_change_table_and_logs_agree_on():
    rows = _rows({"x.log": _log(0, qk_gain_init="5.0", ttt_enabled="True", ttt_lr="0.005"),
                  "y.log": _log(42, qk_gain_init="5.0", ttt_enabled="True", ttt_lr="0.005")})
    sliding = rows["Changes from baseline (PR #1394) (val_bpb (3-seed mean, sliding no-TTT))"]
    assert (sliding.kind, sliding.features, sliding.from_value, sliding.to_value, sliding.metric) == \
        ("ablation", ("qk_gain",), 4.0, 5.0, "sliding")
    assert round(sliding.delta_bpb, 5) == -0.00077


def test_a_change_the_logs_do_not_show_or_a_second_logged_change_leaves_the_row_a_record_comparison():
    same = _rows({"x.log": _log(0, ttt_enabled="True")})                        # README says 4 -> 5, logs say 4
    more = _rows({"x.log": _log(0, qk_gain_init="5.0", matrix_lr="0.022")})    # a field the table does not list
    other = _rows({"x.log": _log(0, muon_wd="0.09")})                          # one field, not the table's
    for rows in (same, more, other):
        assert {r.kind for r in rows.values() if "Changes from baseline" in r.change} == {"record_vs_base"}
    wrong = README.replace("| **4.0** | **5.0** |", "| **3.0** | **5.0** |")   # cells disagree with the logs
    assert {r.kind for r in _rows({"x.log": _log(0, qk_gain_init="5.0")}, wrong).values()} == {"record_vs_base"}
