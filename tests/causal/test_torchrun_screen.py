"""The H100 path on CPU: a stand-in record script under real torchrun (gloo, 2 processes), the log-format table,
``--train-script`` screens (arms, refusals), and runs whose rank dies or hangs.

The stand-in (tests/causal/data/standin/train_gpt_standin.py) prints each leaderboard log family; its scores are
exact functions of its knobs, so every parsed number is checked against the formula.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from scripts.causal.core.errors import ConfigError
from scripts.causal.screen import executors as ex
from scripts.causal.screen import script_target as st
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.plan import build_script_plan
from scripts.causal.screen.torchrun import ScriptExecutor

STANDIN = Path(__file__).parent / "data" / "standin" / "train_gpt_standin.py"
UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "upstream" / "train_gpt.py"
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
QUIET = {"OMP_NUM_THREADS": "1"}


def expected(seed: int, *, mlp_mult: int = 2, export: str = "int8") -> dict[str, float]:
    """The stand-in's scores for these knobs (its docstring's formula; 2 ranks average the same noise)."""
    noise = float(torch.rand(1, generator=torch.Generator().manual_seed(seed)) * 0.002)
    pre = 1.25 + noise - (0.01 if mlp_mult == 3 else 0.0)
    post = pre + (0.015 if export == "int6" else 0.02)
    return {"pre": pre, "post": post, "sliding": post - 0.03, "ttt": post - 0.04}


def _executor(tmp_path: Path, timeout_s: float = 120) -> ScriptExecutor:
    return ScriptExecutor(nproc_per_node=2, timeout_s=timeout_s, workdir=tmp_path, log_dir=tmp_path / "logs")


def _arm(env: dict) -> st.ScriptConfig:
    control, _ = st.script_arms(STANDIN, base_env={**QUIET, **env})
    return control


def test_knobs_are_read_from_the_source_and_unexpressible_interventions_are_refused():
    knobs = st.script_knobs(STANDIN)
    assert knobs["SEED"] == "1337" and knobs["MLP_MULT"] == "2" and knobs["EXPORT"] == "'int8'"
    with pytest.raises(ConfigError, match=r"qk_gain_4.*needs knob\(s\) \['QK_GAIN_INIT'\]"):
        build_script_plan(train_script=str(STANDIN), interventions=["qk_gain_4"], seeds="1,2,3")
    with pytest.raises(ConfigError, match=r"act_gelu.*declares no env settings"):
        build_script_plan(train_script=str(STANDIN), interventions=["act_gelu"], seeds="1,2,3")
    with pytest.raises(ConfigError, match=r"needs knob\(s\) \['NOT_A_KNOB'\]"):
        build_script_plan(train_script=str(STANDIN), interventions=[], overrides=["not_a_knob=1"], seeds="1,2,3")
    with pytest.raises(ConfigError, match="already has"):  # MLP_MULT=2 is the script's default
        build_script_plan(train_script=str(STANDIN), interventions=[], overrides=["mlp_mult=2"], seeds="1,2,3")
    plan = build_script_plan(train_script=str(STANDIN), interventions=["mlp_mult_3", "aa"],
                             overrides=["export=int6", "sliding=1,ttt=1"], seeds="1,2,3", base_env=QUIET)
    assert plan.intervention_names == ("mlp_mult_3", "aa", "override:EXPORT=int6", "override:SLIDING=1,TTT=1")
    assert dict(plan.configs["mlp_mult_3"].env) == {**QUIET, "MLP_MULT": "3"}
    assert plan.configs["aa"].config_hash() == plan.configs["control"].config_hash()
    assert plan.configs["control"].script_sha256 == st.script_sha256(STANDIN) and plan.metric == "final_val_bpb"


@pytest.mark.skipif(not UPSTREAM.is_file(), reason="../shared/upstream/train_gpt.py is not beside the repo")
def test_upstream_hyperparameters_class_knobs():
    knobs = st.script_knobs(UPSTREAM)
    assert knobs["MLP_MULT"] == "2" and knobs["SEED"] == "1337" and knobs["MAX_WALLCLOCK_SECONDS"] == "600.0"
    plan = build_script_plan(train_script=str(UPSTREAM), interventions=["mlp_mult_3", "qk_gain_4"], seeds="1,2,3")
    assert dict(plan.treatments) == {"mlp_mult_3": {"MLP_MULT": "3"}, "qk_gain_4": {"QK_GAIN_INIT": "4.0"}}
    with pytest.raises(ConfigError, match=r"ln_scale.*\['LN_SCALE'\]"):  # upstream has no LN_SCALE knob
        build_script_plan(train_script=str(UPSTREAM), interventions=["ln_scale"], seeds="1,2,3")


@needs_torchrun
@pytest.mark.parametrize("style", ["ours", "april", *(pytest.param(s, marks=pytest.mark.slow)
                                                       for s in ("upstream", "int6", "misc"))])
def test_every_stage_of_every_log_family_is_parsed_under_torchrun(tmp_path, style):
    res = _executor(tmp_path).run(_arm({"LOG_STYLE": style, "SLIDING": "1", "TTT": "1"}), 7, "torch")
    assert res.status == "ok", res.error
    want, tol = expected(7), 1e-4 if style in ("upstream", "misc") else 1e-8
    assert res.post_quant_val_bpb == pytest.approx(want["post"], abs=1e-8)
    assert res.sliding_val_bpb == pytest.approx(want["sliding"], abs=1e-6)
    assert res.ttt_val_bpb == pytest.approx(want["ttt"], abs=tol if style != "misc" else 1e-6)
    assert res.val_bpb == pytest.approx(want["pre"], abs=1e-4)
    log = Path(res.config["log_path"])
    assert log.is_file() and "world_size:2" in log.read_text()
    assert res.config["env"]["SEED"] == "7" and res.config["script_sha256"] == st.script_sha256(STANDIN)


@needs_torchrun
@pytest.mark.slow
def test_screen_gives_export_sliding_and_ttt_arms_their_own_scores_and_survives_dead_and_hung_ranks(tmp_path):
    from scripts.causal import experiment_runner as er

    plan = build_script_plan(train_script=str(STANDIN), interventions=[], seeds="1,2",
                             base_env={**QUIET, "LOG_STYLE": "ours"},
                             overrides=["export=int6", "sliding=1", "ttt=1", "fail_rank=1", "hang_rank=1"])
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        result = er.run_screen(plan, ledger=ledger, executor=_executor(tmp_path, timeout_s=15), progress=False)
    runs = {(r.intervention, r.seed): r for r in result.runs}
    assert len(runs) == 12
    for seed in (1, 2):
        want, int6 = expected(seed), expected(seed, export="int6")
        score = {name: er._score(runs[(name, seed)]) for name in ("control", "override:EXPORT=int6",
                                                                   "override:SLIDING=1", "override:TTT=1")}
        assert score["control"] == pytest.approx(want["post"], abs=1e-8)
        assert score["override:EXPORT=int6"] == pytest.approx(int6["post"], abs=1e-8)  # -0.005 vs control
        assert score["override:SLIDING=1"] == pytest.approx(want["sliding"], abs=1e-8)  # -0.03
        assert score["override:TTT=1"] == pytest.approx(want["post"] - 0.01, abs=1e-8)  # -0.01
        dead, hung = runs[("override:FAIL_RANK=1", seed)], runs[("override:HANG_RANK=1", seed)]
        assert dead.status == "failed" and "exited with code" in dead.error and "rank failed" in dead.error
        assert hung.status == "failed" and dead.post_quant_val_bpb is None
        assert "timeout: no exit after 15 s" in hung.error and hung.wall_s < 50
    from scripts.causal.stats.analysis import analyze

    runs_json = er.write_runs_json(tmp_path / "runs.json", plan, result.runs)
    gate = {r["intervention"]: r for r in analyze(json.loads(runs_json.read_text()))["results"]}
    assert gate["override:SLIDING=1"]["mean_delta_bpb"] == pytest.approx(-0.03, abs=1e-7)  # its own stage
    assert gate["override:FAIL_RANK=1"]["n_pairs"] == 0 and gate["override:FAIL_RANK=1"]["decision"] == "inconclusive"
    rows = er.experiment_rows(plan, result.runs)
    assert {r["intervention"] for r in rows} == {"control", "override:EXPORT=int6", "override:SLIDING=1",
                                                 "override:TTT=1"}


def test_a_missing_torchrun_or_changed_script_is_a_failed_run(tmp_path):
    arm = _arm({})
    res = ScriptExecutor(torchrun="/nonexistent/torchrun", log_dir=tmp_path).run(arm, 1, "torch")
    assert res.status == "failed" and "cannot launch" in res.error
    changed = st.ScriptConfig(arm.train_script, "0" * 64, arm.env)
    res = ScriptExecutor(log_dir=tmp_path).run(changed, 1, "torch")
    assert res.status == "failed" and "changed since the screen was planned" in res.error
    assert ex.failed_result(arm, 1, "torch", "x").config_hash == arm.config_hash()


@needs_torchrun
@pytest.mark.skipif(not UPSTREAM.is_file(), reason="../shared/upstream/train_gpt.py is not beside the repo")
def test_upstream_train_gpt_under_torchrun_on_cpu_fails_with_its_own_cuda_error(tmp_path):
    """Upstream's script raises ``RuntimeError("CUDA is required")`` right after init (and trains in bf16
    autocast on CUDA with flash SDP): it cannot run on a CPU without editing it. Under the screen, that run is
    recorded as failed with the script's own error, not passed or retried elsewhere."""
    plan = build_script_plan(train_script=str(UPSTREAM), interventions=["mlp_mult_3"], seeds="1,2,3",
                             base_env=QUIET)
    ex1 = ScriptExecutor(nproc_per_node=1, timeout_s=120, workdir=tmp_path, log_dir=tmp_path / "logs")
    res = ex1.run(plan.configs["control"], 1, "torch")
    assert res.status == "failed" and "CUDA is required" in res.error and "exited with code" in res.error


