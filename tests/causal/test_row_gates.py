"""Typing that is right or silent: knob settings (extract.knobs), the gates (extract.row_gates), the table shapes
(extract.table_shapes), and the verified-table scorer (extract.verified_score), on small hand-written rows."""
from __future__ import annotations

import pytest

from scripts.causal.core.schema import AblationRow, EvidenceEntry, VerifiedRecord
from scripts.causal.extract.ablations import extract_ablations, prose_ablations, table_ablations
from scripts.causal.extract.knobs import knob_setting
from scripts.causal.extract.prose import list_sweeps
from scripts.causal.extract.row_gates import gate_record, half_unit
from scripts.causal.extract.row_types import type_rows
from scripts.causal.extract.verified_score import claim_is_right, same_knob, score_typing


def typed(text: str) -> dict[str, tuple]:
    """change -> (kind, features, from, to) of every row mined and typed from a README snippet."""
    return {r.change: (r.kind, r.features, r.from_value, r.to_value, r.delta_bpb)
            for r in type_rows(extract_ablations(text))}


@pytest.mark.parametrize("text, reference, want", [
    ("MATRIX_LR=0.02", "MATRIX_LR=0.04 (default)", ("matrix_lr", 0.04, 0.02)),    # env name of a trainer field
    ("warmdown 3000 -> 3500", None, ("warmdown_iters", 3000, 3500)),              # plain-English name
    ("Muon weight decay 0.02 -> 0.04", None, ("muon_wd", 0.02, 0.04)),
    ("raised the warmdown from 3000 to 3500", None, ("warmdown_iters", 3000, 3500)),
    ("reducing momentum to 0.80", None, ("muon_momentum", None, 0.8)),
    ("MATRIX_LR 0.02 vs 0.04", None, ("matrix_lr", 0.04, 0.02)),                 # "A vs B": B is the reference
    ("Outer Layers = 2", None, None),                 # the whole key must name a knob: not "layers"
    ("+ SWA_start_frac=0.4", None, None),             # a key outside the trainer's vocabulary
    ("EVAL_STRIDE=64, MATRIX_LR=0.02", None, None),   # two settings at once
    ("512d 10L mlp=2", "640d 10L mlp=3", None),       # the labels differ in more than the setting
    ("Muon momentum = 0.97 (vs PR #1394's default 0.99)", None, ("muon_momentum", 0.99, 0.97)),  # the base's value
    ("XSA on the last 4 -> all 11 layers", None, ("xsa_last_n", 4, 11)),          # XSA's scope, not num_layers
    ("XSA on all 11 layers (instead of last 4)", None, ("xsa_last_n", 4, 11)),
    ("XSA on the last 4 layers vs all 11", None, ("xsa_last_n", 11, 4)),
    ("+ XSA on all 11 layers", None, None),                                       # from an unstated scope
    ("TRAIN_BATCH_TOKENS=65536 (from 98304)", None, ("train_batch_tokens", 98304, 65536)),   # the replaced value
    ("LR floor (MIN_LR): 0.0 -> 0.1", None, ("min_lr", 0.0, 0.1)),               # the env name in parentheses
    ("TTT epochs per chunk: 1 -> 3", None, ("ttt_epochs", 1, 3)),                  # a unit after the knob's name
    ("XSA_LAST_N=11 (all layers) instead of 4", None, ("xsa_last_n", 4, 11)),
    ("MUON_ROW_NORMALIZE=0", None, ("muon_row_normalize", 1, 0)),                 # a switch set off was on
])
def test_knob_settings_come_from_the_trainers_vocabulary(text, reference, want):
    assert knob_setting(text, reference) == want


def test_a_sweep_table_is_read_against_its_reference_row():
    text = ("| WD | bpb | Delta |\n|---|---|---|\n| **0.02** | **1.2955** | baseline |\n"
            "| 0.04 | 1.2983 | +0.003 |\n| 0.06 | 1.3060 | +0.011 |\n")
    rows = typed(text)
    assert rows["WD = 0.04"] == ("ablation", ("muon_wd",), 0.02, 0.04, 0.003)
    assert rows["WD = 0.06"][:4] == ("ablation", ("muon_wd",), 0.02, 0.06)


def test_a_sweep_whose_delta_column_names_its_reference():
    text = ("| MATRIX_LR | val_bpb | Δ vs 0.04 |\n|---|---|---|\n| 0.06 | 1.2300 | +0.0020 |\n"
            "| 0.02 | 1.2250 | -0.0030 |\n")
    assert typed(text)["MATRIX_LR = 0.02"] == ("ablation", ("matrix_lr",), 0.04, 0.02, -0.003)


def test_a_config_row_that_differs_in_another_column_is_a_bundle():
    text = ("| Layers | MLP | Params | val_bpb |\n|---|---|---|---|\n| **10** | **4x** | **117M** | **1.654** |\n"
            "| 13 | 3x | 125M | 1.745 |\n| 12 | 4x | 130M | 1.660 |\n")
    rows = {c.split(" (")[0]: v for c, v in typed(text).items()}
    assert rows["Layers = 13"][0] == "multi_feature"               # 10 -> 13 layers *and* MLP 4x -> 3x
    assert rows["Layers = 12"][:4] == ("ablation", ("num_layers",), 10, 12)  # Params is a result, not a setting


def test_configs_against_the_first_row_are_not_one_change_but_a_with_without_pair_is():
    text = ("| Config | val_bpb |\n|---|---|\n| 9L every=2 | 1.3000 |\n| 10L uniform | 1.3200 |\n")
    assert typed(text)["10L uniform"][0] == "nonadjacent"
    pair = ("| Setting | val_bpb |\n|---|---|\n| without SmearGate | 1.1300 |\n| with SmearGate | 1.1270 |\n")
    assert typed(pair)["with SmearGate"][:4] == ("ablation", ("smeargate",), False, True)


