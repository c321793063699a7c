"""Prepared check of the CUDA path on ONE GPU (H100/H200), in under 8 minutes, with only the project's files.

Steps (each independent: a failing step logs its error, the check goes on):
  baseline      the `baseline` preset for --baseline-steps steps, in process (FineWeb if present, else the
                embedded corpus prepared under data/; the log and JSON say which), with ms/step and peak memory
  torchrun      the same config through `torchrun --standalone --nproc_per_node=1 train_gpt.py` (env vars)
  screen        a 2-seed x 2-arm paired screen, 1 GPU per run: the Ray executor when `import ray` works and
                the project has one, else "ray not installed: skipped" and the in-process executor
  cpu_vs_cuda   the `tiny` config and seed on CPU (fp32) and on CUDA (bf16, compiled, first call an eval)
  rerun         same-seed reruns of that tiny config on CUDA (not bit-identical there; the spread is reported)
  script_screen a paired 2-arm screen (control vs mlp_mult_3 through its MLP_MULT env form) on a RECORD's
                train_gpt.py through --train-script's machinery (knobs from the source, torchrun, 1 GPU per
                run, reduced MAX_WALLCLOCK_SECONDS); --train-script PATH, default the NaiveBaseline record's
                script under ../shared/records. The dry run screens the CPU stand-in script (gloo, 2 ranks).
  import        --import-logs on the logs that screen wrote: arms by printed config, paired by seed, the same
                gate; its scores must equal the ones the screen recorded
ms/step is compared with upstream's 43.54 ms/step on 8xH100 (records/track_10min_16mb/2026-03-17_NaiveBaseline):
one GPU runs all 8 micro-batches of a 524,288-token step (8x the tokens per GPU), so the 1-GPU reference is
8 x 43.54 = 348.3 ms/step, assuming perfect 8-GPU scaling upstream. Upstream's 43.54 ms include its all-reduces,
which one GPU does not pay, so at equal kernel speed the ratio should come out at or a little below 1.0.

    bash bench/gpu_check.sh [OUT_DIR]            # on the GPU box, from the repo root (default bench/gpu_check_out)
    bash bench/gpu_check.sh OUT --cpu-dry-run    # tiny sizes on CPU: proves every step end to end
Writes OUT/gpu_check.json, OUT/gpu_check.md and OUT/gpu_check.log. Imports neither causal-learn nor ray.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import train_gpt as tg
from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import DATA_DIR, REPO_ROOT, TRAIN_GPT
from scripts.causal.core.schema import write_json

SCHEMA_VERSION = 1
UPSTREAM_MS_PER_STEP_8GPU = 43.54  # NaiveBaseline train.log: step_avg:43.54ms at 524,288 tokens/step
UPSTREAM_GPUS = 8
UPSTREAM_PEAK_MIB = 10184  # same log: "peak memory allocated: 10184 MiB" per GPU (65,536-token micro-batches)
UPSTREAM_TOKENS_PER_STEP = 524_288
STEPS = ("baseline", "torchrun", "screen", "cpu_vs_cuda", "rerun", "script_screen", "import")
RECORD_SCRIPT = REPO_ROOT.parent / "shared" / "records" / "track_10min_16mb" / "2026-03-17_NaiveBaseline" / "train_gpt.py"
STANDIN_SCRIPT = REPO_ROOT / "tests" / "causal" / "data" / "standin" / "train_gpt_standin.py"
SCREEN_ARMS = {"control": {}, "leaky_relu2": {"activation": "leaky_relu2"}}


@dataclasses.dataclass
class Corpus:
    name: str  # "fineweb10B_sp1024" | "embedded:<folder>" | "synthetic (no prepared corpus found)"
    data_path: str
    tokenizer_path: str

    def overrides(self) -> dict[str, str]:
        return {"data_path": self.data_path, "tokenizer_path": self.tokenizer_path}


@dataclasses.dataclass
class Plan:
    """Sizes of one check. `gpu()` is the real check; `dry_run()` the same steps at tiny sizes on CPU."""

    device: str
    baseline: dict  # overrides on the baseline preset
    screen_preset: str
    screen_overrides: dict
    tiny: dict  # overrides on the tiny preset for cpu_vs_cuda and rerun
    reruns: int = 3
    seeds: tuple[int, ...] = (1, 2)
    cpu_threads: int | None = None  # torch CPU threads (None: torch's default; the dry run uses 1)
    train_script: Path | None = None  # script_screen's record script (None: RECORD_SCRIPT; dry run: the stand-in)
    script_wallclock_s: float = 20.0  # MAX_WALLCLOCK_SECONDS of each script_screen run
    script_timeout_s: float = 240.0  # per-run limit of the script_screen runs

    @classmethod
    def gpu(cls, baseline_steps: int) -> Plan:
        return cls(device="cuda",
                   baseline={"iterations": baseline_steps, "warmup_steps": 10, "warmdown_iters": baseline_steps // 4,
                             "val_loss_every": 0, "train_log_every": 50, "max_wallclock_seconds": 0.0},
                   screen_preset="fast", screen_overrides={"val_batch_size": 262_144},
                   tiny={"compile": True, "warmup_steps": 0, "val_loss_every": 4})

    @classmethod
    def dry_run(cls, baseline_steps: int) -> Plan:
        tiny = {k: tg.PRESETS["tiny"][k] for k in ("num_layers", "model_dim", "num_heads", "num_kv_heads",
                                                   "train_seq_len", "train_batch_tokens", "val_batch_size")}
        return cls(device="cpu",
                   baseline={**tiny, "iterations": baseline_steps, "warmup_steps": 1, "warmdown_iters": 2,
                             "val_loss_every": 0, "train_log_every": 2, "max_wallclock_seconds": 0.0,
                             "compile": False},
                   screen_preset="tiny", screen_overrides={"iterations": 4}, tiny={"val_loss_every": 4},
                   cpu_threads=1, train_script=STANDIN_SCRIPT, script_timeout_s=120.0)


# ----------------------------- pure helpers (tested)


def upstream_comparison(ms_per_step: float, tokens_per_step: int, gpus: int = 1) -> dict[str, float]:
    """ms/step against upstream's 8xH100 baseline, scaled to this run's tokens per GPU per step."""
    per_gpu_ratio = (tokens_per_step / gpus) / (UPSTREAM_TOKENS_PER_STEP / UPSTREAM_GPUS)
    reference = UPSTREAM_MS_PER_STEP_8GPU * per_gpu_ratio
    return {"ms_per_step": ms_per_step, "upstream_ms_per_step_8gpu": UPSTREAM_MS_PER_STEP_8GPU,
            "tokens_per_gpu_vs_upstream": per_gpu_ratio, "upstream_scaled_ms_per_step": reference,
            "ratio_to_upstream": ms_per_step / reference,
            "tokens_per_s": 1000.0 * tokens_per_step / ms_per_step}


def spread(values: list[float]) -> dict[str, Any]:
    """Same-seed rerun spread: values, max - min, sample std (None below two values), bit-identical or not."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {"values": values, "max_minus_min": (max(finite) - min(finite)) if finite else None,
            "std": statistics.stdev(finite) if len(finite) > 1 else None,
            "bit_identical": len(finite) == len(values) and len(set(finite)) == 1}


