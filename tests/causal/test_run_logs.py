"""Experiment logs (extract.run_logs): which run each run is measured against, and what a summary table's row
really compares when the README's own log holds both of its runs. Small hand-written logs."""
from __future__ import annotations

import pytest

from scripts.causal.extract.ablations import extract_ablations
from scripts.causal.extract.knobs import knob_setting, record_aliases
from scripts.causal.extract.row_types import type_rows
from scripts.causal.extract.run_logs import references

CONFIG = "```bash\nMATRIX_OPTIMIZER=muon MATRIX_LR=0.01 MUON_MOMENTUM=0.85\n```\n"


def typed(text: str, readme: str | None = None) -> dict[str, tuple]:
    """change -> (kind, features, from, to, delta, source) of every row mined from ``text`` and typed with the
    README ``readme`` (default: ``text``) as the record's text."""
    return {r.change: (r.kind, r.features, r.from_value, r.to_value, r.delta_bpb, r.source)
            for r in type_rows(extract_ablations(text), text=text if readme is None else readme)}


LOG = ("| Run | Key Changes | val_bpb |\n|---|---|---|\n"
       "| R1 | Cosine LR=0.004 | 1.640 |\n| R2 | Cosine LR=0.002 | 1.655 |\n| R3 | Cosine LR=0.008 | 1.630 |\n"
       "| R4 | Cosine LR=0.012 | 1.636 |\n| R5 | + Grad clip 1.0 | 1.627 |\n| R6 | + Momentum 0.85 | 1.617 |\n"
       "| R7 | Momentum 0.75 | 1.619 |\n| R8 | + Seq len schedule | 1.598 |\n| R9 | + Momentum 0.80 | 1.590 |\n")


def test_a_sweep_in_a_log_is_measured_against_its_best_run_and_an_increment_after_it_builds_on_that_run():
    labels = [r.split("|")[2].strip() for r in LOG.splitlines()[2:]]
    scores = [float(r.split("|")[3]) for r in LOG.splitlines()[2:]]
    refs = references([[f"R{k + 1}"] for k in range(len(labels))], labels, scores)
    assert [r.ref for r in refs[:4]] == [2, 2, None, 2]   # R1, R2, R4 against R3 (the best LR); R3 itself: none
    assert refs[4].ref == 2            # "+ Grad clip" after the sweep: on R3, not on the row above (R4)
    assert refs[5].ref == 4            # "+ Momentum 0.85" after an increment: the row above
    assert refs[6].ref == 5            # R6-R7 sweep momentum: R7 against R6 (the better of the two)
    assert refs[7].ref == 5            # "+ Seq len schedule" after that sweep: on its best run, R6
    assert refs[8].ref == 7


def test_a_log_row_is_typed_with_the_record_s_one_learning_rate_and_inherits_an_old_value_up_its_chain():
    rows = typed(LOG, readme=CONFIG + LOG)
    assert rows["LR=0.002"][:4] == ("ablation", ("matrix_lr",), 0.008, 0.002)   # "Cosine" is common to both runs
    assert rows["LR=0.002"][4] == pytest.approx(0.025)
    # "+ Momentum 0.80" on R8, whose chain goes back to R6's "+ Momentum 0.85": 0.85 -> 0.80
    assert rows["+ Momentum=0.80"][:4] == ("ablation", ("muon_momentum",), 0.85, 0.8)
    assert rows["+ Momentum=0.80"][4] == pytest.approx(-0.008)
    assert rows["+ Momentum=0.85"][0] != "ablation"       # nothing up its chain sets momentum: no "from"
    assert typed(LOG)["LR=0.002"][0] == "sweep_unmapped"   # without the config, a bare "LR" is no knob


def test_a_bare_lr_is_the_record_s_learning_rate_only_when_its_readme_sets_exactly_one():
    assert record_aliases(CONFIG) == {"lr": "matrix_lr"}
    assert record_aliases(CONFIG + "TTT_LR=0.005 TTT_EPOCHS=3\n") == {}   # two learning rates: ambiguous
    assert record_aliases("no settings here") == {}
    assert knob_setting("LR = 0.002", "LR = 0.008", aliases={"lr": "matrix_lr"}) == ("matrix_lr", 0.008, 0.002)
    assert knob_setting("LR = 0.002", "LR = 0.008") is None
    adam = "### Adam for the embeddings\n\n| LR | val_bpb |\n|---|---|\n| **0.005** | **1.080** |\n| 0.01 | 1.082 |\n"
    assert typed(adam, readme=CONFIG + adam)["LR = 0.01"][0] != "ablation"   # the heading names another optimiser
    ttt = adam.replace("Adam for the embeddings", "TTT LR sweep")   # the heading names the knob itself
    assert typed(ttt, readme=CONFIG + ttt)["TTT LR = 0.01"][:4] == ("ablation", ("ttt_lr",), 0.005, 0.01)


