"""End-to-end tests for scripts/causal/extract_interventions.py on hand-written fixture records.

Each fixture folder under tests/causal/data/records/ reproduces one pitfall of the real leaderboard data.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.causal import extract_interventions as ei
from scripts.causal.core.schema import INTERVENTION_FEATURES, InterventionRecord, read_json

RECORDS = Path(__file__).parent / "data" / "records"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def payload() -> dict:
    return ei.extract([RECORDS])


@pytest.fixture(scope="module")
def by_id(payload) -> dict:
    return {r["record_id"]: r for r in payload["records"]}


def test_every_record_has_the_schema_fields(payload):
    assert len(payload["records"]) == 14
    for r in payload["records"]:
        for key in ("record_id", "track", "date", "author", "val_bpb", "pre_quant_bpb", "post_quant_bpb",
                    "artifact_bytes", "seeds", "base_prs", "features", "ablations", "provenance"):
            assert key in r, key
        assert list(r["features"]) == list(INTERVENTION_FEATURES)
        assert InterventionRecord.from_dict(r).record_id == r["record_id"]
        for feat in INTERVENTION_FEATURES:
            assert r["provenance"][f"features.{feat}"]


@pytest.mark.parametrize(
    ("record", "value", "source"),
    [
        ("2026-01-01_Baseline", 1.2243657, "submission.json:val_bpb"),
        ("2026-01-02_ValLossIsBpb", 1.14276, "submission.json:val_loss(as bpb)"),
        ("2026-01-03_SmearGateBase", 1.15, "submission.json:mean_val_bpb"),
        ("2026-01-04_SlidingHeadline", 1.1971, "submission_adapters.json:sliding_val_bpb"),
        ("2026-01-05_NoJson", 1.20576485, "README.md:headline (precise value from logs)"),
        ("2026-01-06_BestSeedJson", 1.1233, "README.md:headline mean (JSON held a single seed)"),
        ("2026-01-12_BadBytes", 1.19, "README.md:headline (precise value from logs)"),
    ],
)
def test_headline_score_variants(by_id, record, value, source):
    assert by_id[record]["val_bpb"] == pytest.approx(value, abs=1e-9)
    assert by_id[record]["provenance"]["val_bpb"] == source


def test_track_date_author_and_seeds(by_id):
    r = by_id["2026-01-03_SmearGateBase"]
    assert (r["track"], r["date"], r["author"], r["artifact_bytes"]) == (
        "track_fixture_10min", "2026-01-03", "alice", 15374243)
    assert r["seeds"] == [{"seed": 1337, "val_bpb": 1.1496}, {"seed": 42, "val_bpb": 1.1502},
                          {"seed": 7, "val_bpb": 1.1502}]
    assert by_id["2026-01-10_Study"]["track"] == "track_fixture_nonrecord"
    assert {s["seed"] for s in by_id["2026-01-05_NoJson"]["seeds"]} == {1337, 42}


def test_leaderboard_pr_is_own_pr_and_readme_wording_gives_the_base(by_id):
    r = by_id["2026-01-07_DeltaOverBase"]
    assert r["pr"] == 205 and r["base_prs"] == [101]
    assert r["base_record_ids"] == ["2026-01-03_SmearGateBase"]
    assert by_id["2026-01-03_SmearGateBase"]["pr"] == 101  # matched to its leaderboard row by score


def test_features_inherited_from_the_base_stack(by_id):
    r = by_id["2026-01-07_DeltaOverBase"]
    f, p = r["features"], r["provenance"]
    for feat in ("smeargate", "bigram_hash", "orthogonal_init", "qat"):
        assert f[feat] is True, feat
        assert p[f"features.{feat}"] == "inherited from 2026-01-03_SmearGateBase"
    assert f["mlp_mult"] == 3.0 and p["features.mlp_mult"].startswith("inherited")


def test_log_dump_env_and_code_defaults_layering(by_id):
    r = by_id["2026-01-07_DeltaOverBase"]
    f, p = r["features"], r["provenance"]
    assert f["xsa"] is True and p["features.xsa"].startswith("log:train.log")  # dump beats code default 0
    assert f["compression"] == "brotli" and f["quant_bits"] == 6.0 and f["ema"] is True
    assert f["qk_gain"] == 4.0 and p["features.qk_gain"].startswith("code:train_gpt.py")
    assert f["partial_rope"] is True and f["warmdown_iters"] == 3500


def test_baseline_fallback_is_marked(by_id):
    r = by_id["2026-01-01_Baseline"]
    assert r["features"]["muon"] is True
    assert r["provenance"]["features.muon"] == "default: naive baseline"


def test_lookalikes_dead_code_and_negative_results(by_id):
    look = by_id["2026-01-09_Lookalikes"]["features"]
    assert look["attention_gate"] is True and look["ema"] is True and look["swa"] is False
    assert look["caseops"] is True and look["lora_ttt"] is True and look["vocab_size"] == 8192
    assert by_id["2026-01-11_LateQAT"]["features"]["qat"] is False
    study = by_id["2026-01-10_Study"]
    assert study["features"]["ttt"] is False and study["features"]["smeargate"] is False
    assert study["features"]["depth_recurrence"] is False
    assert study["features"]["qat"] is True and study["features"]["compression"] == "lzma"
    assert [(a["change"], a["delta_bpb"]) for a in study["ablations"]] == [
        ("Test-time training (TTT): +0.004 BPB worse, dropped.", 0.004)]


def test_ablations_are_normalised(by_id):
    rows = by_id["2026-01-08_Ablations"]["ablations"]
    assert len(rows) == 7
    assert all(set(a) >= {"change", "delta_bpb", "source", "kind", "features", "from_value", "to_value", "metric",
                          "record_id", "base", "n_seeds", "source_kind"} for a in rows)
    typed = {a["change"][:14]: (a["kind"], a["features"], a["direction"]) for a in rows}
    assert typed["+ Legal TTT"] == ("ablation", ["ttt"], 1)
    assert typed["+ QK gain 5"] == ("no_direction", ["qk_gain"], 1)  # "from" not stated: the stack is not baseline
    assert typed["Raising the wa"] == ("ablation", ["warmdown_iters"], 1)  # direction from "Raising"
    assert typed["Muon momentum "][0] == "sweep_unmapped"
    qk = next(a for a in rows if a["change"] == "+ QK gain 5")
    assert qk["record_id"] == "2026-01-08_Ablations" and "from' is unknown" in qk["note"]
    nats = [a for a in rows if "Muon momentum" in a["change"]]
    assert nats[0]["delta_bpb"] == pytest.approx(-0.0021 * 1.1194 / 1.89, abs=1e-6)


def test_bad_input_gives_warnings_and_the_run_goes_on(tmp_path):
    shutil.copytree(RECORDS, tmp_path / "records")
    (tmp_path / "records" / "track_fixture_10min" / "2026-01-13_Empty").mkdir()
    out = ei.extract([tmp_path / "records"])
    assert len(out["records"]) == 14
    w = "\n".join(out["warnings"])
    assert "2026-01-13_Empty: not a record folder" in w
    assert "not valid UTF-8" in w and "malformed JSON" in w
    bad = next(r for r in out["records"] if r["record_id"] == "2026-01-12_BadBytes")
    assert len(bad["warnings"]) == 3 and bad["features"]["num_layers"] == 10


def test_record_that_yields_nothing_still_appears(tmp_path):
    rec = tmp_path / "track_t" / "2026-02-01_Nothing"
    rec.mkdir(parents=True)
    (rec / "README.md").write_bytes(b"")
    (rec / "submission.json").write_text("not json")
    out = ei.extract([tmp_path])
    (r,) = out["records"]
    assert r["val_bpb"] is None and r["seeds"] == [] and r["warnings"]


def test_single_record_and_track_inputs(by_id):
    single = ei.extract([RECORDS / "track_fixture_10min" / "2026-01-07_DeltaOverBase"])
    (r,) = single["records"]
    assert r["val_bpb"] == 1.11 and r["pr"] == 205  # challenge README found two levels up
    assert r["base_record_ids"] == ["2026-01-03_SmearGateBase"]  # siblings are read for lineage only
    assert r["features"]["smeargate"] is True and single["warnings"] == []
    track = ei.extract([RECORDS / "track_fixture_10min"])
    assert len(track["records"]) == 13


def test_missing_input_is_a_config_error(tmp_path):
    rc = ei.main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o.json")])
    assert rc == 1


def test_cli_writes_json_csv_and_coverage(tmp_path):
    out, csv_path, rep = tmp_path / "iv.json", tmp_path / "iv.csv", tmp_path / "cov.md"
    assert ei.main(["--input", str(RECORDS), "--output", str(out), "--csv", str(csv_path), "--report", str(rep)]) == 0
    data = read_json(out)
    assert data["schema_version"] == 2 and data["generated_from"] == [str(RECORDS)]
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == 14
    assert list(rows[0]) == ["record_id", "track", "val_bpb", *INTERVENTION_FEATURES]
    base = next(r for r in rows if r["record_id"] == "2026-01-01_Baseline")
    assert base["tied_embeddings"] == "1" and base["smeargate"] == "0" and base["activation"] == "relu2"
    text = rep.read_text()
    assert "| smeargate |" in text and "inherited" in text
    assert ei.main(["--input", str(RECORDS), "--output", str(out), "--report", str(tmp_path / "cov.json")]) == 0
    cov = json.loads((tmp_path / "cov.json").read_text())
    assert cov["features"]["num_layers"]["filled"] == 14
    kinds = cov["ablation_rows"]["kinds"]
    assert kinds["headline"] == 1 and kinds["sweep_unmapped"] == 1 and kinds["no_direction"] == 2


def test_script_runs_without_install(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "causal" / "extract_interventions.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0 and "--input" in proc.stdout


def test_committed_results_match_the_schema():
    data = read_json(REPO / "results" / "interventions.json")
    assert len(data["records"]) >= 40
    for r in data["records"]:
        assert list(r["features"]) == list(INTERVENTION_FEATURES)
    header = (REPO / "results" / "interventions.csv").read_text().splitlines()[0].split(",")
    assert header == ["record_id", "track", "val_bpb", *INTERVENTION_FEATURES]


def test_dead_code_statement_overrides_a_config_flag(tmp_path):
    rec = tmp_path / "track_t" / "2026-02-02_LateQAT"
    rec.mkdir(parents=True)
    (rec / "README.md").write_text("# Late QAT\n\n**val_bpb: 1.1248**\n\nThe late QAT branch was dead code.\n")
    (rec / "submission.json").write_text('{"val_bpb": 1.1248}')
    (rec / "train_gpt.py").write_text('import os\nclass Hyperparameters:\n'
                                      '    late_qat_threshold = float(os.environ.get("LATE_QAT_THRESHOLD", 0.15))\n')
    (r,) = ei.extract([tmp_path])["records"]
    assert r["features"]["qat"] is False and "dead code" in r["provenance"]["features.qat"]


def test_without_json_the_readme_headline_beats_a_mean_over_unrelated_logs(tmp_path):
    rec = tmp_path / "track_t" / "2026-02-03_Study"
    rec.mkdir(parents=True)
    (rec / "README.md").write_text("# Study\n\n**val_bpb: 1.3595** (4-hour run)\n")
    (rec / "log_4h.txt").write_text("final_int8_zlib_roundtrip_exact val_loss:0.94 val_bpb:1.35945128\n")
    (rec / "log_10min.txt").write_text("final_int8_zlib_roundtrip_exact val_loss:0.97 val_bpb:1.40320671\n")
    (r,) = ei.extract([tmp_path])["records"]
    assert r["val_bpb"] == 1.35945128


def test_logs_only_folder_with_an_odd_name_is_a_record(by_id):
    rec = by_id["2026-01-14_Logs Only (rerun)"]
    assert rec["val_bpb"] == pytest.approx(1.0705) and rec["provenance"]["val_bpb"] == "logs:mean of seeds"
    assert rec["leaderboard_rank"] == 4 and rec["author"] == "erin"  # matched through the %20 / (..) link
    assert rec["features"]["num_layers"] == 11 and rec["features"]["vocab_size"] == 8192
    assert [s["val_bpb"] for s in rec["seeds"]] == [1.07, 1.071]  # frontier line without val_loss
    assert rec["pre_quant_bpb"] == pytest.approx(1.079)  # "pre-quantization post-ema" line
    assert rec["ablations"] == []  # logs give scores, not ablation statements: no TTT effect is computed from them


def test_table_shapes_are_read_and_typed(by_id):
    rows = {a["change"]: a for a in by_id["2026-01-15_TableShapes"]["ablations"]}
    typed = {k: (a["kind"], a["features"], a["from_value"], a["to_value"], a["direction"], a["delta_bpb"])
             for k, a in rows.items()}
    assert typed["with SmearGate"] == ("ablation", ["smeargate"], False, True, 1, -0.003)  # with/without pair
    assert typed["11L vs 9L"] == ("ablation", ["num_layers"], 9.0, 11.0, 1, -0.0042)      # Δ vs base column
    assert typed["MLP 3x"][0] == "no_direction"              # "from" not stated: the record's base is not baseline
    assert typed["Softcap 30 -> 20"] == ("ablation", ["logit_softcap"], 30.0, 20.0, -1, 0.0006)
    assert rows["11L vs 9L"]["metric"] == "sliding"                                       # from the column name
    assert typed["MATRIX_LR = 0.04"] == ("ablation", ["matrix_lr"], 0.02, 0.04, 1, pytest.approx(-0.0018))  # sweep
    assert typed["MATRIX_LR = 0.06"] == ("ablation", ["matrix_lr"], 0.02, 0.06, 1, pytest.approx(0.0011))
    ttt = rows["TTT (Sliding BPB -> TTT BPB, mean)"]                                      # per-seed table
    assert (ttt["kind"], ttt["n_seeds"], ttt["delta_bpb"]) == ("ablation", 3, pytest.approx(-0.0023))
    head = next(a for a in rows.values() if a["change"].startswith("Improvement"))
    assert head["kind"] == "headline"
