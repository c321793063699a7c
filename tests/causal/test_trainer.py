"""Tests for scripts/causal/screen/trainer.py: the in-process run() API, its caches and its failure contract."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.core.schema import read_json
from scripts.causal.screen import trainer


def tiny(corpus, **overrides) -> dict:
    return {"preset": "tiny", "data_path": str(corpus.data_path), "tokenizer_path": str(corpus.tokenizer_path),
            **overrides}


def test_resolve_backend():
    assert trainer.resolve_backend("torch") == "torch" and trainer.resolve_backend("mlx") == "mlx"
    assert trainer.resolve_backend("auto") == "torch"  # Linux CPU here: torch is the faster backend
    with pytest.raises(ConfigError, match=r"backend='jax' is not supported; choose one of \['auto', 'torch', 'mlx'\]"):
        trainer.resolve_backend("jax")


def test_as_config_applies_preset_then_overrides_and_rejects_unknown_keys():
    cfg = trainer.as_config({"preset": "fast", "mlp_mult": "3"})
    assert cfg.mlp_mult == 3 and cfg.num_layers == tg.PRESETS["fast"]["num_layers"]
    assert trainer.as_config({}) == tg.preset_config("baseline")
    assert trainer.as_config(cfg) is cfg
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['layers'\]; valid keys are"):
        trainer.as_config({"layers": 3})
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        trainer.as_config({"preset": "huge"})


def test_run_is_deterministic_and_reuses_cached_data_and_model(tiny_corpus):
    trainer._DATA_CACHE.clear()
    trainer._MODEL_CACHE.clear()
    first = trainer.run(tiny(tiny_corpus), 7)
    data_objects = list(trainer._DATA_CACHE.values())
    model_objects = list(trainer._MODEL_CACHE.values())
    second = trainer.run(tiny(tiny_corpus), 7)
    assert first.status == "ok" and first.backend == "torch" and first.seed == 7
    assert first.val_bpb == second.val_bpb and first.post_quant_val_bpb == second.post_quant_val_bpb
    assert list(trainer._DATA_CACHE.values()) == data_objects and len(data_objects) == 1
    assert list(trainer._MODEL_CACHE.values()) == model_objects and len(model_objects) == 1
    assert first.config["seed"] == 7 and first.config_hash == tg.config_hash(tg.Hyperparameters(**first.config))
    assert set(first.versions) == {"python", "torch", "numpy"}
    assert len(first.step_losses) == first.steps == tg.PRESETS["tiny"]["iterations"]
    assert first.tokens_per_s > 0 and first.wall_s > 0 and first.artifact_bytes > 0


def test_failed_and_diverged_runs_return_a_status_instead_of_raising(tiny_corpus, tmp_path):
    missing = trainer.run(tiny(tiny_corpus, data_path=str(tmp_path / "nowhere")), 1)
    assert missing.status == "failed" and "nowhere" in missing.error and "no fineweb_train" in missing.error
    assert math.isnan(missing.val_bpb)
    diverged = trainer.run(tiny(tiny_corpus, scalar_lr=1e30), 1)
    assert diverged.status == "diverged" and diverged.error.startswith("train loss became nan")


def test_prepare_data_prepares_the_embedded_corpus_a_config_names(tiny_corpus, monkeypatch):
    """The tiny/fast presets name the embedded corpus: the adapter prepares it (ensure_default_corpus) and points
    the config at it; a config's own tokenizer is kept; other data is only resolved, never replaced."""
    calls = []
    monkeypatch.setattr(trainer, "ensure_default_corpus", lambda **_: calls.append(1) or tiny_corpus)
    cfg = trainer.prepare_data(tg.preset_config("tiny"))
    assert calls == [1] and (cfg.data_path, cfg.tokenizer_path) == (tiny_corpus.data_path, tiny_corpus.tokenizer_path)
    own = trainer.prepare_data(tg.preset_config("tiny", tokenizer_path="/elsewhere/tok.model"))
    assert own.data_path == tiny_corpus.data_path and own.tokenizer_path == "/elsewhere/tok.model"
    given = trainer.as_config(tiny(tiny_corpus))
    assert trainer.prepare_data(given) == given and len(calls) == 2
    assert not trainer.names_embedded_corpus(given)