def paired_deltas(results: dict[str, dict[int, float]], control: str = "control") -> dict[str, Any]:
    """Per-seed treatment - control val_bpb for each arm, and their mean (2 seeds: a smoke test, no inference)."""
    out: dict[str, Any] = {}
    for arm, by_seed in results.items():
        if arm == control:
            continue
        deltas = {s: by_seed[s] - results[control][s] for s in by_seed if s in results[control]}
        out[arm] = {"per_seed": deltas, "mean": statistics.fmean(deltas.values()) if deltas else None}
    return out


_STEP_AVG_RE = re.compile(r"step_avg:(\d+(?:\.\d+)?)ms")
_PEAK_RE = re.compile(r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB")


def parse_log_extras(text: str) -> dict[str, Any]:
    """Last step_avg (ms) and the peak memory line (MiB) from a train_gpt.py log."""
    avgs, peaks = _STEP_AVG_RE.findall(text), _PEAK_RE.findall(text)
    return {"ms_per_step": float(avgs[-1]) if avgs else None,
            "peak_allocated_mib": int(peaks[-1][0]) if peaks else None,
            "peak_reserved_mib": int(peaks[-1][1]) if peaks else None,
            "sdp_backends": next((line for line in text.splitlines() if line.startswith("sdp_backends:")), None)}


def render_markdown(report: dict[str, Any]) -> str:
    """A short table: one row per step with its status, seconds and headline numbers."""
    lines = [f"# GPU check ({report['device_name']}, torch {report['torch']})", "",
             f"Corpus for baseline/torchrun: {report['corpus']}; for the small steps: {report['small_corpus']}.", "",
             "| step | status | s | numbers |", "|---|---|---:|---|"]
    for name, step in report["steps"].items():
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in step.get("headline", {}).items())
        if step["status"] != "ok":
            nums = (step.get("error") or "").splitlines()[0][:160] if step.get("error") else nums
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.0f} | {nums} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


