"""Executors: how one (config, seed, backend) training run is carried out for the screen runner.

Every executor has ``name`` and ``run(config, seed, backend, *, on_step=None) -> train_gpt.RunResult``: the
trainer's own result type for every run, failed ones included. An executor never raises for a failed run: it
returns status "failed" (or "diverged") and the error text, and the screen goes on. ``on_step(step, total)``
is the trainer's progress callback (in-process only; the others report a run when it ends).

* ``InProcessExecutor`` (default): ``scripts.causal.screen.trainer.run`` in this process (data cached).
* ``SubprocessExecutor``: the IDENTICAL config, passed in full as JSON to a child Python process
  (``python -m scripts.causal.screen.executors --worker IN OUT``), with a wall-clock timeout. The child
  rebuilds the config, checks its hash against the parent's before training, and the parent checks
  the hash of the result again, so a silently different config is impossible.
* ``TorchrunExecutor`` (``screen/torchrun.py``): ``torchrun --standalone --nproc_per_node=N train_gpt.py`` with
  the config as env overrides (UPPER_CASE field names, bools as 0/1); the log is read through the final-line
  table (``core/log_formats.py``: post-quant, sliding and TTT stages). With a ``ScriptConfig`` (``--train-script``)
  it runs that script instead (``ScriptExecutor``). For full-fidelity confirm runs on GPUs.
* ``RayExecutor`` (``screen/ray_executor.py``): each run is a Ray task on a local or multi-node cluster; it
  also has ``run_many(jobs)``, which runs a batch concurrently and yields results in completion order.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

import train_gpt as tg
from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import REPO_ROOT, TRAIN_GPT
from scripts.causal.screen.ray_executor import RayExecutor
from scripts.causal.screen.torchrun import (  # noqa: F401  (re-exported: the torchrun path's API)
    ScriptExecutor,
    TorchrunExecutor,
    parse_train_log,
)

StepCallback = Callable[[int, int], None]


class Executor(Protocol):
    name: str

    def run(self, config: tg.Hyperparameters, seed: int, backend: str, *,
            on_step: StepCallback | None = None) -> tg.RunResult: ...


_DATA_FIELDS = ("data_path", "tokenizer_path")


def check_result_config(planned: tg.Hyperparameters, seed: int, result: tg.RunResult) -> str | None:
    """None if ``result`` was trained on exactly ``planned`` with ``seed``, else an error naming the fields.

    The trainer stores the config it ran: ``seed`` set to the run's seed and the data paths resolved to
    where the planned data folder was found (same folder name: the corpus is never switched).
    Everything else must match field by field (the config hash is checked on top).
    """
    ran = result.config or {}
    if not ran:
        return None if result.status != "ok" else "result carries no config to check"
    data_ok = {k: ran.get(k, getattr(planned, k)) for k in _DATA_FIELDS}
    if Path(str(data_ok["data_path"])).name != Path(planned.data_path).name:
        return f"data_path mismatch: planned {planned.data_path}, ran {data_ok['data_path']}"
    try:
        expected = planned.with_overrides({"seed": int(seed), **data_ok})
    except ValueError as exc:
        return f"result config unreadable: {exc}"
    want = expected.to_dict()
    skip = set(tg._HASH_EXCLUDED)
    diff = sorted(k for k in want if k not in skip and k in ran and ran[k] != want[k])
    if diff:
        return "config mismatch in " + ", ".join(f"{k} (planned {want[k]!r}, ran {ran[k]!r})" for k in diff)
    got = result.config_hash
    if got and got != tg.config_hash(expected):
        return f"config hash mismatch: planned {tg.config_hash(expected)}, ran {got}"
    return None


def failed_result(config: tg.Hyperparameters, seed: int, backend: str, error: str, *, status: str = "failed",
                  wall_s: float | None = None) -> tg.RunResult:
    """The RunResult of a run that produced no metrics (the config it was asked to run, the error). ``config``:
    Hyperparameters, or a ``ScriptConfig`` (a ``--train-script`` arm)."""
    chash = config.config_hash() if hasattr(config, "script_sha256") else tg.config_hash(config)
    return tg.RunResult(config=config.to_dict(), config_hash=chash, seed=int(seed),
                        backend=backend, versions={}, status=status, error=error,
                        wall_s=float("nan") if wall_s is None else float(wall_s))


# ---------------------------------------------------------------------------------------------
# In-process
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class InProcessExecutor:
    """Run in this process via ``scripts.causal.screen.trainer.run`` (the default; data loaded once).

    ``threads``: torch CPU threads (None = the trainer's auto choice, taken once per process)."""

    progress: bool = False
    threads: int | None = None
    name: str = "inprocess"

    def run(self, config: tg.Hyperparameters, seed: int, backend: str, *,
            on_step: StepCallback | None = None) -> tg.RunResult:
        from scripts.causal.screen import trainer

        t0 = time.perf_counter()
        try:
            return trainer.run(config, seed, backend, progress=self.progress, threads=self.threads, on_step=on_step)
        except Exception as exc:  # trainer.run should not raise; a bug there must not stop the screen
            return failed_result(config, seed, backend, f"{type(exc).__name__}: {exc}",
                                 wall_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Subprocess
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SubprocessExecutor:
    """Run each config in a fresh child interpreter with a timeout (the config travels in full)."""

    timeout_s: float = 3600.0
    python: str = sys.executable
    threads: int | None = None  # torch intra-op threads in the child (None: torch's default)
    name: str = "subprocess"

    def run(self, config: tg.Hyperparameters, seed: int, backend: str, *,
            on_step: StepCallback | None = None) -> tg.RunResult:
        expected = tg.config_hash(config)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pgc_run_") as tmp:
            inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
            inp.write_text(json.dumps({"config": config.to_dict(), "config_hash": expected,
                                       "seed": int(seed), "backend": backend}), encoding="utf-8")
            cmd = [self.python, "-m", "scripts.causal.screen.executors", "--worker", str(inp), str(out)]
            if self.threads:
                cmd += ["--threads", str(int(self.threads))]
            proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            try:
                log, _ = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return failed_result(config, seed, backend, f"timeout: run exceeded {self.timeout_s:g} s "
                                     "(raise --timeout)", wall_s=time.perf_counter() - t0)
            if proc.returncode != 0 or not out.is_file():
                tail = (log or "").strip().splitlines()[-3:]
                return failed_result(config, seed, backend,
                                     f"worker exited with code {proc.returncode}: {' | '.join(tail)}",
                                     wall_s=time.perf_counter() - t0)
            result = tg.RunResult.from_dict(json.loads(out.read_text(encoding="utf-8")))
        problem = check_result_config(config, seed, result) if result.status != "failed" else None
        if problem is not None:
            return failed_result(config, seed, backend, f"subprocess ran a different config: {problem}")
        return result


def rebuild_config(config: dict, expected_hash: str, where: str):
    """The Hyperparameters sent by the driver as a dict, rebuilt in a worker; ConfigError if its hash differs
    (the worker's train_gpt defines the fields differently from the driver's). A ``--train-script`` arm's dict
    (``train_script``, ``script_sha256``, ``env``) becomes its ScriptConfig."""
    if "train_script" in config:
        from scripts.causal.screen.script_target import ScriptConfig

        cfg = ScriptConfig(config["train_script"], config["script_sha256"], tuple(sorted(config["env"].items())))
        got = cfg.config_hash()
        if got != expected_hash:
            raise ConfigError(f"{where}: script arm rebuilt in the worker hashes to {got}, the driver sent "
                              f"{expected_hash}")
        return cfg
    cfg = tg.Hyperparameters().with_overrides(config)
    got = tg.config_hash(cfg)
    if got != expected_hash:
        raise ConfigError(f"{where}: config rebuilt in the worker hashes to {got}, the driver sent {expected_hash}; "
                          "the trainer's Hyperparameters differ between driver and worker")
    return cfg


def _worker(inp: Path, out: Path) -> int:
    from scripts.causal.screen import trainer

    job = json.loads(Path(inp).read_text(encoding="utf-8"))
    cfg = rebuild_config(job["config"], job["config_hash"], str(inp))
    result = trainer.run(cfg, int(job["seed"]), job["backend"])
    tmp = Path(str(out) + ".tmp")
    tmp.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    tmp.replace(out)
    return 0


# ---------------------------------------------------------------------------------------------
# torchrun (upstream train_gpt.py, env overrides, log parsing)
# ---------------------------------------------------------------------------------------------

def env_overrides(config: tg.Hyperparameters, seed: int) -> dict[str, str]:
    """The config as upstream env vars: UPPER_CASE field names, bools as "1"/"0", SEED = seed."""
    env = {}
    for key, value in config.to_dict().items():
        if isinstance(value, bool):
            env[key.upper()] = "1" if value else "0"
        elif value is None:
            continue
        else:
            env[key.upper()] = str(value)
    env["SEED"] = str(int(seed))
    return env


def build_torchrun_command(config: tg.Hyperparameters, seed: int, *, nproc_per_node: int = 8, train_script: Path = TRAIN_GPT,
                           torchrun: str = "torchrun") -> tuple[list[str], dict[str, str]]:
    """(argv, env overrides) to run ``train_script`` under torchrun with this exact config."""
    argv = [torchrun, "--standalone", f"--nproc_per_node={int(nproc_per_node)}", str(train_script)]
    return argv, env_overrides(config, seed)


EXECUTORS = {"inprocess": InProcessExecutor, "subprocess": SubprocessExecutor, "torchrun": TorchrunExecutor,
             "ray": RayExecutor}


def make_executor(name: str, *, timeout_s: float | None = None, nproc_per_node: int | None = None,
                  threads: int | None = None, address: str | None = None) -> Executor:
    """Build an executor from ``EXECUTORS`` by name; each option goes to the executors that have it.

    ``threads`` (torch CPU threads) reaches the in-process, subprocess and Ray executors; None keeps their
    default (in-process: the trainer's automatic choice; Ray: 1 per run). ``address`` is the Ray cluster
    (None: start a local one; "auto": join the one started with ``ray start``)."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r} is not one of {sorted(EXECUTORS)}")
    cls = EXECUTORS[name]
    given = {"timeout_s": timeout_s, "nproc_per_node": nproc_per_node, "threads": threads, "address": address}
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if v is not None and k in fields})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Subprocess worker for the screen runner (internal).")
    parser.add_argument("--worker", nargs=2, metavar=("IN_JSON", "OUT_JSON"), required=True,
                        help="run the job in IN_JSON, write the RunResult dict to OUT_JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads, e.g. 1")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        inp = Path(args.worker[0])
        if not inp.is_file():
            raise DataFormatError(f"{inp}: worker job file not found")
        return _worker(inp, Path(args.worker[1]))

    return run_cli(body, debug=args.debug, prog="executors")


if __name__ == "__main__":
    sys.exit(main())
