"""Tests for scripts/causal/extract/ablations.py: tables and prose, with negative = better."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.causal.extract.ablations import extract_ablations, prose_ablations, table_ablations
from scripts.causal.extract.prose import list_sweeps

README = (Path(__file__).parent / "data" / "records" / "track_fixture_10min" / "2026-01-08_Ablations" / "README.md")


def as_pairs(rows):
    return [(r.change, r.delta_bpb) for r in rows]


def test_delta_column_table_keeps_signs_and_skips_the_base_row():
    rows = table_ablations(README.read_text(encoding="utf-8"))
    assert as_pairs(rows)[:2] == [("+ Legal TTT", -0.0017), ("+ BigramHash 3072", -0.0009)]  # unicode minus too


def test_absolute_only_cumulative_table_uses_row_to_row_deltas():
    rows = [r for r in table_ablations(README.read_text(encoding="utf-8")) if "cumulative" in r.source]
    assert as_pairs(rows) == [("+ LeakyReLU²", pytest.approx(-0.003)), ("+ QK gain 5", pytest.approx(-0.0015))]


def test_absolute_table_without_plus_labels_is_relative_to_the_first_row():
    text = "| Variant | val_bpb |\n|---|---|\n| control | 1.2000 |\n| wider MLP | 1.1950 |\n| deeper | 1.2010 |\n"
    assert as_pairs(table_ablations(text)) == [("wider MLP", pytest.approx(-0.005)), ("deeper", pytest.approx(0.001))]


def test_per_seed_tables_are_not_ablations():
    text = "| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1200 |\n| 42 | 1.1210 |\n"
    assert table_ablations(text) == []


def test_gain_header_flips_unsigned_values():
    text = "| Change | BPB gain |\n|---|---|\n| EMA | 0.0006 |\n"
    assert as_pairs(table_ablations(text)) == [("EMA", -0.0006)]


def test_prose_signs_and_gain_words():
    rows = prose_ablations("The activation alone is worth -0.003 BPB.\n"
                           "Raising the warmdown gave a +0.007 BPB improvement.\n"
                           "Untying the MLPs cost +0.0004 BPB (worse).\n")
    assert [r.delta_bpb for r in rows] == [-0.003, -0.007, 0.0004]


def test_nats_are_converted_only_with_a_known_ratio():
    text = "Muon momentum 0.97 changed the loss by -0.0021 nats."
    (row,) = prose_ablations(text, nats_to_bpb=0.5)
    assert row.delta_bpb == pytest.approx(-0.00105)
    (raw,) = prose_ablations(text)
    assert raw.delta_bpb is None and "nats" in raw.change


def test_extract_ablations_covers_every_row_of_the_fixture():
    rows = extract_ablations(README.read_text(encoding="utf-8"), nats_to_bpb=1.1194 / 1.89)
    deltas = sorted(round(r.delta_bpb, 6) for r in rows)
    assert deltas == sorted([-0.0017, -0.0009, -0.003, -0.0015, -0.007, 0.0004, round(-0.0021 * 1.1194 / 1.89, 6)])


def test_results_tables_keep_the_mean_gain_but_not_per_seed_rows():
    text = ("| Seed | Pre-TTT bpb | Post-TTT bpb | TTT gain | Artifact |\n|---|---|---|---|---|\n"
            "| 0 | 1.0840 | 1.0821 | −0.00187 | 15,991,018 |\n| 42 | 1.0847 | 1.0832 | −0.00155 | 15,992,546 |\n"
            "| **mean** | 1.0849 | 1.0828 | −0.00206 | 15,990,874 |\n")
    # the mean row is one model scored before and after TTT: the stated gain, named by its two columns
    assert as_pairs(table_ablations(text)) == [("TTT (mean: Pre-TTT bpb -> Post-TTT bpb)", -0.00206)]


def test_total_and_size_rows_are_not_ablations():
    text = ("| Change | Delta |\n|---|---|\n| EMA | -0.0006 BPB |\n| Artifact size | -0.8 MB |\n"
            "| **Total** | **-0.0013** |\n")
    assert as_pairs(table_ablations(text)) == [("EMA", -0.0006)]


def test_base_vs_this_table_and_improvement_row():
    text = ("## Changes from PR #198\n\n| | PR #198 | This |\n|---|---|---|\n"
            "| val_bpb (sliding s64) | 1.1318 | **1.1271** |\n| XSA | None | Last 4 layers |\n\n"
            "| Metric | Naive Baseline | This Submission |\n|---|---|---|\n| **Improvement** | — | **-0.0319** |\n")
    rows = table_ablations(text)
    assert [r.delta_bpb for r in rows] == [pytest.approx(-0.0047), -0.0319]
    assert "Changes from PR #198" in rows[0].change


def test_prose_before_after_pairs_and_bpb_twins():
    rows = prose_ablations("Always-on recurrence reached about 1.1163 BPB, while delayed recurrence improved that "
                           "to about 1.1153.\nImprovement over SOTA: -0.0290 bpb / -0.0503 nats.\n"
                           "Multi-phase SGD: -0.0008 BPP.")
    assert [r.delta_bpb for r in rows] == [pytest.approx(-0.001), -0.029, -0.0008]


def test_sign_comes_from_the_words_nearest_the_number():
    rows = prose_ablations("MuonEq-R: zero-byte cost, ~0.001 BPB improvement.\n"
                           "Untying the MLPs costs +0.0004 BPB.\n")
    assert [r.delta_bpb for r in rows] == [-0.001, 0.0004]


def test_per_seed_table_with_sliding_and_ttt_columns_gives_the_mean_ttt_effect():
    text = ("| Seed | Sliding BPP | **TTT BPP** | Artifact |\n|---|---|---|---|\n| 42 | 1.0829 | **1.0808** | 1 |\n"
            "| **Mean** | **1.0827** | **1.0810** | 2 |\n")
    assert [r.delta_bpb for r in table_ablations(text)] == [pytest.approx(-0.0017)]


def test_per_seed_standard_and_sliding_columns_give_the_sliding_effect():
    text = ("| seed | val_bpb | sliding_val_bpb | size |\n|---|---|---|---|\n"
            "| 1 | 1.2184 | 1.1971 | 15418110 |\n| 2 | 1.2182 | 1.1969 | 15422121 |\n")
    (row,) = table_ablations(text)
    assert row.delta_bpb == pytest.approx(1.197 - 1.2183) and row.n_seeds == 2
    assert row.change.startswith("sliding window eval (val_bpb -> sliding_val_bpb")


def test_a_sweep_table_of_bare_values_under_a_knob_column_is_no_per_seed_table():
    text = ("| MLP_MULT | val_bpb | Δ |\n|---|---|---|\n| 3 | 1.2655 | +0.0031 |\n| **4** (used) | **1.2624** | — |\n"
            "| 5 | 1.2641 | +0.0017 |\n\n| Seed | val_bpb | Δ |\n|---|---|---|\n| 42 | 1.2655 | +0.0031 |\n")
    assert as_pairs(table_ablations(text)) == [("MLP_MULT = 3", 0.0031), ("MLP_MULT = 5", 0.0017)]


def test_a_bullet_list_sweep_is_read_against_its_marked_line():
    text = ("- WARMDOWN_ITERS=1200: 1.2154\n- WARMDOWN_ITERS=2400: 1.2131\n- WARMDOWN_ITERS=3600: 1.2122  ← used\n"
            "- WARMDOWN_ITERS=4800: 1.2139\n\n- LR=0.01: 1.20\n- LR=0.02: 1.2100\n- LR=0.03: 1.2200\n")  # no marked line
    rows = extract_ablations(text)
    assert [(r.change, r.delta_bpb, r.reference) for r in rows] == [
        ("WARMDOWN_ITERS = 1200", 0.0032, "WARMDOWN_ITERS = 3600"),
        ("WARMDOWN_ITERS = 2400", 0.0009, "WARMDOWN_ITERS = 3600"),
        ("WARMDOWN_ITERS = 4800", 0.0017, "WARMDOWN_ITERS = 3600")]


def test_a_code_block_sweep_is_read_against_its_ref_line_and_a_footnoted_score_is_left_out():
    text = ("```\n# MUON_WD (ref 0.085)\nMUON_WD=0.060    1.08412   (+0.00131)\nMUON_WD=0.085    1.08281   (ref)\n"
            "MUON_WD=0.095    1.08236   (-0.00045)   <- kept\n\n# EMA_DECAY\nEMA_DECAY=0.995  1.08231  (+0.00069)\n"
            "EMA_DECAY=0.997  1.08162  (ref)\nEMA_DECAY=0.998  1.08410*  (+0.00248)\n```\n"
            "\\* EMA_DECAY=0.998 ran fixed-step, not a fair comparison.\n")
    rows = list_sweeps(text)
    assert [(r.change, r.delta_bpb, r.reference) for r in rows] == [
        ("MUON_WD = 0.060", 0.00131, "MUON_WD = 0.085"), ("MUON_WD = 0.095", -0.00045, "MUON_WD = 0.085"),
        ("EMA_DECAY = 0.995", 0.00069, "EMA_DECAY = 0.997")]   # the kept line is no reference; 0.998 is footnoted


def test_a_sweep_line_may_name_its_metric_before_the_score_and_a_reference_line_beats_the_chosen_one():
    text = ("```\nMUON_MOMENTUM=0.95   sliding 1.1040\nMUON_MOMENTUM=0.97   sliding 1.1024   <-- chosen\n"
            "MUON_MOMENTUM=0.99   sliding 1.1031   (reference: 09-05 record, seed 1337)\n```\n")
    assert [(r.change, r.delta_bpb, r.reference) for r in list_sweeps(text)] == [
        ("MUON_MOMENTUM = 0.95", 0.0009, "MUON_MOMENTUM = 0.99"), ("MUON_MOMENTUM = 0.97", -0.0007, "MUON_MOMENTUM = 0.99")]


def test_a_setting_line_with_its_own_delta_is_that_setting_from_the_value_it_replaced():
    text = ("- `TTT_CHUNK_TOKENS=16384` (was 32768): 1.05921 (+0.00025), and 61 s slower.\n"
            "- `TTT_EPOCHS=2` (was 1): 1.05858 (−0.00038), over budget.\n- `TTT_LORA_RANK=128`: 1.05890 (−0.00006)\n"
            "- MUON_WD=0.09 MATRIX_LR=0.03: 1.0801 (-0.0010)\n")   # two settings: no row
    assert [(r.change, r.delta_bpb, r.reference) for r in list_sweeps(text)] == [
        ("TTT_CHUNK_TOKENS = 16384", 0.00025, "TTT_CHUNK_TOKENS = 32768"), ("TTT_EPOCHS = 2", -0.00038, "TTT_EPOCHS = 1"),
        ("TTT_LORA_RANK = 128", -0.00006, None)]
    (row,) = [r for r in extract_ablations(text) if r.change.startswith("TTT_EPOCHS")]
    assert row.delta_bpb == -0.00038


def test_a_setting_line_with_a_delta_and_no_score_is_read_against_the_run_commands_setting():
    text = ("Each line is one override on top of the final config.\n\n- `QK_GAIN_INIT=5.0`: +0.00061\n"
            "- `QK_GAIN_INIT=6.0`: +0.00018\n- `MATRIX_LR=0.030`: -0.00003 (noise)\n- `TTT_EPOCHS=3`: -0.0002\n"
            "- `WARMDOWN_FRAC=0.85 MIN_LR=0.10`: -0.00015\n\n## Run\n\n```bash\nQK_GAIN_INIT=5.5 TTT_EPOCHS=3 \\\n"
            "torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n")
    assert [(r.change, r.delta_bpb, r.reference) for r in list_sweeps(text)] == [
        ("QK_GAIN_INIT = 5.0", 0.00061, "QK_GAIN_INIT = 5.5"), ("QK_GAIN_INIT = 6.0", 0.00018, "QK_GAIN_INIT = 5.5"),
        ("MATRIX_LR = 0.030", -0.00003, None)]   # TTT_EPOCHS=3 is the run's own setting: no change; two keys: none


def test_a_per_seed_table_with_post_quant_sliding_and_post_ttt_columns_gives_both_stages():
    text = ("| Seed | Pre-quant BPB | Post-quant BPB | Sliding BPB | Post-TTT BPB |\n|---|---|---|---|---|\n"
            "| 42 | 1.07391 | 1.08422 | 1.07605 | 1.06811 |\n| 0 | 1.07455 | 1.08497 | 1.07663 | 1.06874 |\n"
            "| Mean | 1.07423 | 1.08460 | 1.07634 | 1.06843 |\n")
    assert as_pairs(table_ablations(text)) == [("TTT (Sliding BPB -> Post-TTT BPB, mean)", -0.00791),
                                               ("sliding window eval (Post-quant BPB -> Sliding BPB, mean)", -0.00826)]


def test_a_per_seed_table_whose_stage_columns_do_not_name_the_unit_still_gives_the_stage():
    text = ("| Seed | Pre-quant (post-EMA) | Post-quant, old export | Post-quant, this export | Sliding s64, this export |"
            "\n|---|---|---|---|---|\n| 42 | 1.08512 | 1.09470 | 1.09431 | 1.07851 |\n"
            "| 0 | 1.08530 | 1.09492 | 1.09445 | 1.07871 |\n")
    (row,) = table_ablations(text)   # against the export the sliding column scores, not the old one
    assert row.change.startswith("sliding window eval (Post-quant, this export bpb -> Sliding s64")
    assert row.delta_bpb == pytest.approx((1.07851 + 1.07871 - 1.09431 - 1.09445) / 2)
    assert table_ablations("| Seed | val_loss | Steps |\n|---|---|---|\n| 42 | 1.9095 | 4,900 |\n") == []


def test_prose_verdicts_without_a_unit_colon_figures_and_arrow_pairs():
    rows = prose_ablations("- MIN_LR 0.10 instead of 0: 0.0004 better.\n"
                           "- Sparse attention gate on vs off: −0.0011.\n"
                           "- Sliding-window eval (stride 64) on that same int6 model: 1.1403 → 1.1186.\n"
                           "| a | 1.1403 → 1.1186 |\n")
    assert [(r.change, r.delta_bpb) for r in rows] == [
        ("Sliding-window eval (stride 64) on that same int6 model", -0.0217),
        ("MIN_LR 0.10 instead of 0", -0.0004), ("Sparse attention gate on vs off", -0.0011)]


def test_a_sentence_with_two_scores_and_no_figure_gives_the_first_arm_against_the_second():
    rows = prose_ablations("Partial RoPE came next. Rotating 16 of the 64 head dims instead of all 64 gave 1.1247 vs "
                           "1.1262, so I kept it.\nTo check it: without SmearGate 1.1241 vs 1.1226 with.\n"
                           "Higher weight decay (0.090 vs 0.085) compresses better.\n")
    assert [(r.change, r.delta_bpb) for r in rows] == [   # the sentence before names the change
        ("Partial RoPE came next. Rotating 16 of the 64 head dims instead of all 64", -0.0015)]
