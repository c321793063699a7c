"""In-process trainer API: ``run(config, seed, backend) -> RunResult`` for the screening stages.

Training data is loaded once per process and cached; a model is built once per architecture and
re-initialised per seed (init keyed by parameter name, see ``train_gpt.init_weights``). A diverged or failed
run never raises: it comes back with ``status`` "diverged" / "failed" and the error text. Only an invalid
config (unknown key, bad value) raises ``ConfigError``, before anything runs.

Its CLI is ``scripts/causal/train_one.py``.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import DATA_DIR
from scripts.causal.data.shards import DEFAULT_SOURCE, corpus_paths, ensure_default_corpus

Hyperparameters = tg.Hyperparameters
RunResult = tg.RunResult
BACKENDS = ("auto", "torch", "mlx")

_DATA_CACHE: dict[tuple[str, str, int], tg.TrainData] = {}
_MODEL_CACHE: dict[tuple, Any] = {}
_MODEL_CACHE_MAX = 4  # architectures kept alive at once (a screen alternates between a handful)
_DEFAULT_THREADS = tg.torch.get_num_threads()
_AUTO_THREADS: int | None = None  # the auto decision, taken once per process (see cpu_threads)
_BLAS_HINTED = False  # the OpenBLAS hint is printed once per process


def resolve_backend(name: str = "auto") -> str:
    """"torch" or "mlx". auto: torch on CUDA, mlx on Apple Silicon (if installed), torch on a Linux CPU
    (measured faster here than mlx[cpu])."""
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r} is not supported; choose one of {list(BACKENDS)}")
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "torch"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        try:
            import mlx.core  # noqa: F401
        except ImportError:
            return "torch"
        return "mlx"
    return "torch"


def as_config(config: Hyperparameters | Mapping[str, Any] | None) -> Hyperparameters:
    """A Hyperparameters from itself or from a mapping of overrides on top of a preset.

    A mapping may name its preset under the key "preset" (default "baseline"); the other keys are fields,
    strings are coerced to the field type. Unknown keys raise ConfigError listing the valid ones.
    """
    if isinstance(config, Hyperparameters):
        return config
    overrides = dict(config or {})
    preset = str(overrides.pop("preset", "baseline"))
    try:
        return tg.preset_config(preset, **overrides)
    except tg.ConfigValueError as exc:
        raise ConfigError(str(exc)) from None


# Fields a built model never reads; every other field may shape it (GPT keeps its config and the frontier knobs
# read it at forward time), so a cached model is reused only for an otherwise identical config.
_MODEL_KEY_EXCLUDED = ("seed", "run_id", "train_log_every", "val_loss_every", "data_path", "tokenizer_path")


def _arch_key(cfg: Hyperparameters) -> tuple:
    return tuple(sorted((k, v) for k, v in cfg.to_dict().items() if k not in _MODEL_KEY_EXCLUDED))


def _names(path: str, relative: str, prepared: str) -> bool:
    """True when ``path`` is the presets' relative path or the prepared corpus' absolute one."""
    return os.path.normpath(path) == os.path.normpath(relative) or Path(path).resolve() == Path(prepared).resolve()


def names_embedded_corpus(cfg: Hyperparameters) -> bool:
    """True when cfg's data folder is the embedded default corpus (the tiny/fast presets' data)."""
    return _names(cfg.data_path, tg.EMBEDDED_DATA_PATH, corpus_paths(DATA_DIR, DEFAULT_SOURCE).data_path)


def prepare_data(cfg: Hyperparameters) -> Hyperparameters:
    """Make sure the corpus cfg names exists before training: the embedded corpus is prepared (cached, see
    ``data.shards.ensure_default_corpus``) and cfg points at it (its tokenizer too, unless cfg names another);
    any other data must already hold shards (``tg.resolve_data_paths`` raises naming the folder and the command
    that makes them)."""
    if not names_embedded_corpus(cfg):
        return tg.resolve_data_paths(cfg)
    paths = ensure_default_corpus(vocab_size=cfg.vocab_size)
    own_tokenizer = _names(cfg.tokenizer_path, tg.EMBEDDED_TOKENIZER_PATH, paths.tokenizer_path)
    return cfg.with_overrides(data_path=paths.data_path,
                              tokenizer_path=paths.tokenizer_path if own_tokenizer else cfg.tokenizer_path)


def cached_data(cfg: Hyperparameters) -> tuple[Hyperparameters, tg.TrainData]:
    """Prepare the corpus cfg names (``prepare_data``) and load it once per process."""
    cfg = prepare_data(cfg)
    key = (str(Path(cfg.data_path).resolve()), str(Path(cfg.tokenizer_path).resolve()), cfg.vocab_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = tg.load_train_data(cfg)
    return cfg, _DATA_CACHE[key]


def cached_model(cfg: Hyperparameters):
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    key = (_arch_key(cfg), str(device))
    if key not in _MODEL_CACHE:
        if len(_MODEL_CACHE) >= _MODEL_CACHE_MAX:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = tg.build_model(cfg, device)
    return _MODEL_CACHE[key], device


def _failed(cfg: Hyperparameters, seed: int, backend: str, exc: BaseException) -> RunResult:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return RunResult(config=cfg.to_dict(), config_hash=tg.config_hash(cfg), seed=seed, backend=backend,
                     versions=tg.library_versions(), status="failed", error=last)


def mlx_twin():
    """(train_gpt_mlx module, BlasStatus): OpenBLAS is preloaded (Linux + mlx[cpu]) before the first `import mlx`,
    which the standalone twin leaves to its caller (see mlx_blas.py)."""
    from scripts.causal.screen.mlx_blas import ensure_fast_blas

    global _BLAS_HINTED
    status = ensure_fast_blas()
    if status.hint and not _BLAS_HINTED:
        print(f"hint: {status.hint}", file=sys.stderr)
        _BLAS_HINTED = True
    import train_gpt_mlx

    return train_gpt_mlx, status


def _run_mlx(cfg: Hyperparameters, seed: int, data: tg.TrainData, *, progress: bool, on_step=None) -> RunResult:
    """Train with the MLX twin; its RunResult (the same fields, a twin section) becomes train_gpt's type."""
    tm, blas = mlx_twin()
    log = print if progress else None
    if log is not None and blas.tag is not None:
        log(f"mlx_blas:{blas.tag}")
    result = RunResult.from_dict(tm.train(cfg, seed, log=log, data=data, on_step=on_step).to_dict())
    if blas.tag is None:
        return result
    return dataclasses.replace(result, versions={**result.versions, "mlx_blas": blas.tag})


