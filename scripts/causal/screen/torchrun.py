"""torchrun runs: launch a train_gpt.py-style script under torchrun, read its log through the final-line table.

* ``parse_train_log(text)``: every metric stage of a log (pre-quant, post-quant round trip, sliding, TTT) via
  ``core.log_formats``; a log with no post-quant/sliding/TTT line is a failed run, a non-finite final score or
  ``run_status:diverged`` a diverged one.
* ``launch(argv, env, ...)``: the torchrun process in its own session; past ``timeout_s`` the whole process
  group (torchrun and every rank) is killed, so a hung rank fails its run and leaves nothing behind.
* ``TorchrunExecutor``: our ``train_gpt.py`` with a ``Hyperparameters`` config as env overrides.
* ``ScriptExecutor``: any upstream-style script (``--train-script``) with a ``ScriptConfig`` (its sha256 and env);
  the log is written to ``log_dir`` and its path, the script's hash and the env are kept in the run's config.

Neither executor raises for a failed run: a rank that exits non-zero, a timeout, a missing final line all
come back as a ``RunResult`` with status "failed" and the reason, and the screen goes on.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import train_gpt as tg
from scripts.causal.core import log_formats as lf
from scripts.causal.core.paths import RESULTS_DIR, TRAIN_GPT
from scripts.causal.screen.script_target import ScriptConfig, script_sha256

_TRAIN_RE = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+)", re.M)
_BYTES_RE = re.compile(r"Total submission size[^:\n]*: (\d+) bytes")
_TRAIN_TIME_RE = re.compile(r"train_time:(\d+(?:\.\d+)?)ms")
_STATUS_RE = re.compile(r"^run_status:(\w+) error:(.*)$", re.M)  # train_gpt.main's line for a run that stopped
_FINAL_STAGES = ("post_quant", "sliding", "ttt")
NO_FINAL = ("log has no final score line (post-quant round trip such as final_int8_zlib_roundtrip_exact, "
            "sliding window or TTT; formats in scripts/causal/core/log_formats.py): the run did not finish")


def _precise(loss: str | None, bpb: str) -> float | None:
    digits = min(len(x.partition(".")[2]) for x in (loss or "", bpb))
    return float(loss) if loss is not None and digits >= 6 else None


def parse_train_log(text: str) -> dict:
    """Metrics of a train_gpt.py-style log: val_loss/val_bpb (pre-quant), post_quant_*, sliding_*, ttt_* (None
    when the stage has no line), ``final_stage``, ``formats`` (stage -> table entry), step_losses, val_history,
    steps, artifact_bytes, train_time_s, status and error."""
    text = lf.strip_prefixes(text)
    stages = lf.parse_stages(text)
    step_losses = [float(m.group(2)) for m in _TRAIN_RE.finditer(text)]
    val_fmt = next(f for f in lf.FORMATS if f.name == "step_val")
    # A loss printed to 4 decimals (upstream's step lines) cannot measure the val split's bytes per token (the
    # effect of interest needs 1e-6): such losses are kept as None; the 8-decimal final lines carry it.
    val_history = [{"step": int(re.match(r"step:(\d+)", m.group(0)).group(1)),
                    "val_loss": _precise(m.group("loss"), m.group("bpb")), "val_bpb": float(m.group("bpb"))}
                   for m in val_fmt.pattern.finditer(text)]
    steps = max([int(m.group(1)) for m in _TRAIN_RE.finditer(text)] + [v["step"] for v in val_history] + [0])
    sizes, times = _BYTES_RE.findall(text), _TRAIN_TIME_RE.findall(text)
    out = {"step_losses": step_losses, "val_history": val_history, "steps": steps,
           "artifact_bytes": int(sizes[-1]) if sizes else None,
           "train_time_s": float(times[-1]) / 1000.0 if times else None,
           "formats": {s: v.format for s, v in stages.items()}, "status": "ok", "error": None}
    for stage in ("pre_quant", *_FINAL_STAGES):
        sc = stages.get(stage)
        loss = sc.val_loss if sc is not None and sc.decimals >= 6 else None
        key = "" if stage == "pre_quant" else f"{stage}_"
        out[f"{key}val_loss"], out[f"{key}val_bpb"] = (loss, sc.val_bpb) if sc else (None, None)
    finals = [s for s in _FINAL_STAGES if s in stages]
    out["final_stage"] = finals[-1] if finals else None
    stopped = _STATUS_RE.findall(text)
    if stopped and stopped[-1][0] == "diverged":
        out["status"], out["error"] = "diverged", stopped[-1][1]
    elif not finals:
        out["status"], out["error"] = "failed", NO_FINAL
    elif not math.isfinite(stages[finals[-1]].val_bpb):
        out["status"], out["error"] = "diverged", f"final val_bpb ({finals[-1]}) is not finite"
    return out


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; torchrun starts each rank in a session of its own, so
    killing torchrun's process group does not reach the ranks)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM torchrun (its agent stops the ranks), then SIGKILL whatever of the tree is left after ``grace_s``."""
    tree = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def launch(argv: list[str], env: dict[str, str], *, cwd: str | Path, timeout_s: float) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, combined stdout+stderr, wall seconds). On timeout torchrun and every rank
    (its whole process tree) are killed; OSError (no torchrun) propagates to the caller."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=str(cwd), env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out or "", time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a survivor still holds the pipe: give up on the rest of the log
            out = ""
        return None, out or "", time.perf_counter() - t0