# ----------------------------- corpora


def _shards(data_path: str | Path, split: str) -> list[str]:
    return sorted(glob.glob(tg.shard_pattern(data_path, split)))


def find_corpus(data_dir: Path, work: Path, log: Callable[[str], None]) -> Corpus:
    """FineWeb under data_dir/datasets if its shards and tokenizer are there, else the embedded corpus prepared
    under data_dir (checked offline against its manifest), else a seeded synthetic corpus in `work` (said loudly)."""
    from scripts.causal.data import shards

    fineweb = shards.fineweb_paths(data_dir)
    if _shards(fineweb.data_path, "train") and _shards(fineweb.data_path, "val") and Path(fineweb.tokenizer_path).is_file():
        log(f"corpus: FineWeb shards in {fineweb.data_path}")
        return Corpus("fineweb10B_sp1024", fineweb.data_path, fineweb.tokenizer_path)
    try:
        paths = shards.ensure_default_corpus(data_dir)
        name = f"embedded:{Path(paths.data_path).name}"
        log(f"corpus: no FineWeb shards in {fineweb.data_path}; using the embedded corpus {paths.data_path} (speed numbers "
            "are comparable, val_bpb is not FineWeb's)")
    except Exception as exc:  # noqa: BLE001 - offline box without a prepared corpus: say so, use synthetic
        log(f"corpus: no FineWeb shards in {fineweb.data_path} and no prepared corpus under {data_dir} ({exc}); "
            "USING THE SEEDED SYNTHETIC CORPUS (carry data/ prepared by `python scripts/causal/data/shards.py "
            "prepare` to avoid this)")
        paths = shards.ensure_corpus(work / "synthetic_corpus", source="synthetic")
        name = "synthetic (no prepared corpus found)"
    return Corpus(name, str(paths.data_path), str(paths.tokenizer_path))


def small_corpus(primary: Corpus, work: Path, log: Callable[[str], None]) -> Corpus:
    """A corpus with a small val split for the many-run steps (a full FineWeb eval on CPU takes too long):
    the primary one when it is not FineWeb, else its first 4M train and 128K val tokens written to `work`."""
    if not primary.name.startswith("fineweb"):
        return primary
    folder = work / "fineweb_slice"
    for split, n in (("train", 4_000_000), ("val", 131_072)):
        tokens = np.asarray(tg.open_shard_memmap(_shards(primary.data_path, split)[0])[:n])
        tg.write_data_shard(folder / f"fineweb_{split}_000000.bin", tokens)
    log(f"small corpus: the first 4M train / 128K val FineWeb tokens in {folder}")
    return Corpus("fineweb10B_sp1024 slice (4M train / 128K val tokens)", str(folder), primary.tokenizer_path)


# ----------------------------- steps