def test_before_after_tables_and_experiment_logs():
    text = ("| Change | PR #374 | This | Impact |\n|---|---|---|---|\n"
            "| **EMA** | None (SWA only) | EMA decay=0.997 | -0.0006 BPB |\n| **Warmdown** | 3000 | 3500 | -0.0002 BPB |\n"
            "| **Late QAT threshold** | 0.1 | 0.15 | -0.0001 BPB |\n")
    rows = typed(text)
    assert rows["+ EMA"][:2] == ("ablation", ("ema",))
    assert rows["Warmdown: 3000 -> 3500"] == ("ablation", ("warmdown_iters",), 3000, 3500, -0.0002)
    assert rows["Late QAT threshold: 0.1 -> 0.15"][0] != "ablation"        # a knob the trainer does not have
    log = ("| Exp | Description | val_bpb | Delta | Status |\n|---|---|---|---|---|\n"
           "| E1 | baseline | 1.2000 | - | kept |\n| E2 | + XSA on last 4 layers | 1.1970 | -0.0030 | kept |\n"
           "| E3 | MATRIX_LR=0.03 | 1.1990 | +0.0020 | reverted |\n")
    rows = typed(log)
    assert rows["+ XSA on last 4 layers"][:2] == ("ablation", ("xsa",))     # the description column, not "E2"


def test_one_model_scored_two_ways_is_the_eval_stage():
    kv = ("| Metric | Value |\n|---|---|\n| Pre-quant val_bpb | 1.1427 |\n| Int6 roundtrip val_bpb | 1.1494 |\n"
          "| **Int6 sliding val_bpb (s64)** | **1.1271** |\n| Code size | 66,133 bytes |\n")
    (row,) = table_ablations(kv)
    assert row.delta_bpb == pytest.approx(-0.0223) and "metric pair" in row.source
    assert typed(kv)[row.change][:2] == ("ablation", ("sliding_window_eval",))   # "int6" in the label: no bundle
    cfg = ("| Config | Sliding BPB | Standard BPB |\n|---|---|---|\n| BPE best | 1.2566 | 1.2721 |\n"
           "| Byte best | 1.3263 | 1.3348 |\n")
    deltas = sorted(r.delta_bpb for r in table_ablations(cfg))
    assert deltas == [pytest.approx(-0.0155), pytest.approx(-0.0085)]


def test_gates_silence_quoted_figures_penalties_bundles_and_assumed_values():
    text = ("LeakyReLU(0.5)^2 was ablated at -0.003 BPB in PR #493.\n\n"
            "Int6 export costs 0.0018 bpb quality loss.\n\n"
            "Combined with XSA and a bigger BigramHash this gave -0.004 bpb.\n\n"
            "Sliding window eval improves val\\_bpb by \\~0.034 with zero artifact cost.\n")
    kinds = {c[:20]: v[0] for c, v in typed(text).items()}
    assert kinds["LeakyReLU(0.5)^2 was"] == "quoted_estimate"
    assert kinds["Int6 export costs 0."] == "penalty"
    assert kinds["Combined with XSA an"] == "multi_feature"
    assert kinds["Sliding window eval "] == "ablation"     # "val_bpb by ~0.034": the unit before the number
    assert typed(text)["Sliding window eval improves by"][4] == -0.034
    assert typed("Going to 11 layers gave -0.004 bpb.\n")["Going to 11 layers gave"][0] == "no_direction"


def test_prose_that_restates_a_table_row_with_another_figure_is_not_a_second_measurement():
    table = AblationRow(change="+ LeakyReLU^2", delta_bpb=-0.0021, source="README table 'Ablation'", kind="ablation",
                        features=("activation",), source_kind="table", to_value="leaky_relu2")
    same = AblationRow(change="LeakyReLU^2 delivers", delta_bpb=-0.002, source="README prose", kind="ablation",
                       features=("activation",), source_kind="prose", to_value="leaky_relu2")
    other = AblationRow(change="LeakyReLU^2 delivers", delta_bpb=-0.003, source="README prose", kind="ablation",
                        features=("activation",), source_kind="prose", to_value="leaky_relu2")
    assert [r.kind for r in gate_record([table, same, other])] == ["ablation", "ablation", "restated"]
    # a sweep line that states other values than the table's row is another change, not a restatement
    steps = AblationRow(change="+ warmdown 1200 -> 3000", delta_bpb=-0.0074, source="README table 'Ablation'",
                        kind="ablation", features=("warmdown_iters",), source_kind="table", from_value=1200,
                        to_value=3000)
    sweep = AblationRow(change="WARMDOWN_ITERS = 4000", delta_bpb=0.0013, source="README list", kind="ablation",
                        features=("warmdown_iters",), source_kind="prose", from_value=3000, to_value=4000)
    assert [r.kind for r in gate_record([steps, sweep])] == ["ablation", "ablation"]
    assert half_unit(-0.002) == pytest.approx(0.0005) and half_unit(-0.0021) == pytest.approx(0.00005)


def _entry(i, klass, knob, frm, to, delta):
    return EvidenceEntry(record_id="r", id=i, klass=klass, change="", knob=knob, from_value=frm, to_value=to,
                         intervention=None, delta_bpb=delta, delta_nats=None, delta_stated="", metric="post_quant",
                         stack="", stack_record=None, reference="", seeds=1, hardware="8xH100", quote="q",
                         file="README.md", line=1, date="2026-04-10")


