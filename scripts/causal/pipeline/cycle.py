"""The pipeline's one orchestration home: the cycle loop, the time budget and the stage adapters.

    cycle 0: matrix (extract or reuse) -> DAG + identifiability + ranking (cached)
    cycle c: choose top-K -> paired-seed screen -> gate -> fresh-seed confirmation of winners
             -> runs back into the DAG as interventional rows (cycle c's DAG, diffed against c-1)
    finish:  plots, promotion (dry-run diff by default), report.md/report.json, pipeline_summary.json

Each adapter calls another stage's Python API in-process, writes its JSON into the run folder and turns a
stage's failure into a StageError that names the stage, the file and the fix. ``run_pipeline.py`` is only
the CLI around ``run_pipeline(opts)``.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from scripts.causal import report as rep
from scripts.causal.core.errors import CausalPipelineError, StageError
from scripts.causal.core.paths import DAGS_DIR, REPO_ROOT
from scripts.causal.core.provenance import git_commit, hardware_summary
from scripts.causal.core.schema import PipelineOptions, RunInfo, read_json, write_json
from scripts.causal.core.stage_cache import StageCache, cached_stage

Log = Callable[[str], None]
SHARED_STORE = Path("data") / "cache" / "stages"  # cycle-0 DAG outputs shared across run folders
METRIC_WORDS = {"final_val_bpb": "each run's score as the challenge takes it (its last evaluation stage: post-TTT, "
                                 "else sliding, else the post-quant round trip)",
                "post_quant_val_bpb": "the post-quant round-trip val_bpb", "val_bpb": "the pre-quant val_bpb",
                "sliding_val_bpb": "the sliding-window val_bpb", "ttt_val_bpb": "the post-TTT val_bpb"}
TEST_DESCRIPTION = ("paired differences d = metric(treatment) - metric(control, same seed), metric = "
                    "{metric}; one-sided paired t-tests for improvement (H1: mean d < -margin), harm (H1: mean d > 0) "
                    "and non-superiority (behind null); {corr} across every family intervention x those three tests "
                    "(calibration arms outside; a group-sequential screen uses its own Bonferroni boundaries); "
                    "confirmed needs adjusted p < alpha, mean improvement >= margin and no failed treatment run; null "
                    "needs the data to rule out the effect of interest; winners re-tested on fresh seeds with Holm")


def stage_error(stage: str, path: Any, exc: BaseException | str, fix: str) -> StageError:
    return StageError(f"stage {stage!r} failed ({path}): {exc}. Fix: {fix}")


class Clock:
    """Wall time since start, and whether a stage of ``need_s`` seconds still fits the budget.

    Runs re-used from the ledger are charged at their recorded wall time (``credit_reused``), so a
    ``--resume`` makes the same budget decisions as the session that ran them, and stays fast.
    """

    def __init__(self, budget_minutes: float | None) -> None:
        self.t0 = time.perf_counter()
        self.session_start = time.time()
        self.budget_s = None if budget_minutes is None else 60.0 * budget_minutes
        self.credited_s = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def credit_reused(self, runs) -> None:
        self.credited_s += sum(r.wall_s or 0.0 for r in runs if r.finished_at and r.finished_at < self.session_start)

    def fits(self, need_s: float) -> bool:
        return self.budget_s is None or self.elapsed() + self.credited_s + need_s <= self.budget_s


# ----------------------------------------------------------------------------- the loop

def run_pipeline(opts: PipelineOptions, *, log: Log | None = None, progress: bool = True,
                 records: Sequence[str] = (), command: str = "") -> dict:
    """Run every stage for ``opts``; returns a summary dict (paths, decisions, stop reason, wall_s)."""
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(opts.budget_minutes)
    log_file = (out / "pipeline.log").open("a", encoding="utf-8")

    def say(msg: str) -> None:
        line = f"[{clock.elapsed():6.1f}s] {msg}"
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
        log_file.write(line + "\n")
        log_file.flush()

    try:
        return _run(opts, out, clock, say, progress=progress, records=records, command=command)
    finally:
        log_file.close()


def _run(opts: PipelineOptions, out: Path, clock: Clock, say: Log, *, progress: bool, records: Sequence[str],
         command: str) -> dict:
    from scripts.causal.screen.trainer import decide_threads

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(out / "pipeline_options.json", {"options": opts})
    say(f"run {opts.run_id}: preset {opts.preset}, backend {opts.backend}, seeds {list(opts.seeds)} -> {out}")
    # A --train-script screen runs the script on its own data (DATA_PATH etc. via --set), under torchrun.
    data = {} if opts.train_script else prepare_data(opts, say)
    threads = None if opts.train_script else decide_threads(opts.backend, say, opts.threads)
    cache = StageCache(out / "stage_cache.json")

    matrix = stage_matrix(opts, out, say, records=records)
    causal = causal_cycle(opts, cycle=0, matrix=matrix, out_dir=out / "dags" / "cycle_0", rows=[],
                          previous=None, cache=cache, log=say)
    ranking, cycles, exp_rows, tested, decisions = causal["ranking"], [], [], [], []
    final: dict = {"ablation": None}
    stop, null_cycles, mean_run_s = "completed all cycles", 0, None

    def screen(name: str, arms: Sequence[str], seeds: Sequence[int], screen_dir: Path, *, confirm=None):
        result, runs_path = run_screen_stage(opts, name=name, interventions=arms, seeds=seeds, out_dir=screen_dir,
                                             base_overrides=data, progress=progress, log=say, threads=threads,
                                             sequential=opts.sequential and confirm is None)
        clock.credit_reused(result.runs)
        ablation = analyze_stage(runs_path, screen_dir / "ablation_results.json", result=result, confirm=confirm,
                                 ledger_path=Path(opts.output_dir) / "ledger.sqlite")
        return result, runs_path, ablation

    for c in range(1, opts.cycles + 1):
        names = choose_interventions(ranking, top_k=opts.top_k, explicit=opts.interventions if c == 1 else (),
                                     exclude=tested, stack=opts.stack, preset=opts.preset,
                                     train_script=opts.train_script)
        if not names:
            stop = "no untested runnable candidates left in the ranking"
            break
        calibration = [a for a in opts.calibration if not opts.train_script or script_runnable(a, opts.train_script)]
        arms = [*calibration, *[n for n in names if n not in calibration]]
        from scripts.causal.screen.plan import arm_seeds, bit_reproducible

        aa_mode = "repeat" if bit_reproducible(opts.backend) else "arm"
        n_runs = len(opts.seeds) + sum(len(arm_seeds(a, opts.seeds, aa_mode)) for a in arms)
        if mean_run_s is not None and not clock.fits(n_runs * mean_run_s):
            stop = f"budget: cycle {c} ({n_runs} runs x {mean_run_s:.0f}s) would pass {opts.budget_minutes} min"
            break
        screen_dir = out / f"cycle_{c}"
        say(f"cycle {c}: screening {', '.join(arms)} on {len(opts.seeds)} seeds ({n_runs} runs)")
        result, runs_path, ablation = screen(f"cycle{c}-screen", arms, opts.seeds, screen_dir)
        mean_run_s = _mean_wall(result.runs) or mean_run_s
        say(f"cycle {c}: " + ", ".join(f"{r['intervention']}={r['decision']}" for r in ablation["results"]))
        all_runs, confirm_runs = list(result.runs), None
        exp_rows += _experiment_rows(result)
        confirmation, found = None, _confirmed(ablation)
        cplan = confirmation_plan(ablation, tuple(s + 100 * (c - 1) for s in opts.confirm_seeds))
        win = list(cplan.interventions) if cplan else []
        if opts.confirm and win:
            need = len(cplan.seeds) * (len(win) + 1) * (mean_run_s or 0.0)
            if clock.fits(need):
                say(f"cycle {c}: confirming {', '.join(win)} on fresh seeds {list(cplan.seeds)}")
                cres, _, confirmation = screen(f"cycle{c}-confirm", win, cplan.seeds, screen_dir / "confirm",
                                               confirm=cplan)
                confirmation["seeds"] = list(cplan.seeds)
                found = _confirmed(confirmation)
                all_runs += list(cres.runs)
                confirm_runs = [r.runs_row() for r in cres.runs]
                exp_rows += _experiment_rows(cres)
            else:
                confirmation = {"note": f"confirmation of {', '.join(win)} skipped: {need:.0f}s of runs would pass "
                                        f"the {opts.budget_minutes} min budget; rerun with --resume and a larger "
                                        "--budget-minutes", "results": []}
                say(confirmation["note"])
        tested += names
        decisions += _decisions(ablation, confirmation)
        causal = causal_cycle(opts, cycle=c, matrix=matrix, out_dir=out / "dags" / f"cycle_{c}", rows=exp_rows,
                              previous=causal["dag_path"], cache=cache, log=say, decisions=decisions)
        ranking = causal["ranking"]
        cycles.append({"cycle": c, "interventions": arms, "runs": len(all_runs), "confirmed": found,
                       "decisions": {r["intervention"]: r["decision"] for r in ablation["results"]}})
        final = {"arms": tuple(arms), "ablation": ablation, "confirmation": confirmation, "records": all_runs,
                 "confirm_runs": confirm_runs, "runs_path": runs_path, "screen_dir": screen_dir, "causal": causal}
        if found:
            stop = f"confirmed effect in cycle {c}: {', '.join(found)}"
            break
        null_cycles += 1
        if null_cycles >= opts.max_null_cycles and c < opts.cycles:
            stop = f"{null_cycles} cycles without a confirmed effect (--max-null-cycles)"
            break
    if final["ablation"] is None:
        raise stage_error("screen", out, f"no screen ran ({stop})",
                          "pass --interventions a,b or a larger --budget-minutes")
    say(f"stop: {stop}")
    summary = finish(opts, out=out, final=final, cycles=cycles, stop=stop, clock=clock, started=started,
                     command=command, log=say)
    write_json(out / "pipeline_summary.json", dict(summary))
    say(f"done in {summary['wall_s']:.1f}s")
    return summary


def _mean_wall(runs) -> float | None:
    walls = [r.wall_s for r in runs if r.wall_s]
    return sum(walls) / len(walls) if walls else None


def _decisions(ablation, confirmation) -> list[dict]:
    """Decision rows for the ranking's ledger: the confirmation's verdict overrides the screen's."""
    rows = {r["intervention"]: r for r in ablation["results"]}
    for r in (confirmation or {}).get("results", []):
        rows[r["intervention"]] = r
    return list(rows.values())


