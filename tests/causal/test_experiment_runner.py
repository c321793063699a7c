"""Tests for scripts/causal/experiment_runner.py: design (shared control, interleaving, pre-registration),
real tiny screens through the ledger, failed/diverged runs, resume, runs.json, CLI and the kill -9 test."""
from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from scripts.causal import experiment_runner as er
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.core.schema import read_json
from scripts.causal.screen.executors import SubprocessExecutor
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.progress import BarProgress, LineProgress, make_progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def micro_corpus(tmp_path_factory):
    """A very small synthetic corpus (cheap eval), in the FineWeb layout."""
    from scripts.causal.data.shards import ensure_corpus

    return ensure_corpus(tmp_path_factory.mktemp("micro_corpus"), source="synthetic", n_bytes=60_000,
                         val_bytes=4_000, seed=0)


@pytest.fixture
def base_ov(micro_corpus):
    """Control = the tiny preset on the micro corpus, shortened to 4 steps."""
    return {**micro_corpus.overrides(), "iterations": 4, "warmdown_iters": 2}


def _plan(base_ov, **kw):
    args = dict(interventions=["aa", "mlp_mult_3"], seeds=[11, 12], preset="tiny", base_overrides=base_ov,
                aa_mode="arm")
    args.update(kw)
    return er.build_plan(**args)


def test_plan_grid_is_interleaved_with_one_control_per_seed(base_ov):
    plan = _plan(base_ov, seeds="3,1,2", overrides=["activation=gelu"], aa_mode="arm")
    cells = er.plan_grid(plan)
    assert [(c.intervention, c.seed) for c in cells] == [
        ("control", 3), ("aa", 3), ("mlp_mult_3", 3), ("override:activation=gelu", 3),
        ("control", 1), ("aa", 1), ("mlp_mult_3", 1), ("override:activation=gelu", 1),
        ("control", 2), ("aa", 2), ("mlp_mult_3", 2), ("override:activation=gelu", 2)]
    assert [c.arm for c in cells[:2]] == ["control", "treatment"]
    # on a bit-reproducible backend (CPU torch) the A/A check is one repeat run of the first seed
    repeat = _plan(base_ov, seeds="3,1,2", overrides=["activation=gelu"], aa_mode="auto")
    assert repeat.aa_mode == "repeat" and repeat.preregistration()["aa_mode"] == "repeat"
    assert [(c.intervention, c.seed) for c in er.plan_grid(repeat) if c.intervention == "aa"] == [("aa", 3)]
    assert repeat.preregistration()["family"] == ["mlp_mult_3", "override:activation=gelu"]
    assert repeat.preregistration()["metric"] == "post_quant_val_bpb"
    configs = plan.configs
    assert configs["aa"] == configs["control"] and configs["mlp_mult_3"].mlp_mult == 3
    assert configs["override:activation=gelu"].activation == "gelu"
    pre = plan.preregistration()
    assert pre["seeds"] == [3, 1, 2] and pre["alpha"] == 0.01 and pre["correction"] == "holm"
    assert [i["name"] for i in pre["interventions"]] == ["aa", "mlp_mult_3", "override:activation=gelu"]


def test_screen_id_is_derived_from_the_design(base_ov):
    a, b = _plan(base_ov), _plan(base_ov)
    assert a.screen_id == b.screen_id and a.screen_id.startswith("tiny-torch-")
    assert _plan(base_ov, seeds=[11, 13]).screen_id != a.screen_id
    assert _plan(base_ov, screen_id="mine").screen_id == "mine"


@pytest.mark.parametrize("kw, match", [
    (dict(seeds=[1, 1]), r"--seeds \[1, 1\] has duplicates"),
    (dict(seeds="1,x"), "expected comma-separated integers"),
    (dict(preset="huge"), r"--preset 'huge' is not one of \['baseline', 'fast', 'screen', 'small_long', 'tiny'\]"),
    (dict(backend="jax"), r"--backend 'jax' is not one of"),
    (dict(interventions=["aa", "aa"]), r"repeated: \['aa'\]"),
    (dict(interventions=[], overrides=["mlp_mult=2"]), "leaves the config of preset 'tiny' unchanged"),
    (dict(interventions=[]), "no treatments"),
    (dict(correction="bonferroni"), "--correction 'bonferroni' is not one of"),
])
def test_plan_errors(base_ov, kw, match):
    with pytest.raises(ConfigError, match=match):
        _plan(base_ov, **kw)