def test_the_scorer_counts_right_claims_wrong_claims_and_misses():
    rec = VerifiedRecord("r", "track_10min_16mb", "2026-04-10", (), False, "", (
        _entry(1, "single_change", "muon_wd", 0.02, 0.04, 0.0028),
        _entry(2, "bundle", None, None, None, -0.0045),
        _entry(3, "single_change", "activation", "relu2", "leaky_relu2", -0.0021)))
    rows = [{"change": "WD = 0.04", "delta_bpb": 0.003, "kind": "ablation", "features": ["muon_weight_decay"],
             "direction": 1, "from_value": 0.02, "to_value": 0.04},           # stated to 3 decimals: matches 0.0028
            {"change": "+ XSA", "delta_bpb": -0.0045, "kind": "ablation", "features": ["xsa"], "direction": 1}]
    s = score_typing([{"record_id": "r", "ablations": rows}], {"r": rec})
    assert (s.n_claims, s.n_right, s.n_single_change, s.n_found) == (2, 1, 2, 1)
    assert s.precision == 0.5 and s.recall == 0.5
    assert "#2 bundle" in s.wrong[0] and "r#3" in s.missed[0]
    assert score_typing([], {"r": rec}, after="2026-04-10").n_records == 0   # the cutoff keeps later records only
    assert same_knob("muon_wd", "muon_weight_decay") and not same_knob("muon_wd", "matrix_lr")
    assert claim_is_right({"features": ["activation"], "to_value": "leaky_relu2"}, rec.entries[2])
    assert not claim_is_right({"features": ["activation"], "to_value": "gelu"}, rec.entries[2])


def test_a_sweep_is_read_against_its_one_bold_row_and_a_stack_against_the_row_above():
    ns = ("| Steps | val_bpb | roundtrip |\n|---|---|---|\n| 2 | 1.684 | 1.733 |\n| **3** | **1.671** | **1.672** |\n"
          "| 5 | 1.713 | 1.719 |\n")
    rows = typed(ns)   # the bold row is the record's choice, the other rows are measured from it
    assert {k: v[0] for k, v in rows.items()} == {"Steps = 2": "sweep_unmapped", "Steps = 5": "sweep_unmapped"}
    assert rows["Steps = 5"][4] == pytest.approx(0.042)   # a bare "Steps" names no knob ...
    named = typed(ns.replace("| Steps |", "| NS steps |"))   # ... "NS steps" does (muon_backend_steps)
    assert named["NS steps = 2"][:5] == ("ablation", ("muon_backend_steps",), 3, 2, pytest.approx(0.013))
    assert named["NS steps = 5"][2:5] == (3, 5, pytest.approx(0.042))
    stack = ("| Change | val_bpb | Delta |\n|---|---|---|\n| base | 1.1446 | baseline |\n"
             "| + bigram=8192 | 1.1434 | -0.0012 |\n| + bigram=10240 | 1.1426 | -0.0008 |\n")
    rows = typed(stack)   # each "+" row is an increment over the row above: 8192 -> 10240; the first has no "from"
    assert rows["+ bigram=10240"][:4] == ("ablation", ("bigram_buckets",), 8192, 10240)
    assert rows["+ bigram=8192"][0] == "sweep_unmapped"


def test_a_batch_under_1024_counts_sequences_not_tokens():
    assert knob_setting("Batch Size = 65536", "Batch Size = 524288") == ("train_batch_tokens", 524288, 65536)
    assert knob_setting("batch size 32 -> 64") is None


def test_per_seed_means_leave_out_approximate_cells_on_both_columns():
    text = ("| Seed | val_bpb (standard) | val_bpb (sliding) |\n|---|---|---|\n| 1337 | 1.1821 | 1.1610 |\n"
            "| 42 | ~1.1815 | 1.1598 |\n| 3 | ~1.1810 | 1.1586 |\n")
    (row,) = table_ablations(text)   # only seed 1337 is exact in both columns
    assert row.delta_bpb == pytest.approx(1.1610 - 1.1821) and row.n_seeds == 1


def test_an_eval_stage_pair_is_a_bundle_where_the_record_also_applies_another_eval_transform():
    text = ("| Seed | RT bpb | Sliding BPB (s16) |\n|---|---|---|\n| 1 | 1.1842 | 1.1570 |\n| 2 | 1.1840 | 1.1571 |\n")
    (row,) = type_rows(extract_ablations(text))
    assert row.kind == "ablation" and row.features == ("sliding_window_eval",)
    for applied, kind in [("- **Temperature scaling (T=0.90):** grid on training tokens\n", "multi_feature"),
                          ("# SP8192 + Legal TTT + Causal N-gram Token Tilt\n", "multi_feature"),
                          ("- No TTT, SLOT, n-gram cache, or eval-time adaptation\n", "ablation"),   # negated
                          ("| Optimal temperature | 1.02 |\n", "ablation")]:                    # no T below 1
        (row,) = type_rows(extract_ablations(text), text=applied + text)
        assert row.kind == kind, applied


def test_the_scorer_accepts_a_claim_read_the_other_way():
    rec = VerifiedRecord("r", "track_10min_16mb", "2026-04-10", (), False, "", (
        _entry(1, "single_change", "grad_clip_norm", 0.0, 1.0, -0.003),))
    rows = [{"change": "Grad Clip = 0.0 (off)", "delta_bpb": 0.003, "kind": "ablation", "features": ["grad_clip_norm"],
             "direction": -1, "from_value": 1.0, "to_value": 0.0}]   # 1.0 -> 0.0, +0.003: the same measurement
    s = score_typing([{"record_id": "r", "ablations": rows}], {"r": rec})
    assert (s.n_right, s.n_found) == (1, 1)
    rows[0]["delta_bpb"] = -0.003   # the same values with the sign of the other reading: wrong
    assert score_typing([{"record_id": "r", "ablations": rows}], {"r": rec}).n_right == 0


