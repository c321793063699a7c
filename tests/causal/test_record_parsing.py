"""Tests for scripts/causal/extract/records.py: discovery, tolerant reading, scores, config dumps, leaderboard."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.causal.extract import records as rp

RECORDS = Path(__file__).parent / "data" / "records"
TRACK = RECORDS / "track_fixture_10min"


def test_discover_records_from_root_track_and_single_folder():
    found = rp.discover_records(RECORDS)
    names = [p.name for p in found]
    assert len(names) == 14
    assert "2026-01-10_Study" in names and "2026-01-14_Logs Only (rerun)" in names  # logs only, odd name  # non-record track is found too
    assert [p.name for p in rp.discover_records(TRACK)] == [n for n in names if n != "2026-01-10_Study"]
    single = rp.discover_records(TRACK / "2026-01-05_NoJson")
    assert [p.name for p in single] == ["2026-01-05_NoJson"]


def test_frontier_final_log_lines_are_read():
    text = ("step:500/500 val_loss:1.9 val_bpb:1.12\n"
            "pre-quantization post-ema val_loss:2.78 val_bpb:1.079\n"
            "final_sliding_window_eval_exact stride:64 val_loss:1.8 val_bpb:1.10000001\n"
            "final_int6_sliding_window_exact val_loss:1.87 val_bpb:1.09876543\n"
            "ttt_sliding:done val_loss=1.8 val_bpb=1.0999\n"
            "quantized_ttt val_loss:2.7 val_bpb:1.0712\n"
            "quantized_ttt_phased val_bpb:1.0611 eval_time:300ms\n")
    assert rp.log_metrics(text) == [("pre-quantization post-ema", 1.079), ("final_sliding_window_eval_exact", 1.10000001),
                                    ("final_int6_sliding_window_exact", 1.09876543), ("ttt_sliding:done", 1.0999),
                                    ("quantized_ttt", 1.0712), ("quantized_ttt_phased", 1.0611)]
    assert rp.log_final_bpb(text) == ("quantized_ttt_phased", 1.0611)


def test_folder_without_readme_or_scores_is_not_a_record(tmp_path):
    (tmp_path / "track_x" / "empty").mkdir(parents=True)
    (tmp_path / "track_x" / "readme_only").mkdir()
    (tmp_path / "track_x" / "readme_only" / "README.md").write_text("# notes\n")
    (tmp_path / "track_x" / "log_no_score").mkdir()
    (tmp_path / "track_x" / "log_no_score" / "train.log").write_text("step:1/10 val_loss:2.0 val_bpb:1.3\n")
    assert rp.discover_records(tmp_path) == []
    assert {p.name for p in rp.empty_candidate_folders(tmp_path)} == {"empty", "readme_only", "log_no_score"}
    (tmp_path / "track_x" / "log_no_score" / "train.log").write_text("final_int8_zlib_roundtrip_exact val_bpb:1.2\n")
    assert [p.name for p in rp.discover_records(tmp_path)] == ["log_no_score"]


def test_non_utf8_is_replaced_with_a_warning():
    warnings: list[str] = []
    text = rp.read_text_safe(TRACK / "2026-01-12_BadBytes" / "README.md", warnings)
    assert "val_bpb: 1.1900" in text
    assert len(warnings) == 1 and "not valid UTF-8" in warnings[0]


def test_malformed_json_is_skipped_with_a_warning():
    warnings: list[str] = []
    src = rp.load_record(TRACK / "2026-01-12_BadBytes", warnings)
    assert src.jsons == {}
    assert any("malformed JSON" in w and "submission.json" in w for w in warnings)
    assert list(src.logs) == ["train.log"]


@pytest.mark.parametrize(
    ("payload", "value", "key"),
    [
        ({"val_bpb": 1.2243657, "val_loss": 2.07}, 1.2243657, "val_bpb"),
        ({"val_loss": 1.14276}, 1.14276, "val_loss(as bpb)"),
        ({"val_loss": 2.0727}, None, None),  # nats, not bpb
        ({"mean_val_bpb": 1.17475315, "val_bpb": 1.17}, 1.17475315, "mean_val_bpb"),
        ({"val_bpb": 1.2184, "sliding_val_bpb": 1.1971}, 1.1971, "sliding_val_bpb"),
        ({"seed_results": {"1": {"val_bpb": 1.0}, "2": {"val_bpb": 1.2}}}, 1.1, "seed_results(mean)"),
    ],
)
def test_json_headline_variants(payload, value, key):
    got, got_key = rp.json_headline(payload)
    assert got_key == key
    assert got == pytest.approx(value) if value is not None else got is None


def test_json_seed_scores_from_dict_and_parallel_lists():
    assert rp.json_seed_scores({"seed_results": {"42": {"val_bpb": 1.08}, "7": {"val_var_bpb": 1.1}}}) == [
        (42, 1.08), (7, 1.1)]
    assert rp.json_seed_scores({"seeds": [42, 0], "seed_scores": [1.09057, 1.09084]}) == [(42, 1.09057), (0, 1.09084)]


def test_log_config_reads_dump_block_and_key_value_tokens():
    text = (TRACK / "2026-01-07_DeltaOverBase" / "train.log").read_text()
    cfg = rp.log_config(text)
    assert cfg["xsa_last_n"] == "4" and cfg["compressor"] == "brotli" and cfg["ema_decay"] == "0.997"
    upstream = rp.log_config("num_layers:9 model_dim:512\nstep:10/20 val_loss:3.0 val_bpb:1.8\n")
    assert upstream == {"num_layers": "9", "model_dim": "512"}


def test_env_assignments_strip_quotes_and_markdown():
    env = rp.env_assignments("Run `EVAL_STRIDE=64` and NUM_LAYERS=11 RUN_ID='x y' \\\n SEED=1337 torchrun")
    assert env == {"eval_stride": "64", "num_layers": "11", "run_id": "x y", "seed": "1337"}


def test_code_defaults_plain_and_minified():
    code = (TRACK / "2026-01-07_DeltaOverBase" / "train_gpt.py").read_text()
    d = rp.code_defaults(code)
    assert d["xsa_last_n"] == "0" and d["rope_dims"] == "16" and d["warmdown_iters"] == "3500"
    mini = "x=int(os.environ.get('NUM_LOOPS',2));y=bool(int(os.environ.get('LN_SCALE','1')))"
    assert rp.code_defaults(mini) == {"num_loops": "2", "ln_scale": "1"}


def test_embedded_source_is_taken_from_an_upstream_style_log():
    log = ('"""doc"""\nimport os\nclass Hyperparameters:\n    a = os.environ.get("A", 1)\n'
           "logs/run.txt\nval_bpb:enabled\nnum_layers:9\n")
    code = rp.code_from_log(log)
    assert code.startswith('"""doc"""') and "val_bpb:enabled" not in code
    assert rp.log_config(log) == {"num_layers": "9"}


def test_log_final_prefers_the_exact_line():
    text = (TRACK / "2026-01-01_Baseline" / "train.log").read_text()
    assert rp.log_final_bpb(text) == ("final_int8_zlib_roundtrip_exact", 1.2243657)
    ttt = "legal_ttt val_loss:1.8898 val_bpb:1.1192 eval_time:1ms\nlegal_ttt_exact val_loss:1.88976776 val_bpb:1.11922988\n"
    assert rp.log_final_bpb(ttt) == ("legal_ttt_exact", 1.11922988)


def test_parse_leaderboard_rows_links_and_prs():
    rows = rp.parse_leaderboard((RECORDS / "README.md").read_text())
    assert [r.rank for r in rows] == [1, 2, 3, 4, 5]
    assert rows[3].record_path == "track_fixture_10min/2026-01-14_Logs Only (rerun)"  # %20 and (..) in the link
    top = rows[0]
    assert top.score == 1.11 and top.author == "carol" and top.date == "2026-01-07"
    assert top.record_path == "track_fixture_10min/2026-01-07_DeltaOverBase"
    assert top.prs == (205,)
    assert rows[2].record_path is None and rows[2].prs == (101,)


def test_find_challenge_readme_from_each_level():
    assert rp.find_challenge_readme(RECORDS) == (RECORDS / "README.md").resolve()
    assert rp.find_challenge_readme(TRACK) == (RECORDS / "README.md").resolve()
    assert rp.find_challenge_readme(TRACK / "2026-01-01_Baseline") == (RECORDS / "README.md").resolve()


def test_submission_json_prefers_submission_named_file(tmp_path):
    (tmp_path / "README.md").write_text("# r\n")
    (tmp_path / "a_extra.json").write_text(json.dumps({"val_bpb": 9.0}))
    (tmp_path / "submission_x.json").write_text(json.dumps({"val_bpb": 1.5}))
    name, data = rp.submission_json(rp.load_record(tmp_path, []))
    assert name == "submission_x.json" and data["val_bpb"] == 1.5


def test_timestamped_and_multi_run_logs():
    text = rp.strip_line_prefixes("1776142360.538 Hyperparameters:\n1776142360.538   num_layers: 11\n"
                                  "[rank0]: step:1/2 val_loss:3.0 val_bpb:1.9\n")
    assert text.startswith("Hyperparameters:\n  num_layers: 11\nstep:1/2")
    two_runs = "train_seq_len:4096 iterations:20\n...\ntrain_seq_len:1024 iterations:20\n"
    assert rp.log_config(two_runs)["train_seq_len"] == "1024"  # the last run is the submitted one


def test_readme_hyperparameter_tables():
    text = ("| Param | Value |\n|---|---|\n| bigram\\_vocab\\_size | 4096 |\n| `muon_wd` | **0.04** |\n"
            "| Layers | 11 |\n")
    assert rp.readme_config_table(text) == {"bigram_vocab_size": "4096", "muon_wd": "0.04"}


def test_other_bpb_keys_are_a_headline_fallback():
    assert rp.json_headline({"val_var_bpb": 1.1465, "pre_quant_val_bpb": 1.1}) == (1.1465, "val_var_bpb")
    assert rp.json_headline({"val_bpb_std": 0.001, "delta_vs_base_bpb": -0.002}) == (None, None)


def test_key_equals_value_tokens_and_config_class_literals():
    assert rp.log_config("args: Namespace(num_layers=11, model_dim=512, run_id='x')\n") == {
        "num_layers": "11", "model_dim": "512", "run_id": "x"}
    code = ("from dataclasses import dataclass\n@dataclass\nclass GPTConfig:\n    n_layer: int = 12\n"
            "    mlp_mult: float = 3.0  # wider\n    tie_embeddings: bool = True\n\ndef f():\n    x = 1\n")
    assert rp.code_defaults(code) == {"n_layer": "12", "mlp_mult": "3.0", "tie_embeddings": "True"}