def _confirmed(ablation) -> list[str]:
    return [r["intervention"] for r in ablation.get("results", []) if r.get("decision") == "confirmed"]


def _experiment_rows(result: Any) -> list[dict]:
    from scripts.causal import experiment_runner as er

    return er.experiment_rows(result.plan, result.runs)


# ----------------------------------------------------------------------------- data and matrix

def prepare_data(opts: PipelineOptions, log: Log) -> dict:
    """Config overrides pointing every arm at the data its preset names (or ``--data-path``), prepared first.

    The embedded corpus (``tiny``, ``fast``) is prepared on first use; any other data must already hold shards:
    the error names the folder and the command that makes them (no silent switch to another corpus)."""
    import train_gpt as tg
    from scripts.causal.screen.trainer import prepare_data as prepare

    t0 = time.perf_counter()
    try:
        cfg = prepare(tg.preset_config(opts.preset, **opts.data_overrides))
    except (CausalPipelineError, ValueError, OSError) as exc:
        raise stage_error("data", opts.data_overrides.get("data_path") or f"preset {opts.preset!r}", exc,
                          "prepare the data with the command above, or pass --data-path/--tokenizer-path to "
                          "prepared shards") from exc
    log(f"data: {cfg.data_path} ({time.perf_counter() - t0:.1f}s)")
    return {"data_path": cfg.data_path, "tokenizer_path": cfg.tokenizer_path, "vocab_size": cfg.vocab_size}