def test_run_screen_real_tiny_with_diverged_and_failed_runs(tmp_path, base_ov):
    plan = _plan(base_ov, interventions=["aa"], overrides=["qk_gain_init=inf"], seeds=[11, 12])
    seen = []
    stream = io.StringIO()
    with Ledger(tmp_path / "l.sqlite") as led:
        res = er.run_screen(plan, ledger=led, progress=LineProgress(stream), on_run=seen.append)
        assert res.n_executed == 6 and res.n_skipped == 0 and len(seen) == 6
        by = {(r.intervention, r.seed): r for r in res.runs}
        ctrl, aa = by[("control", 11)], by[("aa", 11)]
        assert ctrl.status == "ok" and aa.status == "ok"
        assert aa.val_bpb == ctrl.val_bpb and aa.step_losses == ctrl.step_losses  # A/A: identical run
        assert by[("control", 12)].val_bpb != ctrl.val_bpb  # the seed changes init and data order
        div = by[("override:qk_gain_init=inf", 11)]
        assert div.status == "diverged" and "nan" in div.error and div.val_bpb is None
        assert ctrl.config_hash == aa.config_hash != div.config_hash
        assert ctrl.versions["torch"] and ctrl.executor == "inprocess" and ctrl.config["seed"] == 11
        assert len(ctrl.step_losses) == 4 and ctrl.steps == 4 and ctrl.artifact_bytes > 0
        assert led.count_runs(plan.screen_id) == 6
        # Re-running the same screen skips everything (idempotent).
        again = er.run_screen(plan, ledger=led, progress=LineProgress(stream))
        assert again.n_executed == 0 and again.n_skipped == 6 and again.runs == res.runs
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/6] control") and "(control)" in lines[0]
    assert f"score_bpb={ctrl.post_quant_val_bpb:.4f}" in lines[0]  # the score as the challenge takes it
    assert "delta +0.0000" in lines[1] and lines[1].split()[1] == "aa"
    assert "[diverged: train loss became nan" in lines[2]
    # runs.json
    out = er.write_runs_json(tmp_path / "s" / "runs.json", plan, res.runs)
    data = read_json(out)
    assert data["screen"]["screen_id"] == plan.screen_id and data["screen"]["seeds"] == [11, 12]
    assert [r["intervention"] for r in data["runs"][:3]] == ["control", "aa", "override:qk_gain_init=inf"]
    row = data["runs"][0]
    assert {"intervention", "arm", "seed", "backend", "status", "val_bpb", "post_quant_val_bpb", "artifact_bytes",
            "steps", "wall_s", "step_losses", "val_history"} <= set(row)
    assert data["runs"][2]["status"] == "diverged" and data["runs"][2]["val_bpb"] is None


def test_failed_run_recorded_and_screen_goes_on(tmp_path, base_ov):
    plan = _plan(base_ov, interventions=["aa"], seeds=[11])
    stream = _Tty()
    with Ledger(tmp_path / "l.sqlite") as led:
        res = er.run_screen(plan, ledger=led, executor=SubprocessExecutor(timeout_s=0.2),
                            progress=make_progress(True, stream))
        assert [(r.intervention, r.status) for r in res.runs] == [("control", "failed"), ("aa", "failed")]
        assert all(r.error.startswith("timeout") and r.executor == "subprocess" for r in res.runs)
    text = stream.getvalue()  # tqdm bar over the grid + one line per finished run
    assert "2/2" in text and "[2/2] aa" in text and "delta n/a" in text and "[failed: timeout: run exceeded 0.2 s" in text


