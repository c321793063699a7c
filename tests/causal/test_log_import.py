"""``experiment_runner.py --import-logs``: logs -> arms by config -> paired gate (seeds match) or Welch (they do not).

Record logs from ../shared/records are the inputs where available: two April records that ran the same seeds
(paired), and a record against another's re-runs on other seeds (Welch). A synthetic folder checks grouping,
the control choice, the DAG rows and the refusals on CPU without the records.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scripts.causal import experiment_runner as er
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.screen import log_import as li
from scripts.causal.screen.ledger import Ledger

RECORDS = Path(__file__).resolve().parents[2].parent / "shared" / "records" / "track_10min_16mb"
R0419 = "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT"
R0427 = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
R0429 = "2026-04-29_SmearGateBOSFix_3Seed_1.06141"
needs_records = pytest.mark.skipif(not RECORDS.is_dir(), reason="../shared/records is not beside the repo")


def _copy(dst: Path, record: str, prefix: str, pattern: str = "train_seed*.log") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted((RECORDS / record).glob(pattern)):
        shutil.copy(f, dst / f"{prefix}_{f.name}")


def _import(tmp_path: Path, folder: Path, *extra: str) -> dict:
    out = tmp_path / "out" / "runs.json"
    assert er.main(["--import-logs", str(folder), "--ledger", str(tmp_path / "ledger.sqlite"), "--output", str(out),
                    *extra]) == 0
    return json.loads((out.parent / "ablation_results.json").read_text())


@needs_records
def test_record_logs_with_matching_seeds_give_a_paired_gate_result(tmp_path):
    logs = tmp_path / "logs"
    _copy(logs, R0419, "a")  # a_* sorts first: 04-19 is the control
    _copy(logs, R0427, "b")
    res = _import(tmp_path, logs)
    assert res["pairing"] == "paired by seed" and len(res["results"]) == 1
    row = res["results"][0]
    # final scores (quantized_ttt_phased) per seed 0, 1234, 42: 04-27 minus 04-19
    d = np.array([1.06124613 - 1.06473025, 1.06208695 - 1.06562743, 1.05989454 - 1.06610085])
    assert row["n_pairs"] == 3 and row["mean_delta_bpb"] == pytest.approx(d.mean(), abs=1e-9)
    assert row["p_improve"] == pytest.approx(stats.ttest_1samp(d, 0.0, alternative="less").pvalue, rel=1e-6)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        screen = ledger.list_screens()[0]
        runs = ledger.runs(screen)
    assert len(runs) == 6 and {r.executor for r in runs} == {"import"}
    assert all(r.config["formats"]["ttt"] == "quantized_ttt" for r in runs)
    rows = json.loads((tmp_path / "out" / "experiment_rows.json").read_text())["rows"]
    assert len(rows) == 6 and {r["arm"] for r in rows} == {"control", "treatment"}


@needs_records
def test_record_logs_with_mismatched_seeds_give_a_welch_result_that_says_so(tmp_path):
    logs = tmp_path / "logs"
    _copy(logs, R0427, "a")  # seeds 0, 1234, 42
    _copy(logs, R0429, "b", "*rerun_gptq8s.log")  # seeds 42, 314, 1234
    res = _import(tmp_path, logs)
    assert res["pairing"] == "unpaired" and res["test"] == "Welch t (unpaired)"
    assert "seeds do not match" in res["pairing_note"] and "[0, 42, 1234]" in res["pairing_note"]
    row = res["results"][0]
    ctrl = [1.06124613, 1.06208695, 1.05989454]
    treat = [1.06083288, 1.06090748, 1.06248776]
    assert row["n_control"] == 3 and row["n_treatment"] == 3
    assert row["mean_delta_bpb"] == pytest.approx(np.mean(treat) - np.mean(ctrl), abs=1e-9)
    assert row["p_harm"] == pytest.approx(stats.ttest_ind(treat, ctrl, equal_var=False, alternative="greater").pvalue,
                                          rel=1e-6)
    assert "unpaired" in row["message"] and row["decision"] in ("inconclusive", "null")


def _fake_log(path: Path, *, seed: int, mlp_mult: int, bpb: float) -> None:
    path.write_text(f"run_id:x{seed} mlp_mult:{mlp_mult} model_dim:512 seed:{seed}\n"
                    f"step:10/10 val_loss:{bpb * 1.7:.8f} val_bpb:{bpb:.8f} train_time:5ms\n"
                    f"final_int8_zlib_roundtrip_exact val_loss:{(bpb + .02) * 1.7:.8f} val_bpb:{bpb + .02:.8f}\n")


def test_arms_group_by_printed_config_and_feed_the_dag(tmp_path):
    from scripts.causal.dag.prepare import validate_experiment_rows

    logs = tmp_path / "logs"
    logs.mkdir()
    for i, seed in enumerate((1, 2, 3)):
        _fake_log(logs / f"base_s{seed}.log", seed=seed, mlp_mult=2, bpb=1.30 + 0.001 * i)
        _fake_log(logs / f"mlp3_s{seed}.log", seed=seed, mlp_mult=3, bpb=1.28 + 0.001 * i + 0.0002 * seed)
    plan, records = li.import_screen(logs, control={"mlp_mult": "2"}, effect_bpb=0.002)
    assert plan.intervention_names == ("logs:mlp_mult=3",) and plan.seeds == (1, 2, 3)
    assert sorted(r.post_quant_val_bpb for r in records if r.arm == "control") == pytest.approx([1.32, 1.321, 1.322])
    rows = li.experiment_rows(plan, records)
    treat = [r for r in rows if r["arm"] == "treatment"]
    assert {(r["feature"], r["value"], r["control_value"]) for r in treat} == {("mlp_mult", 3.0, 2.0)}
    assert len(validate_experiment_rows(rows)) == 6
    res = _import(tmp_path, logs, "--import-control", "mlp_mult=2", "--effect-bpb", "0.002")
    assert res["pairing"] == "paired by seed" and res["results"][0]["decision"] == "confirmed"
    with pytest.raises(ConfigError, match="matches 0 of the 2 arms"):
        li.import_screen(logs, control={"mlp_mult": "5"}, effect_bpb=0.002)


def test_a_log_without_a_seed_or_a_folder_of_one_config_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.log").write_text("final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    with pytest.raises(DataFormatError, match="no seed in the log"):
        li.import_screen(tmp_path / "a", effect_bpb=0.002)
    (tmp_path / "b").mkdir()
    for seed in (1, 2):
        _fake_log(tmp_path / "b" / f"s{seed}.log", seed=seed, mlp_mult=2, bpb=1.3)
    with pytest.raises(DataFormatError, match="print the same config"):
        li.import_screen(tmp_path / "b", effect_bpb=0.002)