_EXC_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[\w.]+)?(?:Error|Exception)\b.*)$", re.M)


def _tail(text: str, n: int = 3) -> str:
    """The rank's own exception line (e.g. ``RuntimeError: CUDA is required``) if any, then the last lines."""
    causes = [c for c in _EXC_LINE.findall(text) if "ChildFailedError" not in c]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    tail = " | ".join(lines[-n:])[-400:]
    return f"{causes[-1][:300]} ... {tail}" if causes else tail


def _result(config: dict, chash: str, seed: int, backend: str, rc: int | None, text: str, wall: float,
            timeout_s: float, tokens_per_step: int = 0) -> tg.RunResult:
    """The RunResult of one torchrun launch: parsed metrics; failed when a rank failed or the run timed out."""
    parsed = parse_train_log(text)
    status, error = parsed["status"], parsed["error"]
    if rc is None:
        status, error = "failed", f"timeout: no exit after {timeout_s:g} s (a rank hung or the run is too long); " \
                                  f"every rank was killed. Last lines: {_tail(text)}"
    elif rc != 0:
        status, error = "failed", f"torchrun exited with code {rc} (a rank failed): {_tail(text)}"
    nan = float("nan")
    get = lambda k: parsed[k] if parsed[k] is not None else nan  # noqa: E731
    tps = tokens_per_step * parsed["steps"] / parsed["train_time_s"] if parsed["train_time_s"] else 0.0
    return tg.RunResult(
        config=config, config_hash=chash, seed=int(seed), backend=backend, versions={}, status=status, error=error,
        wall_s=wall, step_losses=parsed["step_losses"], val_history=parsed["val_history"], steps=parsed["steps"],
        val_loss=get("val_loss"), val_bpb=get("val_bpb"), post_quant_val_loss=get("post_quant_val_loss"),
        post_quant_val_bpb=get("post_quant_val_bpb"), sliding_val_loss=get("sliding_val_loss"),
        sliding_val_bpb=get("sliding_val_bpb"), ttt_val_loss=get("ttt_val_loss"), ttt_val_bpb=get("ttt_val_bpb"),
        artifact_bytes=parsed["artifact_bytes"] or 0, tokens_per_s=tps)


def torchrun_argv(script: str | Path, *, nproc_per_node: int, torchrun: str = "torchrun") -> list[str]:
    return [torchrun, "--standalone", f"--nproc_per_node={int(nproc_per_node)}", str(script)]