@dataclasses.dataclass
class Context:
    plan: Plan
    corpus: Corpus
    small: Corpus
    out: Path  # results: json, md, log, the torchrun console output
    work: Path  # scratch (corpus slice, torchrun's checkpoints), deleted at the end
    log: Callable[[str], None]
    deadline: float  # time.perf_counter() value after which the remaining steps are skipped


def _device(plan: Plan):
    import torch

    return torch.device("cuda", 0) if plan.device == "cuda" else torch.device("cpu")


def _train(cfg: tg.Hyperparameters, seed: int, ctx: Context, device=None) -> tuple[tg.RunResult, str]:
    """One in-process run; (result, its log text). A run that is not ok raises with its status and error."""
    import torch

    if cfg.compile:
        torch._dynamo.reset()  # each compiled run starts from a clean dynamo cache (no recompile-limit fallback)
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        ctx.log("  " + msg)

    result = tg.train(cfg, seed, log=log, device=device or _device(ctx.plan))
    if result.status != "ok":
        raise RuntimeError(f"run {result.status}: {result.error}")
    return result, "\n".join(lines)


def step_baseline(ctx: Context) -> dict[str, Any]:
    import torch

    cfg = tg.preset_config("baseline", **ctx.corpus.overrides(), **ctx.plan.baseline)
    r, text = _train(cfg, 1337, ctx)
    ms = 1000.0 * cfg.train_batch_tokens / r.tokens_per_s
    out = {"corpus": ctx.corpus.name, "steps": r.steps, "val_bpb": r.val_bpb, "post_quant_val_bpb": r.post_quant_val_bpb,
           "artifact_bytes": r.artifact_bytes, **parse_log_extras(text), **upstream_comparison(ms, cfg.train_batch_tokens)}
    if ctx.plan.device == "cuda":  # the log line covers training (as upstream's); these include the evals
        out["peak_allocated_mib_whole_run"] = torch.cuda.max_memory_allocated() // 2**20
        out["upstream_peak_allocated_mib_per_gpu"] = UPSTREAM_PEAK_MIB
    return out