def test_a_seed_is_no_change():
    log = "| Run | Config | val_bpb |\n|---|---|---|\n| A1 | seed=1 | 1.120 |\n| A2 | seed=2 | 1.122 |\n"
    assert knob_setting("seed=2", "seed=1") is None
    assert all(v[0] != "ablation" for v in typed(log).values())


def test_a_later_run_that_leaves_out_words_inherits_them_and_siblings_share_their_base():
    log = ("| Run | Config | Steps | val_bpb |\n|---|---|---|---|\n| S1 | LR=0.002, 65k batch | 5000 | 2.044 |\n"
           "| S2 | LR=0.003 | 5000 | 1.995 |\n| S3 | LR=0.004 | 5000 | 1.994 |\n| S4 | Mode 2 (down proj) | 5000 | 1.699 |\n"
           "| S5 | Mode 2 + EMA@60% | 5000 | 1.668 |\n| S6 | Mode 2 + EMA@0% | 5000 | 1.674 |\n")
    rows = typed(log, readme=CONFIG + log)
    assert rows["LR=0.002"][:5] == ("ablation", ("matrix_lr",), 0.004, 0.002, pytest.approx(0.05))
    assert rows["LR=0.003"][2:5] == (0.004, 0.003, pytest.approx(0.001))
    ema = [v for k, v in rows.items() if k.startswith("+ EMA")]
    assert sorted(v[4] for v in ema) == pytest.approx([-0.031, -0.025])   # both against S4, their common base
    assert all(v[:2] == ("ablation", ("ema",)) for v in ema)


def test_a_summary_sweep_whose_runs_the_log_shows_are_not_one_step_apart_is_nonadjacent():
    summary = ("### Momentum\n\n| Momentum | val_bpb |\n|---|---|\n| 0.95 | 1.640 |\n| 0.85 | 1.617 |\n"
               "| **0.80** | **1.590** |\n| 0.75 | 1.592 |\n\n")
    log = LOG + "| R10 | Momentum 0.75 + schedule | 1.592 |\n"
    rows = typed(summary + log)
    # 0.95 is R1 (an LR sweep run) and 0.85 is R6: R9 (0.80) carries "+ Seq len schedule" made after both
    assert rows["Momentum = 0.95"][0] == "nonadjacent" and rows["Momentum = 0.85"][0] == "nonadjacent"
    assert rows["Momentum = 0.75"][:4] == ("ablation", ("muon_momentum",), 0.8, 0.75)   # R10 on R9: one step
    alone = typed(summary)   # without the log the table is a sweep against its bold row
    assert alone["Momentum = 0.95"][0] == "ablation"


def test_a_config_row_that_differs_from_its_reference_in_one_column_is_that_column_s_change():
    text = ("| Layers | MLP | Params | val_bpb |\n|---|---|---|---|\n| **10** | **4x** | **117M** | **1.654** |\n"
            "| 13 | 3x | 125M | 1.745 |\n| 10 | 5x | 138M | 1.671 |\n")
    rows = typed(text)
    assert rows["MLP 5x"][:5] == ("ablation", ("mlp_mult",), 4.0, 5.0, pytest.approx(0.017))  # Params: a result
    assert rows["Layers = 13 (also differs in MLP 4x/3x)"][0] == "multi_feature"


def test_runs_that_differ_in_one_value_are_typed_and_smoke_runs_are_not():
    log = ("| Run | Config | Steps | val_bpb |\n|---|---|---|---|\n| T1 | relu2, 16L 1024d | 50 | 2.058 |\n"
           "| T2 | relu2, 15L 1024d | 50 | 2.060 |\n| T3 | signsq, 11L 1024 BPE | 500 | 2.001 |\n"
           "| T4 | signsq, 10L 1024 BPE | 500 | 2.042 |\n")
    rows = typed(log)
    assert rows["10L"][:5] == ("ablation", ("num_layers",), 11.0, 10.0, pytest.approx(0.041))  # "1024 BPE": both
    assert rows["15L"][0] == "no_delta"     # 50-step runs check the artifact's size; their scores measure nothing