def test_preregistration_cannot_change(tmp_path, base_ov):
    plan = _plan(base_ov, interventions=["aa"], seeds=[11], screen_id="fixed")
    with Ledger(tmp_path / "l.sqlite") as led:
        led.register_screen("fixed", plan.preregistration())
        other = _plan(base_ov, interventions=["aa"], seeds=[12], screen_id="fixed")
        with pytest.raises(ConfigError, match=r"pre-registered with different settings \(fields \['seeds'\]"):
            er.run_screen(other, ledger=led, progress=False)
        assert er.plan_from_ledger(led, "fixed") == plan


def _cli_args(tmp_path, corpus, *extra):
    return ["--interventions", "aa,mlp_mult_3", "--seeds", "1,2", "--preset", "tiny",
            "--base-override", f"data_path={corpus.data_path}",
            "--base-override", f"tokenizer_path={corpus.tokenizer_path}",
            "--base-override", "iterations=3,warmdown_iters=1",
            "--ledger", str(tmp_path / "ledger.sqlite"), "--output", str(tmp_path / "runs.json"),
            "--screen-id", "kill9", "--no-progress", "--threads", "1", *extra]


@pytest.mark.slow
def test_kill9_mid_screen_then_resume_has_each_run_once(tmp_path, micro_corpus):
    """SIGKILL a real screen after its first finished runs, --resume it, and check the ledger."""
    ledger = tmp_path / "ledger.sqlite"
    cmd = [sys.executable, "scripts/causal/experiment_runner.py", *_cli_args(tmp_path, micro_corpus)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    n_before = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists():
                con = sqlite3.connect(ledger, timeout=30)
                try:
                    n_before = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    n_before = 0
                con.close()
                if n_before >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"screen ended before the kill: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Ledger(ledger) as led:
        assert led.integrity_ok()
        before = {(r.intervention, r.seed): r for r in led.runs("kill9")}
    assert 2 <= len(before) < 5
    # A plain re-run refuses (the screen exists); --resume continues it.
    assert er.main(_cli_args(tmp_path, micro_corpus)) == 1
    assert er.main(_cli_args(tmp_path, micro_corpus, "--resume")) == 0
    con = sqlite3.connect(ledger)
    counts = con.execute("SELECT intervention, seed, COUNT(*) FROM runs GROUP BY intervention, seed").fetchall()
    con.close()
    assert sorted((i, s) for i, s, _ in counts) == sorted(  # aa: one repeat run of the first seed on CPU
        [("aa", 1)] + [(i, s) for s in (1, 2) for i in ("control", "mlp_mult_3")])
    assert all(n == 1 for _, _, n in counts)
    with Ledger(ledger) as led:
        after = {(r.intervention, r.seed): r for r in led.runs("kill9")}
    for key, rec in before.items():  # runs finished before the kill are kept untouched
        assert after[key] == rec
    data = json.loads((tmp_path / "runs.json").read_text())
    assert len(data["runs"]) == 5 and all(r["status"] == "ok" for r in data["runs"])
    # --resume with only the screen id rebuilds the plan from the ledger and runs nothing.
    args = ["--resume", "--screen-id", "kill9", "--ledger", str(ledger), "--output", str(tmp_path / "r2.json"),
            "--no-progress"]
    assert er.main(args) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["runs"] == data["runs"]
    args = ["--export-only", "--screen-id", "kill9", "--ledger", str(ledger), "--output", str(tmp_path / "r3.json")]
    assert er.main(args) == 0
    assert json.loads((tmp_path / "r3.json").read_text())["runs"] == data["runs"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = er.main(["--interventions", "nope", "--preset", "tiny", "--ledger", str(tmp_path / "l.sqlite")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "ConfigError: unknown intervention 'nope'" in err[0]
    rc = er.main(["--resume", "--screen-id", "zz", "--ledger", str(tmp_path / "l.sqlite")])
    assert rc == 1 and "no screen 'zz' to resume" in capsys.readouterr().err
    rc = er.main(["--export-only", "--ledger", str(tmp_path / "l.sqlite")])
    assert rc == 1 and "--export-only needs --screen-id" in capsys.readouterr().err


def test_help_works_as_module_and_script():
    for cmd in (["-m", "scripts.causal.experiment_runner"], ["scripts/causal/experiment_runner.py"],
                ["-m", "scripts.causal.screen.executors"]):
        out = subprocess.run([sys.executable, *cmd, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout


def test_experiment_rows_for_the_dag(base_ov):
    from scripts.causal.core.schema import RunRecord

    plan = _plan(base_ov, interventions=["act_gelu", "partial_rope", "loss_rho1"], overrides=["qk_gain_init=4"],
                 seeds=[1])

    def rec(name, status="ok", bpb=2.0):
        return RunRecord(screen_id=plan.screen_id, intervention=name, arm="control" if name == "control"
                         else "treatment", seed=1, backend="torch", config_hash="h", status=status, val_bpb=bpb)

    runs = [rec("control"), rec("act_gelu", bpb=1.9), rec("partial_rope"), rec("loss_rho1"),
            rec("override:qk_gain_init=4.0", status="diverged", bpb=None)]
    rows = er.experiment_rows(plan, runs)
    assert rows == [
        {"intervention": "control", "feature": None, "value": None, "val_bpb": 2.0, "seed": 1, "arm": "control",
         "control_value": None},
        {"intervention": "act_gelu", "feature": "activation", "value": "gelu", "val_bpb": 1.9, "seed": 1,
         "arm": "treatment", "control_value": "relu2"},
        {"intervention": "partial_rope", "feature": "partial_rope", "value": True, "val_bpb": 2.0, "seed": 1,
         "arm": "treatment", "control_value": False},
        {"intervention": "loss_rho1", "feature": None, "value": None, "val_bpb": 2.0, "seed": 1, "arm": "treatment",
         "control_value": None},
    ]  # the diverged run has no measurement, so no row
    assert er.reg.treatment_feature("override:qk_gain_init=4.0", {"qk_gain_init": 4.0}) == "qk_gain"


class _BrokenExecutor:
    """An executor with a bug (raises): the screen must record failed runs and go on."""

    name = "broken"

    def run(self, config, seed, backend, *, on_step=None):
        raise RuntimeError(f"no GPU for seed {seed}")


def test_executor_exception_is_a_failed_run(tmp_path, base_ov):
    plan = _plan(base_ov, interventions=["aa"], seeds=[11, 12])
    with Ledger(tmp_path / "l.sqlite") as led:
        res = er.run_screen(plan, ledger=led, executor=_BrokenExecutor(), progress=LineProgress(io.StringIO()))
    assert len(res.runs) == 4 and all(r.status == "failed" for r in res.runs)
    assert res.runs[3].error == "executor raised RuntimeError: no GPU for seed 12"
    assert res.runs[3].executor == "broken"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_off_a_terminal_and_bars_on_one():
    plain, tty = io.StringIO(), _Tty()
    assert type(make_progress(True, plain)) is LineProgress and type(make_progress(False, tty)) is LineProgress
    bar = make_progress(True, tty)
    assert isinstance(bar, BarProgress)
    lines = make_progress(True, plain)
    for prog in (lines, bar):
        prog.start("screen", 2, 0)
        prog.run_started("control seed 1", 10)
        for step in range(1, 11):
            prog.on_step(step, 10)
        prog.run_finished("[1/2] control seed=1 val_bpb=2.0000 (control)")
        prog.close()
    assert plain.getvalue() == "[1/2] control seed=1 val_bpb=2.0000 (control)\n"  # no bars, no carriage returns
    assert "\r" in tty.getvalue() and "[1/2] control seed=1" in tty.getvalue()


def test_the_trainer_reports_steps_through_the_callback(base_ov):
    from scripts.causal.screen.executors import InProcessExecutor

    plan = _plan(base_ov, interventions=["aa"], seeds=[11])
    seen = []
    result = InProcessExecutor(threads=1).run(plan.configs["control"], 11, "torch",
                                              on_step=lambda s, n: seen.append((s, n)))
    n = plan.configs["control"].iterations
    assert result.status == "ok" and seen == [(s, n) for s in range(1, n + 1)]


class _SyntheticExecutor:
    """Paired synthetic scores, no training: control 2.0 + seed noise; 'mlp_mult_3' is clearly worse (+0.05),
    'override:activation=gelu' is a hair better (-0.0002) inside the noise."""

    name = "synthetic"
    shift = {"control": 0.0, "mlp_mult_3": 0.05, "override:activation=gelu": -0.0002}

    def run(self, config, seed, backend, *, on_step=None):
        import dataclasses as dc

        import numpy as np

        from scripts.causal.screen.executors import failed_result

        arm = "mlp_mult_3" if config.mlp_mult == 3 else ("override:activation=gelu" if config.activation == "gelu"
                                                         else "control")
        noise = np.random.default_rng([seed, len(arm)]).normal(0, 0.002)
        v = 2.0 + np.random.default_rng(seed).normal(0, 0.01) + self.shift[arm] + (noise if arm != "control" else 0)
        base = failed_result(config.with_overrides(seed=seed), seed, backend, None, status="ok", wall_s=0.01)
        return dc.replace(base, val_bpb=float(v), post_quant_val_bpb=float(v), val_loss=float(v) * 0.693 * 2.44,
                          versions={"torch": "x"}, steps=config.iterations)


def test_sequential_screen_stops_clear_arms_early_and_resumes(tmp_path, base_ov):
    seeds = er.extend_seeds([11, 12, 13], 8)
    assert seeds == (11, 12, 13, 14, 15, 16, 17, 18)
    plan = _plan(base_ov, interventions=["mlp_mult_3"], overrides=["activation=gelu"], seeds=seeds,
                 sequential={"n0": 3})
    assert plan.preregistration()["sequential"] == {"n0": 3, "step": 1, "futility_effect_sd": None}
    with Ledger(tmp_path / "l.sqlite") as led:
        res = er.run_screen(plan, ledger=led, executor=_SyntheticExecutor(), progress=LineProgress(io.StringIO()))
        state = er.sequential_state(plan, res.runs)
    by_arm = {}
    for r in res.runs:
        by_arm.setdefault(r.intervention, []).append(r.seed)
    assert state["done"] and state["results"]["mlp_mult_3"]["status"] == "harmful"
    assert len(by_arm["mlp_mult_3"]) < len(seeds) == len(by_arm["override:activation=gelu"])  # stopped early
    assert by_arm["control"] == list(seeds)  # the open arm still needs its paired controls
    assert state["results"]["override:activation=gelu"]["status"] == "undecided"
    with Ledger(tmp_path / "l.sqlite") as led:  # a re-run resumes: nothing runs twice
        again = er.run_screen(plan, ledger=led, executor=_SyntheticExecutor(), progress=LineProgress(io.StringIO()))
    assert again.n_executed == 0 and len(again.runs) == len(res.runs)
    with pytest.raises(ConfigError, match="n0=3 must be >= 3 and below the number of seeds"):
        _plan(base_ov, seeds=[1, 2, 3], sequential={"n0": 3})


def test_run_line_shows_the_score_an_evaluation_change_is_decided_on():
    """A TTT arm trains exactly as its control: its pre-quant val_bpb delta is 0, its score (post-TTT) is not."""
    from scripts.causal.core.schema import RunRecord

    def rec(name, **metrics):
        return RunRecord(screen_id="s", intervention=name, arm="control" if name == "control" else "treatment",
                         seed=11, backend="torch", config_hash=name, status="ok", val_bpb=2.5000,
                         post_quant_val_bpb=2.5010, **metrics)

    control, ttt = rec("control"), rec("ttt_full", ttt_val_bpb=2.4970)
    assert er.format_run_line(control, None, done=1, total=2).endswith("score_bpb=2.5010 (control)")
    assert er.format_run_line(ttt, control, done=2, total=2).endswith("score_bpb=2.4970 delta -0.0040")