def test_an_experiment_log_reads_each_run_against_the_run_it_names_or_the_run_above():
    log = ("| Run | Key Changes | val_bpb |\n|---|---|---|\n| R1 | LR=0.003, 600s | 2.074 |\n"
           "| R17 | g=128, softcap=15 | 1.684 |\n| R18 | g=128, softcap=10 | 1.671 |\n"
           "| R31 | + Momentum 0.85 | 1.616 |\n| R32 | Momentum 0.75 | 1.617 |\n| R33 | Mode 2 + EMA@60% | 1.668 |\n"
           "| R34 | Mode 2 (MLP down BWN) | 1.699 |\n| R39 | R18 + EMA@60% | 1.690 |\n| R40 | 13L MLP 3x | 1.745 |\n")
    rows = typed(log)
    assert rows["softcap=10"][:4] == ("ablation", ("logit_softcap",), 15, 10)       # one setting differs
    assert rows["softcap=10"][4] == pytest.approx(-0.013)
    assert rows["Momentum=0.75"][:4] == ("ablation", ("muon_momentum",), 0.85, 0.75)  # "word value" is a setting
    assert rows["+ EMA@60%"][:2] == ("ablation", ("ema",))          # R39 names R18: measured against it
    assert rows["+ EMA@60%"][4] == pytest.approx(1.690 - 1.671)
    assert rows["13L MLP 3x"][0] == "multi_feature"                # differs from the run above in two settings
    # R34 drops a setting R33 had: not one named change, and no "+" increment: no claim
    assert all(v[0] != "ablation" for k, v in rows.items() if "Mode 2" in k)


def test_a_value_column_is_named_by_its_heading_when_only_the_heading_names_a_knob():
    ns = ("### NS Step Count Ablation\n\n| Steps | val_bpb |\n|---|---|\n| 2 | 1.684 |\n| **3** | **1.671** |\n")
    assert typed(ns)["NS Step Count = 2"][:4] == ("ablation", ("muon_backend_steps",), 3, 2)
    other = ("### Group Size Ablation\n\n| Steps | val_bpb |\n|---|---|\n| 2 | 1.684 |\n| **3** | **1.671** |\n")
    assert "Steps = 2" in typed(other)   # the heading names no knob: the column keeps its own name


def test_pre_and_post_ema_columns_give_the_average_s_effect_on_the_same_runs():
    text = ("| Seed | Pre-EMA BPB | Post-EMA BPB | Post-Quant BPB |\n|---|---|---|---|\n"
            "| 42 | 1.0733 | 1.07257 | 1.08502 |\n| 0 | 1.0723 | 1.07108 | 1.08392 |\n| 1234 | 1.0713 | 1.07174 | 1.08517 |\n")
    rows = typed(text)
    (name,) = [k for k in rows if k.startswith("EMA")]
    assert rows[name][:4] == ("ablation", ("ema",), False, True)
    assert rows[name][4] == pytest.approx((1.07257 + 1.07108 + 1.07174 - 1.0733 - 1.0723 - 1.0713) / 3, abs=1e-7)


def test_a_stack_row_scored_under_both_eval_columns_also_gives_the_stage_effect():
    text = ("| Change | Pre-TTT bpb | Post-TTT bpb | Delta |\n|---|---|---|---|\n| base | 1.1234 | — | — |\n"
            "| + Legal TTT | — | 1.1217 | -0.0017 |\n| + **LeakyReLU(0.5)²** | 1.1213 | **1.1183** | **-0.0021** |\n")
    rows = typed(text)
    assert rows["+ LeakyReLU(0.5)²"][4] == pytest.approx(-0.0021)          # the increment over the row above
    (stage,) = [k for k in rows if k.startswith("TTT (")]                  # and the TTT effect on that config
    assert rows[stage][:2] == ("ablation", ("ttt",)) and rows[stage][4] == pytest.approx(-0.003)


def test_a_pr_named_as_the_base_is_no_quoted_figure():
    text = "1. **Muon momentum = 0.97** (vs PR #1394's default 0.99) consistently reduces BPB by 0.0005 across seeds.\n"
    ((kind, feats, frm, to, d),) = typed(text).values()
    assert (kind, feats, frm, to, d) == ("ablation", ("muon_momentum",), 0.99, 0.97, -0.0005)
    quoted = "LeakyReLU(0.5)^2 was ablated at -0.003 BPB in PR #493.\n"
    assert [v[0] for v in typed(quoted).values()] == ["quoted_estimate"]


def test_adding_a_feature_is_not_widening_it_to_a_level_from_an_unstated_one():
    """'XSA applied to all blocks' on a stack that had XSA on its last 4 layers (entry: None -> 'all') was scored
    right as the claim 'xsa False -> True' (adds XSA): True equals any level. An add matches a level entry only
    when the entry says the feature was off before."""
    row = {"features": ["xsa"], "from_value": False, "to_value": True, "direction": 1}
    assert not claim_is_right(row, _entry(1, "single_change", "xsa", None, "all", 0.0013))
    assert claim_is_right(row, _entry(2, "single_change", "xsa", False, "last4", -0.002))   # an add to a level
    assert claim_is_right(row, _entry(3, "single_change", "xsa", False, True, -0.002))


def test_a_feature_extended_to_all_layers_is_a_scope_not_an_add():
    text = "XSA applied to all blocks including loop core on every repeat: **+0.001 worse** (1.1953 vs 1.1940).\n"
    (row,) = [r for r in type_rows(extract_ablations(text)) if r.features == ("xsa",)]
    assert row.kind == "sweep_unmapped"      # the stack may already have XSA on some layers
    added = "Adding XSA on the last 3 of 11 layers: 0.002 BPB improvement.\n"   # a scope of an add: still an add
    assert [(r.kind, r.from_value, r.to_value) for r in type_rows(extract_ablations(added))] == [("ablation", False, True)]