def step_torchrun(ctx: Context) -> dict[str, Any]:
    from scripts.causal.screen.executors import env_overrides, parse_train_log

    cfg = tg.preset_config("baseline", **ctx.corpus.overrides(), **ctx.plan.baseline)
    workdir = ctx.work / "torchrun"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(TRAIN_GPT)]
    env = {**os.environ, **env_overrides(cfg, 1337), "RUN_ID": "gpu_check_torchrun"}
    if ctx.plan.device == "cpu":
        env["OMP_NUM_THREADS"] = str(ctx.plan.cpu_threads)
    timeout = max(60.0, ctx.deadline - time.perf_counter() + 60.0)
    ctx.log(f"  $ {' '.join(argv)}  (cwd {workdir}, config as env vars, timeout {timeout:.0f} s)")
    proc = subprocess.run(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    (ctx.out / "torchrun.out").write_text(proc.stdout, encoding="utf-8")
    parsed, extras = parse_train_log(proc.stdout), parse_log_extras(proc.stdout)
    if proc.returncode != 0 or parsed["status"] != "ok":
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise RuntimeError(f"torchrun exit {proc.returncode}, {parsed['status']}: {parsed['error']} | {tail}")
    out = {"steps": parsed["steps"], "val_bpb": parsed["val_bpb"], "post_quant_val_bpb": parsed["post_quant_val_bpb"],
           "artifact_bytes": parsed["artifact_bytes"], **extras}
    if extras["ms_per_step"]:
        out.update(upstream_comparison(extras["ms_per_step"], cfg.train_batch_tokens))
    return out


def _screen_executor(ctx: Context):
    from scripts.causal.screen import executors

    try:
        import ray  # noqa: F401
    except ImportError:
        ctx.log("  ray not installed: skipped; running the same 2x2 screen through the in-process executor")
        return executors.InProcessExecutor(threads=ctx.plan.cpu_threads), "inprocess (ray not installed)"
    try:  # the Ray executor (issue 13 item 1) puts each run on 1 GPU of the local cluster
        return executors.make_executor("ray"), "ray"
    except Exception as exc:  # noqa: BLE001 - ray importable but no Ray executor in this checkout
        ctx.log(f"  ray importable but no Ray executor here ({exc}); using the in-process executor")
        return executors.InProcessExecutor(threads=ctx.plan.cpu_threads), "inprocess (no ray executor)"


def step_screen(ctx: Context) -> dict[str, Any]:
    executor, used = _screen_executor(ctx)
    base = tg.preset_config(ctx.plan.screen_preset, **ctx.small.overrides(), **ctx.plan.screen_overrides)
    vals: dict[str, dict[int, float]] = {}
    for arm, overrides in SCREEN_ARMS.items():
        for seed in ctx.plan.seeds:
            r = executor.run(base.with_overrides(overrides), seed, "torch")  # a train_gpt.RunResult
            if r.status != "ok":
                raise RuntimeError(f"{arm} seed {seed}: {r.status}: {r.error}")
            vals.setdefault(arm, {})[seed] = r.val_bpb
            ctx.log(f"  {arm} seed {seed}: val_bpb {r.val_bpb:.6f} wall {r.wall_s:.1f}s")
    return {"executor": used, "preset": ctx.plan.screen_preset, "val_bpb": vals, "deltas": paired_deltas(vals)}


@contextlib.contextmanager
def torch_default_sdp():
    """Every SDPA backend enabled (torch's default) inside, the previous flags after: the CPU reference run must
    not inherit the flash-only pinning an earlier CUDA run set process-wide."""
    import torch

    names = tuple(tg.SDP_BACKENDS)
    before = {n: getattr(torch.backends.cuda, f"{n}_sdp_enabled")() for n in names}
    for n in names:
        getattr(torch.backends.cuda, f"enable_{n}_sdp")(True)
    try:
        yield
    finally:
        for n, enabled in before.items():
            getattr(torch.backends.cuda, f"enable_{n}_sdp")(enabled)


def step_cpu_vs_cuda(ctx: Context) -> dict[str, Any]:
    import torch

    cfg = tg.preset_config("tiny", **ctx.small.overrides(), **ctx.plan.tiny)
    with torch_default_sdp():
        cpu, _ = _train(cfg, 1337, ctx, device=torch.device("cpu"))
    acc, _ = _train(cfg, 1337, ctx)
    return {"cpu_fp32_val_bpb": cpu.val_bpb, f"{ctx.plan.device}_val_bpb": acc.val_bpb,
            "difference": acc.val_bpb - cpu.val_bpb, "second_device": ctx.plan.device}


def step_rerun(ctx: Context) -> dict[str, Any]:
    cfg = tg.preset_config("tiny", **ctx.small.overrides(), **ctx.plan.tiny)
    return spread([_train(cfg, 1337, ctx)[0].val_bpb for _ in range(ctx.plan.reruns)])


def _script_env(ctx: Context, script: Path) -> dict[str, str]:
    """Env for every arm of the script screen: the small corpus and a reduced wallclock (a record's knobs), or
    for the CPU stand-in one thread per rank and the log family of our own trainer."""
    if ctx.plan.device == "cpu":
        return {"OMP_NUM_THREADS": "1", "LOG_STYLE": "ours", "SLIDING": "1"}
    return {"DATA_PATH": ctx.small.data_path, "TOKENIZER_PATH": ctx.small.tokenizer_path,
            "MAX_WALLCLOCK_SECONDS": f"{ctx.plan.script_wallclock_s:g}", "VAL_LOSS_EVERY": "0",
            "TRAIN_LOG_EVERY": "50"}


def step_script_screen(ctx: Context) -> dict[str, Any]:
    from scripts.causal.experiment_runner import run_screen, write_runs_json
    from scripts.causal.screen.ledger import Ledger
    from scripts.causal.screen.plan import build_script_plan
    from scripts.causal.screen.torchrun import ScriptExecutor

    script = Path(ctx.plan.train_script or RECORD_SCRIPT)
    if not script.is_file():
        raise ConfigError(f"record script {script} not found: pass --train-script PATH (a record's train_gpt.py)")
    plan = build_script_plan(train_script=str(script), interventions=["mlp_mult_3"], seeds=ctx.plan.seeds,
                             base_env=_script_env(ctx, script), screen_id="gpu_check_script_screen")
    executor = ScriptExecutor(nproc_per_node=2 if ctx.plan.device == "cpu" else 1,
                              timeout_s=ctx.plan.script_timeout_s, workdir=ctx.work, log_dir=ctx.out / "script_logs")
    ledger_path = ctx.out / "script_screen.sqlite"
    ledger_path.unlink(missing_ok=True)
    with Ledger(ledger_path) as ledger:
        result = run_screen(plan, ledger=ledger, executor=executor, progress=False)
    write_runs_json(ctx.out / "script_screen_runs.json", plan, result.runs)
    vals: dict[str, dict[int, float]] = {}
    for r in result.runs:
        score = r.ttt_val_bpb or r.sliding_val_bpb or r.post_quant_val_bpb
        ctx.log(f"  {r.intervention} seed {r.seed}: {r.status} final {score} wall {r.wall_s}s {r.error or ''}")
        if r.status != "ok":
            raise RuntimeError(f"{r.intervention} seed {r.seed}: {r.status}: {r.error}")
        vals.setdefault(r.intervention, {})[r.seed] = score
    return {"train_script": str(script), "script_sha256": plan.configs["control"].script_sha256,
            "env": dict(plan.configs["control"].env), "final_val_bpb": vals, "deltas": paired_deltas(vals),
            "wall_s": sum(r.wall_s or 0.0 for r in result.runs), "executor": "torchrun (--train-script)"}


def step_import(ctx: Context) -> dict[str, Any]:
    from scripts.causal.screen import log_import as li

    logs = ctx.out / "script_logs"
    if not logs.is_dir():
        raise RuntimeError(f"{logs}: no logs to import (the script_screen step did not run or wrote none)")
    from scripts.causal.experiment_runner import write_runs_json
    from scripts.causal.screen.ledger import Ledger

    with Ledger(ctx.out / "script_screen.sqlite") as ledger:  # the screen's runs: scores and the control's log
        screen = ledger.runs("gpu_check_script_screen")
    screened = {(r.seed, r.arm == "control"): r.ttt_val_bpb or r.sliding_val_bpb or r.post_quant_val_bpb
                for r in screen}
    control_log = next((Path(r.config["log_path"]) for r in screen if r.arm == "control"), None)
    plan, records = li.import_screen(logs, control_log=control_log, effect_bpb=0.002)
    runs_path = ctx.out / "import" / "runs.json"
    write_runs_json(runs_path, plan, records)
    payload = li.gate(plan, records, runs_path)
    imported = {(r.seed, r.arm == "control"): r.ttt_val_bpb or r.sliding_val_bpb or r.post_quant_val_bpb
                for r in records}
    same = bool(screened) and all(screened.get(k) == v for k, v in imported.items())
    if screened and not same:
        raise RuntimeError(f"imported scores {imported} differ from the screen's {screened}")
    return {"runs": len(records), "arms": [n for n, _ in plan.treatments], "pairing": payload["pairing"],
            "decisions": {row["intervention"]: row["decision"] for row in payload["results"]},
            "scores_equal_screen": same}


STEP_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "baseline": step_baseline, "torchrun": step_torchrun, "screen": step_screen,
    "cpu_vs_cuda": step_cpu_vs_cuda, "rerun": step_rerun, "script_screen": step_script_screen,
    "import": step_import,
}
HEADLINES = {
    "baseline": ("ms_per_step", "upstream_scaled_ms_per_step", "ratio_to_upstream", "peak_allocated_mib", "val_bpb"),
    "torchrun": ("ms_per_step", "ratio_to_upstream", "peak_allocated_mib", "val_bpb"),
    "screen": ("executor",),
    "cpu_vs_cuda": ("cpu_fp32_val_bpb", "cuda_val_bpb", "cpu_val_bpb", "difference"),
    "rerun": ("max_minus_min", "std", "bit_identical"),
    "script_screen": ("executor", "wall_s"),
    "import": ("runs", "pairing", "scores_equal_screen"),
}