def test_run_pipeline_flags_for_the_torchrun_path(tmp_path):
    from scripts.causal import run_pipeline as rpipe
    from scripts.causal.pipeline.cycle import choose_interventions

    def opts(*argv):
        return rpipe.options_from_args(rpipe.build_parser().parse_args(["--output-dir", str(tmp_path), *argv]))

    o = opts("--train-script", str(STANDIN), "--executor", "torchrun", "--timeout", "900", "--nproc-per-node", "2")
    assert o.train_script == str(STANDIN.resolve()) and o.timeout_s == 900 and o.nproc_per_node == 2
    assert o.executor == "torchrun" and o.backend == "torch" and o.promote is False
    with pytest.raises(ConfigError, match="--train-script runs under torchrun"):
        opts("--train-script", str(STANDIN))
    with pytest.raises(ConfigError, match="--timeout"):
        opts("--timeout", "60")
    ranking = {"candidates": [{"intervention": n} for n in ("act_gelu", "qk_gain_4", "mlp_mult_3", "mlp_mult_4")]}
    assert choose_interventions(ranking, top_k=2, train_script=str(STANDIN)) == ["mlp_mult_3", "mlp_mult_4"]
    assert ex.make_executor("torchrun", timeout_s=30, nproc_per_node=2).timeout_s == 30