def test_a_heading_that_states_a_setting_gives_the_row_its_knob_and_the_compared_value_its_from():
    """'### BigramHash(10240)' over '- Reduces token-pair hash collisions vs 4096 buckets (+0.001 bpb)': the row
    was read under the section before it (the blank line's newline opened the paragraph, so its heading was not
    stripped) and left unmapped. It is BigramHash 4096 -> 10240."""
    text = ("### Mixed Int5/Int6 Quantization\n- Int5 MLP saves ~1.86MB\n\n### BigramHash(10240)\n"
            "- Hash consecutive token pairs into a 10240-bucket table\n"
            "- Reduces token-pair hash collisions vs 4096 buckets (+0.001 bpb)\n")
    (row,) = type_rows(extract_ablations(text))
    assert row.source == "README prose (section 'BigramHash(10240)')"
    assert (row.kind, row.features, row.from_value, row.to_value, row.delta_bpb) == \
        ("ablation", ("bigram_buckets",), 4096, 10240, -0.001)
    two = text.replace("vs 4096 buckets", "vs 4096 or 2048 buckets, vs 2048")   # two compared values: silent
    assert [r.kind for r in type_rows(extract_ablations(two))] == ["unmapped"]
    scores = text.replace("vs 4096 buckets (+0.001 bpb)", "no gain (1.2980 vs 1.2963, +0.0017 bpb)")
    assert [r.kind for r in type_rows(extract_ablations(scores))] == ["unmapped"]   # two scores, not a setting


def test_a_log_whose_delta_header_names_one_run_reads_rows_built_on_another_run_as_nonadjacent():
    """'| Exp | Description | val_bpb | Δ vs E0 |': every delta is against E0, so 'E3 + XSA last 4' is E0 plus three
    changes, not E3 plus XSA. The run may sit in another table ('| vs E5 |' under a table of E7-E9)."""
    text = ("| Exp | Description | val_bpb | Δ vs E0 | Status |\n|---|---|---|---|---|\n"
            "| E0 | PR #1861 base | 1.1276 | — | base |\n| E1 | E0 + late QAT (last 15%) | 1.1262 | -0.0014 | kept |\n"
            "| E2 | E1 + GPTQ-lite clip search | 1.1247 | -0.0029 | kept |\n"
            "| E3 | E2 + XSA last 4 | 1.1228 | -0.0048 | kept |\n\n"
            "| Exp | Description | val_bpb | vs E5 |\n|---|---|---|---|\n| E7 | E2 + SmearGate | 1.0821 | +0.0023 |\n"
            "| E8 | E5 + EMA | 1.0801 | +0.0003 |\n")
    rows = {r.change: r for r in type_rows(extract_ablations(text))}
    assert (rows["E0 + late QAT (last 15%)"].kind, rows["E0 + late QAT (last 15%)"].features) == ("ablation", ("qat",))
    assert {rows[k].kind for k in ("E1 + GPTQ-lite clip search", "E2 + XSA last 4", "E2 + SmearGate")} == \
        {"nonadjacent"}
    assert rows["E5 + EMA"].kind == "ablation"
    # each row built on a run of the same table is also read against that run, from the two scores
    assert (rows["+ XSA last 4"].kind, rows["+ XSA last 4"].features) == ("ablation", ("xsa",))
    assert rows["+ XSA last 4"].delta_bpb == pytest.approx(1.1228 - 1.1247) and "vs run E2" in rows["+ XSA last 4"].source
    assert "+ SmearGate" not in rows   # E2 is in the other table


def test_step_counts_one_wallclock_cap_apart_are_one_run_length():
    text = ("| Run | What | Steps | val_bpb |\n|---|---|---|---|\n| R1 | PR #1019 config | 6,930 | 1.1152 |\n"
            "| R2 | R1 + BigramHash 3072 → 4096 | 6,918 | 1.1146 |\n"
            "| R3 | R2 + QK_GAIN_INIT 4.0 → 4.5 (slower node) | 6,410 | 1.1151 |\n")
    rows = {r.change.split(" (")[0]: r for r in type_rows(extract_ablations(text))}
    assert (rows["+ BigramHash 3072 → 4096"].kind, rows["+ BigramHash 3072 → 4096"].delta_bpb) == ("ablation", -0.0006)
    assert rows["+ QK_GAIN_INIT 4.0 → 4.5"].kind == "multi_feature"   # 7% fewer steps: a run length of its own


def test_a_log_row_with_no_run_named_is_a_variant_of_the_run_the_delta_header_names():
    text = ("| ID | Change | val_bpb | Δ vs E0 |\n|---|---|---|---|\n| E0 | base: 10L, BigramHash 4096 | 1.1458 | — |\n"
            "| E1 | BIGRAM_BUCKETS 4096 → 8192 | 1.1441 | −0.0017 |\n| E2 | WARMDOWN_ITERS 3000 → 4000 | 1.1452 | −0.0006 |\n")
    rows = {r.change: r for r in type_rows(extract_ablations(text))}
    assert (rows["WARMDOWN_ITERS 3000 → 4000"].kind, rows["WARMDOWN_ITERS 3000 → 4000"].delta_bpb) == ("ablation", -0.0006)


def test_a_row_that_sets_a_knob_and_changes_something_else_is_a_bundle():
    text = ("| Change | val_bpb | Delta |\n|---|---|---|\n| base | 1.2000 | — |\n"
            "| + Muon WD 0.04 → 0.085 and embedding WD 0.085 | 1.1994 | -0.0006 |\n"
            "| + EMA 0.997 + warmdown 1200 → 2400 | 1.1907 | -0.0087 |\n| + QK_GAIN_INIT 4.0 → 5.0, seed 42 | 1.1900 | -0.0007 |\n")
    assert [(r.kind, r.features) for r in type_rows(extract_ablations(text))] == \
        [("multi_feature", ("muon_wd",)), ("multi_feature", ("warmdown_iters",)), ("ablation", ("qk_gain",))]