def test_a_ladder_whose_rows_name_the_lettered_row_they_build_on():
    text = ("| Row | What | val_bpb |\n|---|---|---:|\n| A | naive baseline (9L, MLP 2x) | 1.2262 |\n"
            "| B | A + MLP 3x | 1.2139 |\n| C | B + 11 layers | 1.2018 |\n| D | B + Muon WD 0.04 + EMA 0.997 | 1.1931 |\n"
            "| E | C scored with sliding-window eval (stride 64) | 1.1815 |\n")
    rows = typed(text)
    assert rows["+ MLP 3x"][:4] == ("ablation", ("mlp_mult",), 2.0, 3.0)
    assert rows["+ 11 layers"][1] == ("num_layers",) and rows["+ 11 layers"][4] == -0.0121   # C builds on B
    assert rows["+ Muon WD 0.04 + EMA 0.997"][4] == pytest.approx(1.1931 - 1.2139)   # D builds on B, not on C
    assert rows["+ Muon WD 0.04 + EMA 0.997"][0] != "ablation"
    assert rows["+ scored with sliding-window eval"][:2] == ("ablation", ("sliding_window_eval",))
    assert rows["+ scored with sliding-window eval"][4] == pytest.approx(1.1815 - 1.2018)
    # letters that no row's label names are no run ids: a table of variants is not a ladder
    plain = "| Variant | val_bpb |\n|---|---|\n| A | 1.2262 |\n| B | 1.2139 |\n| C | 1.2018 |\n"
    assert all("named in the label" not in r[5] for r in typed(plain).values())


def test_an_override_log_reads_every_run_against_its_base_run():
    text = ("| Run | Override | Post-quant BPB |\n|---|---|---|\n| d0 | — (dev baseline) | 1.2431 |\n"
            "| d1 | TRAIN_BATCH_TOKENS=65536 (from 98304) | 1.2398 |\n| d2 | MIN_LR=0.05 (from 0.10) | 1.2419 |\n"
            "| d3 | MIN_LR=0.0 | 1.2440 |\n| d4 | TRAIN_BATCH_TOKENS=65536 MIN_LR=0.05 | 1.2385 |\n")
    rows = typed(text)
    assert rows["TRAIN_BATCH_TOKENS=65536 (from 98304)"][:5] == ("ablation", ("train_batch_tokens",), 98304, 65536,
                                                                 pytest.approx(-0.0033))
    assert rows["MIN_LR=0.05 (from 0.10)"][2:5] == (0.1, 0.05, pytest.approx(-0.0012))
    assert rows["MIN_LR=0.0"][0] == "sweep_unmapped" and rows["MIN_LR=0.0"][4] == pytest.approx(0.0009)   # vs d0
    assert "vs run d0" in rows["MIN_LR=0.0"][5]
    # a log whose first run already sets a knob is no override log: run 2 follows run 1
    plain = "| Run | Config | bpb |\n|---|---|---|\n| R1 | LR=0.003 | 2.074 |\n| R2 | LR=0.001 | 2.121 |\n| R3 | WD=0.1 | 2.1 |\n"
    assert all("the base each override" not in r[5] for r in typed(plain).values())


def test_a_stack_from_the_trainers_defaults_reads_each_first_setting_against_the_default():
    text = ("| # | Run | Post-quant BPB | Δ |\n|---|---|---|---|\n| 0 | baseline defaults | 1.2412 | |\n"
            "| 1 | + MLP_MULT=3 | 1.2335 | -0.0077 |\n| 2 | + NUM_LAYERS=11 | 1.2264 | -0.0071 |\n"
            "| 3 | + MATRIX_LR=0.02 SCALAR_LR=0.02 | 1.2205 | -0.0026 |\n| 4 | + NUM_LAYERS=12 | 1.2200 | -0.0005 |\n")
    rows = typed(text)   # the label column is 'Run', the first column of words after the ids
    assert rows["+ MLP_MULT=3"][:5] == ("ablation", ("mlp_mult",), 2, 3, -0.0077)
    assert rows["+ NUM_LAYERS=11"][:4] == ("ablation", ("num_layers",), 9, 11)
    assert rows["+ MATRIX_LR=0.02 SCALAR_LR=0.02"][0] == "multi_feature"
    assert rows["+ NUM_LAYERS=12"][0] != "ablation"   # a row above set it: its default is no longer the reference


def test_a_first_column_of_numbers_under_a_knob_header_is_no_run_id_column():
    from scripts.causal.extract.table_shapes import label_column

    header, rows = ["Chunk Target", "Tokenizer", "BPB"], [["16", "byte260", "1.20"], ["9", "sp1024", "1.18"]]
    assert label_column(header, rows, 0) == 0
    assert label_column(["#", "Run", "BPB"], [["0", "baseline", "1.24"], ["1", "+ MLP_MULT=3", "1.23"]], 0) == 1