def stage_matrix(opts: PipelineOptions, out_dir: Path, log: Log, *, records: Sequence[str] = ()) -> Path:
    """Cycle 0 step 1: extract the intervention matrix from record folders, or reuse the committed one."""
    matrix = Path(opts.matrix_path)
    if not matrix.is_absolute():
        matrix = REPO_ROOT / matrix
    if records:
        from scripts.causal import extract_interventions as ex

        payload = ex.extract([Path(p) for p in records])
        matrix = ex.write_matrix(out_dir / "interventions.json", payload)
        (out_dir / "interventions.csv").write_text(ex.to_csv(payload), encoding="utf-8")
        log(f"extract: {len(payload['records'])} records -> {matrix}")
        return matrix
    if not matrix.is_file():
        raise stage_error("extract", matrix, "intervention matrix not found",
                          "run scripts/causal/extract_interventions.py --input <records dir> --output "
                          "results/interventions.json, or pass --records <dir>")
    log(f"extract: reusing {matrix.relative_to(REPO_ROOT) if matrix.is_relative_to(REPO_ROOT) else matrix}")
    return matrix


# ----------------------------------------------------------------------------- screen and statistics

def script_runnable(name: str, train_script: str) -> bool:
    """Whether registry intervention ``name`` can be expressed on ``train_script`` (its env form, its knobs)."""
    from scripts.causal.core.errors import ConfigError
    from scripts.causal.screen.registry import get_intervention
    from scripts.causal.screen.script_target import check_expressible, script_knobs

    try:
        check_expressible(name, get_intervention(name).env, script_knobs(train_script), train_script)
    except ConfigError:
        return False
    return True