def test_a_data_loader_stride_is_no_eval_stride_and_an_embedding_width_is_no_quant_bits():
    text = ("| Change | val_bpb | Delta |\n|---|---|---|\n| base | 1.2000 | — |\n"
            "| + coprime-stride data loader | 1.1997 | -0.0003 |\n| + Stride (chunk=256) | 1.1900 | -0.0097 |\n"
            "| int7 vs int8 embeddings | 1.1904 | +0.0004 |\n")
    loader, stride, embed = type_rows(extract_ablations(text))
    assert (loader.kind, loader.features, stride.kind, stride.features) == \
        ("unmapped", (), "ablation", ("sliding_window_eval",))
    assert embed.kind != "ablation" and "quant_bits" not in embed.features   # was "quant_bits 8 -> 7"


def test_a_vs_b_reads_which_side_switches_the_feature_and_two_variants_are_no_add():
    text = ("- Sparse attention gate on vs off: −0.0011.\n- BOS-masked SmearGate vs unmasked SmearGate: −0.0003.\n"
            "- Without EMA vs with EMA: +0.0020.\n")
    got = [(r.kind, r.features, r.from_value, r.to_value) for r in type_rows(extract_ablations(text))]
    assert got == [("ablation", ("attention_gate",), False, True), ("unmapped", ("smeargate",), None, None),
                   ("ablation", ("ema",), True, False)]


def test_the_stack_a_change_was_measured_on_is_no_part_of_the_change():
    """'on that same int6 model' named quant_bits (a bundle); 'on the PR #1874 base' read as a quoted figure; the
    scores '(1.1230 vs 1.1270)' were read as the layer counts."""
    text = ("- Sliding-window eval (stride 64) on that same int6 model: 1.1403 → 1.1186.\n"
            "- On the PR #1874 base, before anything else here, 11 layers instead of 10: 0.0040 better "
            "(1.1230 vs 1.1270, seed 1337).\n- sp8192 vs sp4096 on the same 10L model: +0.0023 bpb.\n")
    got = [(r.kind, r.features, r.from_value, r.to_value) for r in type_rows(extract_ablations(text))]
    assert got == [("ablation", ("sliding_window_eval",), False, True), ("ablation", ("num_layers",), 10, 11),
                   ("multi_feature", ("vocab_size",), 4096, 8192)]   # a tokenizer change is never one change


def test_a_section_on_one_technique_names_the_change_its_rows_measure():
    """'### SmearGate' then 'Reported as -0.0011 in PR #1667. On this stack it was neutral: +0.0003 (...)': the
    second sentence measured SmearGate here; it no longer borrows the quoted sentence before it (a sentence with a
    figure of its own is another statement), and the heading names its change. A heading of a list, a knob or a
    setting names none."""
    text = ("### SmearGate\n\nReported as −0.0011 in PR #1667. On this stack it was neutral to slightly negative: "
            "+0.0003 (1.0867 vs 1.0864, seed 42).\n\n### 9. LeakyReLU(0.5)²\n\nShowed **-0.003 improvement on "
            "2xH100** (1-shard).\n\n### Per-layer TTT learning rates\n\nHere: +0.00011 (1.05783 vs 1.05772).\n\n"
            "### 11. BigramHash(10240)\n\nOn looped: +0.0017 worse.\n")
    got = [(r.kind, r.features, r.from_value, r.to_value) for r in type_rows(extract_ablations(text))]
    assert got == [("ablation", ("smeargate",), False, True), ("ablation", ("activation",), None, "leaky_relu2"),
                   ("unmapped", ("ttt",), None, None), ("unmapped", ("bigram_hash",), None, None)]


def test_a_log_with_a_parent_column_reads_each_run_against_its_parent():
    """'| Run | Parent | Change | BPB |': R6 (parent R4) '+ LeakyReLU' was read against R5, the row above, which
    added BigramHash too; 'EMA off (seed 42)' on a seed-1337 log differs in seed as well."""
    text = ("| Run | Parent | Change | BPB (s64) |\n|---|---|---|---|\n| R0 | — | PR #1060 reproduction | 1.1248 |\n"
            "| R1 | R0 | + EMA 0.997 | 1.1236 |\n| R3 | R1 | + warmdown 3000 → 3500 | 1.1221 |\n"
            "| R5 | R3 | + BigramHash 3072 + LeakyReLU(0.5)² | 1.1196 |\n| R6 | R3 | + LeakyReLU(0.5)² | 1.1204 |\n"
            "| R9 | R6 | EMA off (seed 42) | 1.1220 |\n")
    got = [(r.kind, r.features, r.reference, r.delta_bpb) for r in type_rows(extract_ablations(text))]
    assert got == [("ablation", ("ema",), "PR #1060 reproduction", -0.0012),
                   ("ablation", ("warmdown_iters",), "+ EMA 0.997", -0.0015),
                   ("multi_feature", ("bigram_hash", "activation"), "+ warmdown 3000 → 3500", -0.0025),
                   ("ablation", ("activation",), "+ warmdown 3000 → 3500", -0.0017),   # R3, its parent, not R5
                   ("nonadjacent", ("ema",), "LeakyReLU ²", 0.0016)]


def test_a_numeric_knob_of_a_level_feature_and_a_replaced_variant_are_no_level_change_or_add():
    text = ("| Change | val_bpb | Delta |\n|---|---|---|\n| base | 1.2000 | — |\n"
            "| GPTQ calibration: 64 AR self-gen seqs -> 128 AR self-gen seqs | 1.1998 | -0.0002 |\n"
            "| + sparse attention gate (replaces the dense gate) | 1.1989 | -0.0009 |\n"
            "| + loop layers 3-5 (was 4-5) | 1.1974 | -0.0015 |\n")
    assert [r.kind for r in type_rows(extract_ablations(text))] == ["sweep_unmapped"] * 3