def test_baseline_without_fineweb_fails_naming_the_download_never_switching(monkeypatch, tmp_path):
    monkeypatch.setattr(trainer, "ensure_default_corpus", lambda **_: pytest.fail("must not prepare another corpus"))
    cfg = tg.preset_config("baseline", data_path=str(tmp_path / "fineweb10B_sp1024"))
    result = trainer.run(cfg, 1)
    assert result.status == "failed" and "python scripts/causal/download_fineweb.py" in result.error
    assert str(tmp_path / "fineweb10B_sp1024") in result.error


def test_cli_writes_the_run_result(tiny_corpus, tmp_path):
    out = tmp_path / "run.json"
    from scripts.causal import train_one

    rc = train_one.main(["--preset", "tiny", "--seed", "2", "--quiet", "--out", str(out),
                       "--set", f"data_path={tiny_corpus.data_path}", "--set", f"tokenizer_path={tiny_corpus.tokenizer_path}"])
    data = read_json(out)
    assert rc == 0 and data["status"] == "ok" and data["seed"] == 2 and data["schema_version"] == 1


def test_cli_help_works_as_module_and_as_script():
    for cmd in ([sys.executable, "-m", "scripts.causal.train_one", "--help"],
                [sys.executable, str(REPO_ROOT / "scripts" / "causal" / "train_one.py"), "--help"]):
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--preset" in proc.stdout, proc.stderr


def test_schema_re_exports_run_result_lazily():
    from scripts.causal.core import schema

    assert schema.RunResult is tg.RunResult
    with pytest.raises(AttributeError):
        schema.NoSuchShape  # noqa: B018


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_backend_dispatches_to_the_twin_with_the_same_result_shape(tiny_corpus):
    pytest.importorskip("mlx.core")
    result = trainer.run(tiny(tiny_corpus, iterations=4), 1, "mlx")
    assert result.status == "ok", result.error
    assert type(result) is tg.RunResult  # the twin's own RunResult, converted: one run shape downstream
    assert result.backend == "mlx" and result.steps == 4 and math.isfinite(result.val_bpb)
    _, blas = trainer.mlx_twin()
    assert result.versions.get("mlx_blas") == blas.tag and "mlx" in result.versions


def test_auto_threads_decided_once_per_process(monkeypatch):
    """Bug fix: a per-run load check counted our own previous run as load and fell back to 1 thread."""
    import torch

    from scripts.causal.screen import trainer

    before = torch.get_num_threads()
    monkeypatch.setattr(trainer, "_AUTO_THREADS", None)
    monkeypatch.setattr(trainer, "_DEFAULT_THREADS", 2)
    monkeypatch.setattr(trainer, "busy_cores", lambda **_: 0.1)
    try:
        assert trainer.cpu_threads(None) == 2
        monkeypatch.setattr(trainer, "busy_cores", lambda **_: 5.0)  # our own run now loads the CPU
        assert trainer.cpu_threads(None) == 2
        assert trainer.cpu_threads(1) == 1  # an explicit count always wins
    finally:
        torch.set_num_threads(before)


def test_busy_cores_sees_current_work_not_the_lagging_load_average():
    """Bug fix: the 1-minute load average counted a just-finished `pip install` and chose 1 thread."""
    import os as _os
    import subprocess
    import sys
    import time

    from scripts.causal.screen import trainer

    if not _os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat")
    idle = trainer.busy_cores(window_s=0.3)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.8)  # let the child start spinning
        busy = trainer.busy_cores(window_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.0 <= idle <= (_os.cpu_count() or 1)
    assert busy >= 0.7  # one spinning process holds about one core