def choose_interventions(ranking: Mapping | None, *, top_k: int, explicit: Sequence[str] = (),
                         exclude: Sequence[str] = (), stack: str | None = None, preset: str = "fast",
                         train_script: str | None = None) -> list[str]:
    """``explicit`` if given, else the top-K runnable names of the ranking not already tested (and, on a
    ``stack``, not already part of it, nor impossible to express at ``preset``; with ``train_script``, only
    names the script can express: ranked names it cannot are skipped, explicit ones are refused later)."""
    if explicit:
        return list(explicit)
    from scripts.causal.screen import registry as reg
    from scripts.causal.screen.stacks import stack_conflict

    known = {iv.name for iv in reg.list_interventions()}
    picked: list[str] = []
    for row in (ranking or {}).get("candidates", []) if ranking else []:
        name = row.get("intervention") or row.get("name")
        if name in known and name not in reg.CALIBRATION and name not in exclude and name not in picked and (
                stack is None or stack_conflict(stack, name, preset) is None) and (
                train_script is None or script_runnable(name, train_script)):
            picked.append(name)
        if len(picked) >= top_k:
            break
    return picked


def run_screen_stage(opts: PipelineOptions, *, name: str, interventions: Sequence[str], seeds: Sequence[int],
                     out_dir: Path, base_overrides: Mapping, progress: bool, log: Log, threads: int | None = None,
                     sequential: bool = False) -> tuple[Any, Path]:
    """A paired-seed screen into the run's ledger; writes ``<out_dir>/runs.json``. Returns (ScreenResult, path).

    ``sequential``: a group-sequential screen over ``seeds`` extended to ``opts.max_seeds``."""
    from scripts.causal import experiment_runner as er
    from scripts.causal.screen.executors import make_executor
    from scripts.causal.screen.ledger import Ledger

    design = None
    if sequential:
        seeds, design = er.sequential_design(seeds, max_seeds=opts.max_seeds, futility_sd=opts.futility_sd)
    if opts.train_script:
        plan = er.build_script_plan(train_script=opts.train_script, interventions=list(interventions),
                                    seeds=list(seeds), base_env=dict(opts.extra_overrides), alpha=opts.alpha,
                                    margin_bpb=opts.margin_bpb, correction=opts.correction, metric=opts.metric,
                                    screen_id=f"{opts.run_id}-{name}", effect_bpb=opts.effect_bpb)
    else:
        plan = er.build_plan(interventions=list(interventions), seeds=list(seeds), preset=opts.preset,
                             backend=opts.backend, base_overrides={**base_overrides, **opts.extra_overrides},
                             alpha=opts.alpha, margin_bpb=opts.margin_bpb, correction=opts.correction,
                             metric=opts.metric, screen_id=f"{opts.run_id}-{name}", effect_bpb=opts.effect_bpb,
                             sequential=design, stack=opts.stack)
    ledger_path = Path(opts.output_dir) / "ledger.sqlite"
    # Ray tasks each declare their CPUs: the flag as given (None: 1 per run), not the in-process auto choice.
    executor = make_executor(opts.executor, threads=opts.threads if opts.executor == "ray" else threads,
                             address=opts.ray_address, timeout_s=opts.timeout_s, nproc_per_node=opts.nproc_per_node)
    with Ledger(ledger_path) as ledger:
        result = er.run_screen(plan, ledger=ledger, executor=executor, progress=progress)
    runs_path = er.write_runs_json(out_dir / "runs.json", plan, result.runs)
    log(f"{name}: {result.n_executed} runs executed, {result.n_skipped} reused from {ledger_path.name}")
    return result, runs_path