def busy_cores(*, window_s: float = 0.5) -> float:
    """CPU cores busy with other work right now: /proc/stat sampled over ``window_s`` while we sleep.

    Falls back to the 1-minute load average where /proc/stat is missing (macOS). The load average lags by a
    minute, so it counts work that has just finished (e.g. the `pip install` before `run_pipeline.py`)."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    first = sample()
    if first is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(window_s)
    second = sample()
    busy, total = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * busy / total if total > 0 else 0.0


def cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count and return it. None = auto: 1 thread when other work holds at least half
    the cores right now (``busy_cores``), else torch's default. Measured here: with other jobs running,
    2 spinning threads ran a `fast` run in 300 s where 1 thread took 38 s (load 1.6 to 3.2 on 2 cores);
    results are bit-identical either way (tested). The auto decision is taken once per process, before our
    first run: deciding per run would count our own previous run as "other load" and drop to 1 thread."""
    import torch

    global _AUTO_THREADS
    if threads is None:
        if _AUTO_THREADS is None:
            busy = busy_cores() >= 0.5 * (os.cpu_count() or 1)
            _AUTO_THREADS = 1 if busy else _DEFAULT_THREADS
        threads = _AUTO_THREADS
    if threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def run(config: Hyperparameters | Mapping[str, Any], seed: int, backend: str = "torch", *,
        progress: bool = False, threads: int | None = None,
        on_step: Callable[[int, int], None] | None = None) -> RunResult:
    """Train and evaluate one model in this process; never raises for a diverged or failed run.

    ``threads``: CPU threads for torch (None = auto, see ``cpu_threads``); ignored on CUDA and MLX.
    ``progress`` prints the trainer's log; ``on_step(step, total)`` is called after every training step.
    """
    cfg = as_config(config).with_overrides(seed=int(seed))
    backend = resolve_backend(backend)
    try:
        if backend == "torch":
            cpu_threads(threads)
        cfg, data = cached_data(cfg)
        if backend == "mlx":
            return _run_mlx(cfg, int(seed), data, progress=progress, on_step=on_step)
        model, device = cached_model(cfg)
        return tg.train(cfg, int(seed), log=print if progress else None, data=data, model=model, device=device,
                        on_step=on_step)
    except Exception as exc:  # noqa: BLE001 - the contract is a status, not an exception
        return _failed(cfg, int(seed), backend, exc)


def decide_threads(backend: str, log: Callable[[str], None], requested: int | None = None) -> int | None:
    """torch CPU threads for every run of a screen: ``requested``, or decided once from the load before the
    first run. None off the CPU (CUDA, MLX). Logs the decision and what it was based on.

    The thread count is part of what makes a CPU run reproducible: torch splits its reductions by thread, so
    the same seed and config give bit-identical numbers only at the same count (pin it with --threads)."""
    if backend != "torch" or tg.torch.cuda.is_available():
        return None
    if requested is not None:
        threads = cpu_threads(requested)
        log(f"torch CPU threads: {threads} (--threads)")
        return threads
    threads = cpu_threads(None)
    log(f"torch CPU threads: {threads} (auto: other work held {busy_cores():.1f} of {os.cpu_count()} cores; "
        "pin with --threads to reproduce numbers bit for bit)")
    return threads