def test_a_script_arm_crosses_to_a_ray_worker_and_back_by_hash():
    arm = _arm({"MLP_MULT": "3"})
    rebuilt = ex.rebuild_config(arm.to_dict(), arm.config_hash(), "ray task")
    assert rebuilt == st.ScriptConfig(arm.train_script, arm.script_sha256, arm.env)
    with pytest.raises(ConfigError, match="hashes to"):
        ex.rebuild_config({**arm.to_dict(), "env": {"MLP_MULT": "4"}}, arm.config_hash(), "ray task")


@needs_torchrun
@pytest.mark.slow
def test_script_arms_run_as_ray_torchrun_jobs():
    pytest.importorskip("ray")
    from scripts.causal.screen.ray_executor import RayExecutor

    plan = build_script_plan(train_script=str(STANDIN), interventions=["mlp_mult_3"], seeds="1,2,3", base_env=QUIET)
    executor = RayExecutor(nproc_per_node=2, timeout_s=120, local_cpus=2)
    try:
        got = dict(executor.run_many([(n, plan.configs[n], 1, "torch") for n in ("control", "mlp_mult_3")]))
    finally:
        executor.close()
    for res in got.values():
        Path(res.config["log_path"]).unlink(missing_ok=True)
    assert {n: r.status for n, r in got.items()} == {"control": "ok", "mlp_mult_3": "ok"}
    assert got["control"].post_quant_val_bpb == pytest.approx(expected(1)["post"], abs=1e-8)
    assert got["mlp_mult_3"].post_quant_val_bpb == pytest.approx(expected(1, mlp_mult=3)["post"], abs=1e-8)


@needs_torchrun
@pytest.mark.slow
def test_run_pipeline_screen_stage_runs_a_script_under_torchrun(tmp_path):
    from scripts.causal.core.schema import PipelineOptions
    from scripts.causal.pipeline.cycle import analyze_stage, run_screen_stage

    opts = PipelineOptions(run_id="t", output_dir=str(tmp_path), preset="fast", backend="torch", seeds=(1, 2, 3),
                           confirm_seeds=(4, 5, 6), executor="torchrun", train_script=str(STANDIN), timeout_s=60,
                           nproc_per_node=2, extra_overrides={"OMP_NUM_THREADS": "1", "LOG_STYLE": "int6"},
                           metric="final_val_bpb")
    result, runs_path = run_screen_stage(opts, name="s", interventions=["aa", "mlp_mult_3"], seeds=(1, 2, 3),
                                         out_dir=tmp_path / "s", base_overrides={}, progress=False, log=print)
    for r in result.runs:
        Path(r.config["log_path"]).unlink(missing_ok=True)
    assert len(result.runs) == 9 and all(r.status == "ok" for r in result.runs)
    ablation = analyze_stage(runs_path, tmp_path / "s" / "ablation_results.json")
    rows = {r["intervention"]: r for r in ablation["results"]}
    assert rows["mlp_mult_3"]["mean_delta_bpb"] == pytest.approx(-0.01, abs=1e-7)
    assert rows["aa"]["mean_delta_bpb"] == 0.0