def analyze_stage(runs_path: Path, out_path: Path, *, result: Any = None, confirm: Any = None,
                  ledger_path: Path | None = None) -> dict:
    """The gate on a screen's runs.json (its header is the pre-registration): ablation_results.json, decisions
    written to the ledger. ``confirm``: a ``stats.confirmation`` plan (Holm over its winners on fresh seeds);
    a sequential screen's decisions are the group-sequential ones."""
    from scripts.causal.screen.ledger import Ledger
    from scripts.causal.stats.analysis import analyze, record_decisions
    from scripts.causal.stats.confirmation import analyze_confirmation

    runs = read_json(runs_path)
    try:
        if confirm is not None:
            payload = analyze_confirmation(runs, confirm)
        else:  # a registered sequential design is applied by analyze itself; the header is checked vs the ledger
            payload = analyze(runs, ledger=ledger_path if ledger_path is not None and Path(ledger_path).exists()
                              else None)
    except CausalPipelineError as exc:
        raise stage_error("statistics", runs_path, exc, "check the runs file; rerun with --resume") from exc
    write_json(out_path, payload, schema_version=payload["schema_version"])
    if ledger_path is not None:
        with Ledger(ledger_path) as ledger:
            record_decisions(ledger, payload, screen_id=runs["screen"]["screen_id"])
    return read_json(out_path, schema_versions=(payload["schema_version"],))


def confirmation_plan(ablation: Mapping, seeds: Sequence[int]) -> Any:
    """``stats.confirmation.plan_confirmation`` of a screen's confirmed arms on ``seeds`` (None: no winner)."""
    from scripts.causal.stats.confirmation import plan_confirmation

    plan = plan_confirmation(ablation, confirm_seeds=seeds)
    return plan if plan.interventions else None


# ----------------------------------------------------------------------------- causal stages (cached)

def causal_cycle(opts: PipelineOptions, *, cycle: int, matrix: Path, out_dir: Path, rows: Sequence[Mapping],
                 previous: Path | None, cache: StageCache, log: Log, decisions: Sequence[Mapping] = ()) -> dict:
    """estimate_dag.estimate (FCI + bootstrap, identifiability, ranking, diff) into ``out_dir``, cached.

    Inputs of the cache key: the matrix, the expert DAG, our experiment rows, the previous DAG and the
    options. Cycle 0 is also kept in the shared store (data/cache/stages), so a new run folder reuses it.
    """
    from scripts.causal import estimate_dag as ed

    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = write_json(out_dir / "experiment_rows.json", {"rows": list(rows)})
    dec_path = write_json(out_dir / "decisions.json", {"decisions": list(decisions)})
    from scripts.causal.core.paths import EVIDENCE_DIR
    from scripts.causal.screen import registry

    # the registry decides which candidates are runnable and the verified table what evidence they have: a change
    # to either must not reuse an old ranking
    inputs = [matrix, DAGS_DIR / "expert.json", rows_path, dec_path, Path(registry.__file__),
              *sorted(EVIDENCE_DIR.glob("*.json"))] + ([previous] if previous else [])
    from scripts.causal.transfer.sensitivity import load_transfer

    transfer = load_transfer(opts.transfer_dir, opts.preset)
    if transfer is not None:
        inputs.append(Path(transfer["source"]))
    options = {"alpha": opts.dag_alpha, "bootstrap": opts.bootstrap, "seed": opts.dag_seed, "stack": opts.stack,
               "preset": opts.preset}
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
                                     experiment_rows=list(rows), ledger=list(decisions) or None,
                                     transfer=(transfer or {}).get("classes"), stack=opts.stack, preset=opts.preset)
                ed.write_outputs(result, out_dir)
        except CausalPipelineError as exc:
            raise stage_error(f"dag cycle {cycle}", matrix, exc, "check the matrix with "
                              "scripts/causal/estimate_dag.py --input <matrix> --output-dir /tmp/dag --debug") from exc

    cached_stage(cache, f"dag_cycle_{cycle}", inputs=inputs, options=options, outputs=outputs, compute=compute,
                 log=log, store=REPO_ROOT / SHARED_STORE if cycle == 0 else None)
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


# ----------------------------------------------------------------------------- finish


def run_info(opts: PipelineOptions, *, started: str, command: str, records: Sequence[Any],
             interventions: tuple[str, ...] = ()) -> RunInfo:
    """The report's provenance block for this pipeline run."""
    versions = next((dict(r.versions) for r in records if getattr(r, "versions", None)), {})
    return RunInfo(run_id=opts.run_id, started_utc=started, command=command, git_commit=git_commit(REPO_ROOT),
                   versions=versions, backend=opts.backend, hardware=hardware_summary(opts.backend),
                   preset=opts.preset, seeds=opts.seeds, confirm_seeds=opts.confirm_seeds,
                   interventions=interventions or (*opts.calibration, *opts.interventions),
                   test=TEST_DESCRIPTION.format(corr=opts.correction.capitalize(),
                                                metric=METRIC_WORDS.get(opts.metric, opts.metric)), alpha=opts.alpha,
                   margin_bpb=opts.margin_bpb, correction=opts.correction, cycles=opts.cycles, stack=opts.stack)