def run_step(name: str, ctx: Context) -> dict[str, Any]:
    """Run one step; never raises: failures and skips come back as a status with the error text."""
    if time.perf_counter() > ctx.deadline:
        ctx.log(f"== {name}: skipped (time budget spent)")
        return {"status": "skipped", "seconds": 0.0, "error": "time budget spent before this step"}
    ctx.log(f"== {name}")
    t0 = time.perf_counter()
    try:
        numbers = STEP_FUNCS[name](ctx)
    except Exception as exc:  # noqa: BLE001 - one failing step must not stop the check
        ctx.log(traceback.format_exc())
        return {"status": "failed", "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.perf_counter() - t0
    ctx.log(f"== {name}: ok in {seconds:.1f}s {numbers}")
    headline = {k: numbers[k] for k in HEADLINES[name] if k in numbers}
    if name in ("screen", "script_screen"):
        headline.update({f"delta_{arm}": d["mean"] for arm, d in numbers["deltas"].items()})
    return {"status": "ok", "seconds": seconds, "numbers": numbers, "headline": headline}


def run_check(out: Path, plan: Plan, steps: tuple[str, ...], budget_s: float, data_dir: Path = DATA_DIR) -> dict:
    """Run the steps in order, write OUT/gpu_check.{json,md,log}, return the report."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    logfile = (out / "gpu_check.log").open("w", encoding="utf-8")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logfile.write(msg + "\n")
        logfile.flush()

    if plan.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device visible to torch; run with --cpu-dry-run to check the script on CPU")
    if plan.cpu_threads:
        torch.set_num_threads(plan.cpu_threads)  # a shared CPU: spinning extra threads run ~10x slower
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        corpus = find_corpus(data_dir, work, log)
        ctx = Context(plan, corpus, small_corpus(corpus, work, log), out, work, log, t_start + budget_s)
        report: dict[str, Any] = {
            "device": plan.device, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(0) if plan.device == "cuda" else "CPU (dry run)",
            "corpus": corpus.name, "small_corpus": ctx.small.name, "budget_s": budget_s,
            "ms_per_step_scaling": f"1 GPU does {UPSTREAM_GPUS}x upstream's tokens per GPU per step: reference = "
                                   f"{UPSTREAM_GPUS} x {UPSTREAM_MS_PER_STEP_8GPU} ms (perfect scaling assumed)",
            "steps": {},
        }
        for name in steps:
            report["steps"][name] = run_step(name, ctx)
            report["total_s"] = time.perf_counter() - t_start
            write_json(out / "gpu_check.json", report, schema_version=SCHEMA_VERSION)  # partial results survive
            (out / "gpu_check.md").write_text(render_markdown(report), encoding="utf-8")
        log(f"total {report['total_s']:.0f}s; wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        logfile.close()
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("out", nargs="?", type=Path, default=REPO_ROOT / "bench" / "gpu_check_out",
                   help="output folder, e.g. bench/gpu_check_out")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on CPU, to test the script itself")
    p.add_argument("--baseline-steps", type=int, default=None, help="baseline/torchrun steps (default 200; dry run 4)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--train-script", type=Path, default=None,
                   help=f"record script for the script_screen step (default: {RECORD_SCRIPT})")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the steps that would start after this many seconds, e.g. 420")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        build_parser().error(f"--steps: unknown step(s) {unknown}; choose from {list(STEPS)}")

    def body() -> int:
        n = args.baseline_steps or (4 if args.cpu_dry_run else 200)
        plan = Plan.dry_run(n) if args.cpu_dry_run else Plan.gpu(n)
        if args.train_script is not None:
            plan = dataclasses.replace(plan, train_script=args.train_script)
        report = run_check(args.out, plan, steps, args.budget_s)
        return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1

    return run_cli(body, debug=args.debug, prog="gpu_check.py")


if __name__ == "__main__":
    sys.exit(main())