def test_a_signed_figure_keeps_its_sign_against_a_later_clause_and_against_is_no_gain():
    rows = prose_ablations("I did the two together because the EMA run alone looked flat: on seed 42 it was +0.0004 "
                           "bpb against the same config without EMA, and I only saw a gain once the warmdown grew.\n"
                           "- Reduces token-pair hash collisions vs 4096 buckets (+0.001 bpb)\n")
    assert [r.delta_bpb for r in rows] == [0.0004, -0.001]


def test_the_third_synthetic_batch_s_first_look_mistakes_stay_fixed():
    """A row scored two ways is the stage, not its label's setting; a switch of a feature set to 48 is another
    knob; 'EMA decay' is a knob of EMA; '... from layer 5 instead of 7' sets where a feature applies; a trailing
    'off' removes; a '<date> record' column is the before column of a changes table."""
    text = ("| Change | Pre-TTT bpb | Post-TTT bpb | Δ |\n|---|---|---|---|\n| base | 1.1173 | 1.1146 | — |\n"
            "| + EMA decay 0.997 → 0.998 | 1.1170 | 1.1143 | -0.0003 |\n\n"
            "## Phased-TTT sweep\n\n| LoRA rank | Post-TTT BPB | Δ vs submitted |\n|---|---|---|\n| **64** | 1.05801 | — |\n"
            "| 48 | 1.05833 | +0.00032 |\n\n"
            "| Change | 04-01 record | This | Impact |\n|---|---|---|---|\n| EMA decay | 0.997 | 0.9965 | -0.0002 |\n\n"
            "- Parallel residuals from layer 5 instead of 7: +0.0006 bpb.\n"
            "- Row normalization before Newton-Schulz (MuonEq-R) off: +0.00031 bpb.\n")
    got = {r.change[:30]: (r.kind, r.features) for r in type_rows(extract_ablations(text))}
    assert got["TTT (+ EMA decay 0.997 → 0.998"] == ("ablation", ("ttt",))
    assert got["LoRA rank = 48"] == ("ablation", ("ttt_lora_rank",))   # the column names the knob, not the heading
    assert got["EMA decay: 0.997 -> 0.9965"] == ("ablation", ("ema_decay",))
    assert got["Parallel residuals from layer "] == ("sweep_unmapped", ("parallel_residuals",))
    row = [r for r in type_rows(extract_ablations(text)) if r.change.startswith("Row normalization")][0]
    assert (row.kind, row.features, row.from_value, row.to_value) == ("ablation", ("muoneq_r",), True, False)


def test_a_grid_of_settings_reads_each_row_against_its_bold_reference_row_by_the_columns_that_differ():
    text = ("| LoRA rank | Prefix docs | Phases | Post-TTT BPB | Δ vs submitted | Eval time |\n|---|---|---|---|---|---|\n"
            "| **64** | **3000** | **3** | **1.05801** | — | 541 s |\n| 48 | 3000 | 3 | 1.05833 | +0.00032 | 529 s |\n"
            "| 64 | 3500 | 3 | — | — | 618 s (over budget) |\n| 80 | 2500 | 3 | 1.05878 | +0.00077 | 501 s |\n")
    rows = typed(text)
    assert rows["LoRA rank = 48"][:5] == ("ablation", ("ttt_lora_rank",), 64, 48, 0.00032)
    assert rows["LoRA rank = 80 (also differs in Prefix docs 3000/2500)"][0] == "multi_feature"


def test_a_signed_figure_a_change_is_worth_and_two_levels_of_one_feature_a_vs_b():
    rows = typed("There, LeakyReLU(0.5)² instead of relu² was worth −0.0042 (1.3127 vs 1.3169).\n"
                 "A fused kernel should be worth about 0.0002 at most.\n")   # unsigned: no figure of a change
    assert list(rows.values()) == [("ablation", ("activation",), "relu2", "leaky_relu2", -0.0042)]


def test_the_fifth_synthetic_batch_s_first_look_mistakes_stay_fixed():
    """A note that says its row ran at other settings makes the row a bundle; a '+ both' row shows the '+' rows
    are alternatives on the first row, not a stack; a variant in a technique's section is not the technique; a
    change to a part of a feature ('the MLPs of the looped layers') is not the feature."""
    text = ("| MATRIX_LR | Sliding BPB | note |\n|---|---|---|\n| 0.022 | 1.1016 | reference |\n| 0.026 | 1.1023 | |\n"
            "| 0.024 | 1.1027 | momentum 0.99 run |\n\n"
            "| Config | Post-quant BPB |\n|---|---|\n| base config | 1.0921 |\n| + BigramHash(2048×128) | 1.0917 |\n"
            "| + value embeddings (layers 9,10) | 1.0925 |\n| + both | 1.0919 |\n\n"
            "### With noise QAT\n\n- Gaussian noise with the same variance instead of uniform: +0.0018 (1.1608)\n"
            "- Noise on the token embedding as well: +0.0006\n\n"
            "Untying the MLPs of the looped layers (attention stays shared) was 0.00018 better but bigger.\n")
    rows = {k.split(" (")[0]: v for k, v in typed(text).items()}
    assert rows["MATRIX_LR = 0.026"][:4] == ("ablation", ("matrix_lr",), 0.022, 0.026)
    assert rows["MATRIX_LR = 0.024"][0] == "multi_feature"
    assert rows["+ value embeddings"][4] == pytest.approx(0.0004)   # vs the first row, not the BigramHash row
    assert rows["Gaussian noise with the same variance instead of uniform"][0] != "ablation"
    assert rows["Noise on the token embedding as well"][0] != "ablation"
    assert rows["Untying the MLPs of the looped layers"][0] == "unmapped"