def finish(opts: PipelineOptions, *, out: Path, final: Mapping, cycles: Sequence[Mapping], stop: str, clock: Clock,
           started: str, command: str, log: Log) -> dict:
    """Write plots/, report.json and report.md for the final cycle; returns the pipeline summary.

    Copies the final screen's runs.json and ablation_results.json to the run folder's top level, so the
    report and its source numbers sit side by side (report.md's table is rendered from that same file).
    """
    from scripts.causal.dag.render import small_png
    from scripts.causal.pipeline.promotion import promotion_stage
    from scripts.causal.plot_forest import plot_forest
    from scripts.causal.plot_losses import plot_losses
    from scripts.causal.transfer.sensitivity import load_transfer

    plots_dir = out / "plots"
    runs_path = shutil.copyfile(final["runs_path"], out / "runs.json")
    ablation_path = shutil.copyfile(Path(final["screen_dir"]) / "ablation_results.json", out / "ablation_results.json")
    ablation = read_json(ablation_path)
    runs = read_json(runs_path)["runs"]
    records = final["records"]
    plots = {"forest": str(plot_forest(ablation, plots_dir / "forest.png",
                                       title=f"{opts.run_id} screen").relative_to(out))}
    for p in plot_losses(runs, plots_dir, title_suffix=f" ({opts.preset}, {opts.backend})"):
        plots[p.stem] = str(p.relative_to(out))
    confirmation = final.get("confirmation")
    if confirmation and confirmation.get("results"):
        plots["forest_confirm"] = str(plot_forest(confirmation, plots_dir / "forest_confirm.png",
                                                  title="confirmation (fresh seeds)").relative_to(out))
    causal = final["causal"]
    plots["dag"] = str(Path(small_png(causal["png"], plots_dir / "dag.png")).relative_to(out))
    nats = rep.nats_per_bpb_from_runs([r.__dict__ for r in records])
    decided = confirmation if confirmation and confirmation.get("results") else ablation
    confirmed = [r["intervention"] for r in decided["results"] if r.get("decision") == "confirmed"]
    promo_src = Path(final["screen_dir"]) / ("confirm" if decided is confirmation else "") / "ablation_results.json"
    promotion = promotion_stage(confirmed, promo_src, enabled=opts.promote, apply=opts.apply_promotion,
                                screen_id=opts.run_id, log=log)
    snippets = rep.claim_snippets(decided)
    from scripts.causal.screen.target_budget import arm_budgets

    budget = arm_budgets(ablation["screen"], runs, [r["intervention"] for r in ablation["results"]])
    info = run_info(opts, started=started, command=command, records=records,
                    interventions=tuple(final.get("arms") or ()))
    report = rep.build_report(
        info=info, ablation=ablation, nats_per_bpb=nats, confirmation=confirmation,
        identifiability=causal["identifiability"], ranking=causal["ranking"],
        dag={"png": plots["dag"], "cycle": len(cycles), "n_rows": causal["dag"]["n_rows"],
             "n_experiment_rows": causal["dag"]["preparation"]["n_experiment_rows"], "diff": causal["diff"]},
        promotion=promotion, snippets=snippets, plots=plots, cycles=cycles, wall_s=clock.elapsed(),
        transfer=load_transfer(opts.transfer_dir, opts.preset), budget=budget)
    report["stop"] = stop
    walls = [float(r.wall_s) for r in records if r.wall_s]
    report["runs_summary"] = {"n_runs": len(records), "n_ok": sum(r.status == "ok" for r in records),
                              "train_eval_s": sum(walls), "mean_run_s": sum(walls) / len(walls) if walls else None}
    report["options"] = opts
    md_path, json_path = rep.write_report(report, out)
    log(f"report: {md_path} ({len(plots)} plots)")
    return {"report_md": md_path, "report_json": json_path, "ablation": ablation_path, "runs": runs_path,
            "plots": {k: out / v for k, v in plots.items()}, "stop": stop, "wall_s": clock.elapsed(),
            "decisions": {r["intervention"]: r["decision"] for r in ablation["results"]},
            "confirmed": confirmed}