@dataclasses.dataclass
class TorchrunExecutor:
    """Our ``train_gpt.py`` under torchrun with the config as env overrides (GPU confirm runs)."""

    nproc_per_node: int = 8
    timeout_s: float = 3600.0
    train_script: Path = TRAIN_GPT
    torchrun: str = "torchrun"
    name: str = "torchrun"

    def run(self, config: tg.Hyperparameters, seed: int, backend: str, *, on_step=None) -> tg.RunResult:
        from scripts.causal.screen.executors import env_overrides, failed_result
        from scripts.causal.screen.trainer import prepare_data  # the corpus the config names, prepared first

        if isinstance(config, ScriptConfig):
            return ScriptExecutor(nproc_per_node=self.nproc_per_node, timeout_s=self.timeout_s,
                                  torchrun=self.torchrun).run(config, seed, backend)
        if backend != "torch":
            return failed_result(config, seed, backend, f"torchrun executor runs the torch backend only, got {backend!r}")
        try:
            config = prepare_data(config)
        except Exception as exc:  # noqa: BLE001 - a run's failure is a status
            return failed_result(config, seed, backend, f"data not ready: {exc}")
        argv = torchrun_argv(self.train_script, nproc_per_node=self.nproc_per_node, torchrun=self.torchrun)
        try:
            rc, text, wall = launch(argv, env_overrides(config, seed), cwd=Path(self.train_script).parent,
                                    timeout_s=self.timeout_s)
        except OSError as exc:
            return failed_result(config, seed, backend, f"cannot launch {argv[0]!r}: {exc}")
        cfg = config.with_overrides({"seed": int(seed)})
        return _result(cfg.to_dict(), tg.config_hash(cfg), seed, backend, rc, text, wall, self.timeout_s,
                       int(config.train_batch_tokens))


@dataclasses.dataclass
class ScriptExecutor:
    """An upstream-style script under torchrun: env = the arm's ``ScriptConfig.env`` + SEED; cwd ``workdir``
    (default: the current directory, where the script's relative ./data paths point); log in ``log_dir``."""

    nproc_per_node: int = 8
    timeout_s: float = 3600.0
    torchrun: str = "torchrun"
    workdir: Path | None = None
    log_dir: Path = RESULTS_DIR / "script_logs"
    name: str = "torchrun"

    def run(self, config: ScriptConfig, seed: int, backend: str, *, on_step=None) -> tg.RunResult:
        env = config.env_for(seed)
        run_id = f"{Path(config.train_script).stem}_{config.config_hash()[:10]}_seed{int(seed)}"
        env.setdefault("RUN_ID", run_id)
        log_path = Path(self.log_dir) / f"{run_id}.log"
        ran = {**config.to_dict(), "env": env, "seed": int(seed), "log_path": str(log_path)}
        chash = config.config_hash()

        def failed(error: str, wall: float = float("nan")) -> tg.RunResult:
            return tg.RunResult(config=ran, config_hash=chash, seed=int(seed), backend=backend, versions={},
                                status="failed", error=error, wall_s=wall)

        script = Path(config.train_script)
        if not script.is_file():
            return failed(f"{script}: train script not found")
        if script_sha256(script) != config.script_sha256:
            return failed(f"{script} changed since the screen was planned (sha256 {config.script_sha256[:12]} -> "
                          f"{script_sha256(script)[:12]}); start a new screen")
        argv = torchrun_argv(script, nproc_per_node=self.nproc_per_node, torchrun=self.torchrun)
        try:
            rc, text, wall = launch(argv, env, cwd=self.workdir or Path.cwd(), timeout_s=self.timeout_s)
        except OSError as exc:
            return failed(f"cannot launch {argv[0]!r}: {exc}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(text, encoding="utf-8")
        return _result(ran, chash, seed, backend, rc, text, wall, self.timeout_s)