def test_a_width_in_parentheses_a_decision_after_the_figure_and_u_net_are_read_as_such():
    rows = typed("- Value embeddings on layers 9-10 (VE dim 128): +0.00012. Removed.\n"
                 "- BigramHash(2048, dim 128) on top: +0.0002, dropped; the vocabulary covers it.\n"
                 "- Skip gates off (plain U-Net skips): +0.00026\n")
    assert rows["Value embeddings on layers 9-10 (VE dim 128)"][:2] == ("ablation", ("value_embeddings",))
    assert rows["BigramHash(2048, dim 128) on top"][:4] == ("ablation", ("bigram_hash",), False, True)
    assert rows["Skip gates off (plain U-Net skips)"][0] != "headline"   # "U-Net" is no "net" effect


def test_the_sixth_synthetic_batch_s_first_look_mistakes_stay_fixed():
    """'+ 2 layers (13L)' adds two layers; a '| knob | value |' table's label is the setting, two keys a bundle;
    a LoRA TTT column is LoRA TTT; 'the score from a to b' and 'a against b' are score pairs; 'sliding=1.087'."""
    text = ("| Run | Config | BPB |\n|---|---|---|\n| L3 | 11L, 4 h | 1.0455 |\n| L4 | L3 + 2 layers (13L) | 1.0398 |\n\n"
            "| knob | value | sliding | Δ ref |\n|---|---|---|---|\n| ref | | 1.09839 | |\n"
            "| MUON_WD | 0.060 | 1.09922 | +0.00083 |\n| MATRIX_LR, MUON_WD | 0.026, 0.100 | 1.09874 | +0.00035 |\n\n"
            "| Seed | sliding s64 bpb | LoRA TTT bpb |\n|---|---|---|\n| 1 | 1.0820 | 1.0786 |\n| 2 | 1.0822 | 1.0786 |\n\n"
            "Moving XSA from the last 4 layers to the last 6 took the sliding score from 1.0931 to 1.0917.\n")
    rows = {k.split(" (")[0]: v for k, v in typed(text).items()}
    assert rows["+ 2 layers"][:4] == ("ablation", ("num_layers",), 11.0, 13.0)
    assert rows["MUON_WD = 0.060"][0] == "sweep_unmapped"   # from what, the table does not say
    assert rows["MATRIX_LR = 0.026, MUON_WD = 0.100"][0] == "multi_feature"
    assert rows["LoRA TTT"][:2] == ("ablation", ("lora_ttt",))
    xsa = next(v for k, v in rows.items() if k.startswith("Moving XSA"))
    assert xsa[:5] == ("ablation", ("xsa_last_n",), 4, 6, pytest.approx(-0.0014))
    assert same_knob("tie_embeddings", "tied_embeddings")
    assert [(r.change, r.delta_bpb) for r in list_sweeps("submitted   1.08655\nMUON_ROW_NORMALIZE=0   1.08702   +0.00047\n")] \
        == [("MUON_ROW_NORMALIZE = 0", 0.00047)]   # a delta after the score, no parentheses
    assert [(r.change, r.delta_bpb) for r in list_sweeps("```\nQAT_START_FRAC=0.7  sliding=1.1601\n"
                                                          "QAT_START_FRAC=0.8  sliding=1.1590  # used\n"
                                                          "QAT_START_FRAC=0.9  sliding=1.1634\n```\n")] == [
        ("QAT_START_FRAC = 0.7", 0.0011), ("QAT_START_FRAC = 0.9", 0.0044)]


def test_run_lines_that_name_their_parent_in_brackets_are_read_against_it():
    text = ("**exp01** — baseline, upstream defaults (9L 512d, relu²): 1.3412\n\n"
            "**exp02 [exp01]** — relu² → leaky_relu(0.5)²: 1.3381. nice.\n\n"
            "**exp03 [exp02]** — + SmearGate: 1.3349\n\n**exp04 [exp02]** — + BigramHash 2048 × 128: 1.3340\n\n"
            "**exp05 [exp09]** — + EMA: 1.3300\n")   # exp09 has no line of its own: no row
    rows = typed(text)
    assert rows["relu² → leaky_relu(0.5)²"][:5] == ("ablation", ("activation",), "relu2", "leaky_relu2",
                                                   pytest.approx(-0.0031))
    assert rows["+ SmearGate"][:2] == ("ablation", ("smeargate",)) and rows["+ SmearGate"][4] == pytest.approx(-0.0032)
    assert rows["+ BigramHash 2048 × 128"][4] == pytest.approx(-0.0041)   # against exp02, not the line above
    assert "+ EMA" not in rows


def test_a_delta_cell_or_source_column_that_names_another_pr_makes_the_row_quoted():
    text = ("| Change | Source | Effect |\n|---|---|---|\n| Prefix docs 2000 -> 2500 | this work | -0.00031 (seed 0) |\n"
            "| EMA decay 0.997 -> 0.9965 | PR #2480 | -0.0004 (as reported in PR #2480) |\n")
    assert typed(text)["EMA decay 0.997 -> 0.9965"][0] == "quoted_estimate"


def test_a_multiplier_instead_of_another_with_its_unit_gives_from_and_to():
    assert typed("- MLP 3.5x instead of 3x: -0.0006, 16.2 MB\n")["MLP 3.5x instead of 3x"][:4] == \
        ("ablation", ("mlp_mult",), 3.0, 3.5)


def test_a_multiplier_written_with_the_times_sign_keeps_its_decimals():
    text = ("| Run | Parent | Change | BPB | Δ vs parent |\n|---|---|---|---|---|\n"
            "| q00 | — | base (MLP 4×) | 1.07898 | — |\n| q01 | q00 | MLP 4× → 4.5× (retrained) | 1.07400 | −0.00498 |\n")
    assert typed(text)["MLP 4× → 4.5× (retrained)"][:4] == ("ablation", ("mlp_mult",), 4.0, 4.5)
