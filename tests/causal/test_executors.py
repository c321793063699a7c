"""Tests for scripts/causal/screen/executors.py: torchrun command + upstream log parser, config checks,
and the subprocess executor running the identical config (with a timeout)."""
from __future__ import annotations

import dataclasses
import math

import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import TRAIN_GPT
from scripts.causal.screen import executors as ex

LOG = "runner/upstream_train.log"


def test_parse_upstream_log(fixtures_dir):
    out = ex.parse_train_log((fixtures_dir / LOG).read_text())
    assert out["status"] == "ok" and out["error"] is None
    assert out["post_quant_val_loss"] == pytest.approx(2.07269931)
    assert out["post_quant_val_bpb"] == pytest.approx(1.22436570)
    # step lines print 4 decimals: too coarse for the val split's bytes per token (analysis needs 1e-6), so their
    # losses are dropped; the 8-decimal round-trip line measures it
    assert out["val_bpb"] == pytest.approx(1.2172) and out["val_loss"] is None
    assert out["val_history"] == [{"step": 0, "val_loss": None, "val_bpb": 4.1077},
                                  {"step": 13780, "val_loss": None, "val_bpb": 1.2172}]
    from scripts.causal.stats.effect import bytes_per_token_from_runs

    row = {k: out[k] for k in ("post_quant_val_loss", "post_quant_val_bpb", "val_loss", "val_bpb", "val_history")}
    assert bytes_per_token_from_runs([row]) == pytest.approx(2.07269931 / (math.log(2) * 1.22436570))
    assert out["step_losses"] == [6.9370, 16.8003, 8.7530, 2.7583]
    assert out["steps"] == 13780
    assert out["artifact_bytes"] == 15863489
    assert out["train_time_s"] == pytest.approx(600.038)


def test_parse_log_without_final_line_is_failed(fixtures_dir):
    rounded = "\n".join(line for line in (fixtures_dir / LOG).read_text().splitlines() if "_exact" not in line)
    out = ex.parse_train_log(rounded)  # the rounded twin is still the post-quant score
    assert out["status"] == "ok" and out["post_quant_val_bpb"] == pytest.approx(1.2244)
    text = "\n".join(line for line in rounded.splitlines() if "final_" not in line)
    out = ex.parse_train_log(text)
    assert out["status"] == "failed" and "final_int8_zlib_roundtrip_exact" in out["error"]
    assert out["post_quant_val_bpb"] is None and out["val_bpb"] == pytest.approx(1.2172)


def test_parse_log_nan_is_diverged():
    out = ex.parse_train_log("step:1/2 train_loss:nan train_time:5ms\n"
                             "final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n")
    assert out["status"] == "diverged" and math.isnan(out["post_quant_val_bpb"])


def test_torchrun_command_and_env():
    cfg = tg.preset_config("baseline").with_overrides(activation="gelu", ln_scale=True, mlp_mult=3)
    argv, env = ex.build_torchrun_command(cfg, 42, nproc_per_node=8)
    assert argv == ["torchrun", "--standalone", "--nproc_per_node=8", str(TRAIN_GPT)]
    assert env["SEED"] == "42"
    assert env["ACTIVATION"] == "gelu" and env["LN_SCALE"] == "1" and env["TIE_EMBEDDINGS"] == "1"
    assert env["MLP_MULT"] == "3" and env["MATRIX_LR"] == "0.04" and env["COMPILE"] == "1"
    assert set(env) == {f.upper() for f in tg.Hyperparameters.field_names()}
    # The env round-trips to the identical config through the trainer's own env reader.
    assert tg.Hyperparameters.from_env(env) == cfg.with_overrides(seed=42)


def test_torchrun_executor_missing_binary_is_failed_not_raised():
    cfg = tg.preset_config("tiny")
    res = ex.TorchrunExecutor(torchrun="/nonexistent/torchrun", timeout_s=5).run(cfg, 1, "torch")
    assert isinstance(res, tg.RunResult) and res.status == "failed" and "cannot launch" in res.error
    assert ex.TorchrunExecutor().run(cfg, 1, "mlx").status == "failed"


def test_check_result_config():
    cfg = tg.preset_config("tiny")
    ran = cfg.with_overrides(seed=7, data_path="/x/datasets/shakespeare_sp1024", tokenizer_path="/x/t.model")
    ok = tg.RunResult(config=ran.to_dict(), config_hash=tg.config_hash(ran), seed=7, backend="torch", versions={})
    assert ex.check_result_config(cfg, 7, ok) is None  # default data path resolved to the corpus: fine
    assert "seed" in ex.check_result_config(cfg, 8, ok)
    other = ran.with_overrides(mlp_mult=3)
    msg = ex.check_result_config(cfg, 7, dataclasses.replace(ok, config=other.to_dict(),
                                                              config_hash=tg.config_hash(other)))
    assert msg == "config mismatch in mlp_mult (planned 2, ran 3)"
    custom = cfg.with_overrides(data_path="/data/a_sp1024")
    assert "data_path mismatch" in ex.check_result_config(custom, 7, ok)


def test_make_executor():
    assert isinstance(ex.make_executor("subprocess", timeout_s=3), ex.SubprocessExecutor)
    assert ex.make_executor("subprocess", threads=1).threads == 1
    assert ex.make_executor("torchrun", nproc_per_node=2).nproc_per_node == 2
    assert ex.make_executor("inprocess", threads=1, timeout_s=5).threads == 1  # was silently dropped
    assert ex.make_executor("inprocess").threads is None and ex.make_executor("torchrun").nproc_per_node == 8
    with pytest.raises(ConfigError, match=r"--executor 'gpu' is not one of \['inprocess', 'ray', 'subprocess', 'torchrun'\]"):
        ex.make_executor("gpu")


def test_subprocess_runs_identical_config(tiny_corpus):
    from scripts.causal.screen import trainer

    cfg = tg.preset_config("tiny").with_overrides(tiny_corpus.overrides()).with_overrides(iterations=3)
    child = ex.SubprocessExecutor(timeout_s=300).run(cfg, 5, "torch")
    assert child.status == "ok", child.error
    here = trainer.run(cfg, 5, "torch")
    assert child.config_hash == here.config_hash
    assert child.val_bpb == here.val_bpb and child.step_losses == here.step_losses  # bit-identical
    assert ex.check_result_config(cfg, 5, child) is None


def test_subprocess_timeout_is_failed(tiny_corpus):
    cfg = tg.preset_config("tiny").with_overrides(tiny_corpus.overrides())
    res = ex.SubprocessExecutor(timeout_s=0.5).run(cfg, 5, "torch")
    assert res.status == "failed" and res.error.startswith("timeout: run exceeded 0.5 s")
    assert math.isnan(res.val_bpb) and res.wall_s >= 0.5
