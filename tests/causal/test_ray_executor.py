"""Tests for scripts/causal/screen/ray_executor.py and the screen runner's concurrent (run_many) path.

The quick tests need no Ray. The slow ones start a local 2-CPU Ray cluster once for the module (skipped with
the reason when ray is not installed): a tiny screen matches the in-process executor bit for bit, a worker
killed mid-run is recorded as a failed run, and a driver killed mid-screen resumes with each run once.
"""
from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import train_gpt as tg
from scripts.causal import experiment_runner as er
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.screen.executors import InProcessExecutor, make_executor
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.progress import LineProgress, make_progress
from scripts.causal.screen.ray_executor import (
    RayExecutor,
    check_fits,
    code_digest,
    import_ray,
    task_resources,
)

# ---------------------------------------------------------------------------------------------
# Quick: no Ray needed
# ---------------------------------------------------------------------------------------------

def test_each_task_declares_what_it_needs():
    assert task_resources("torch", cluster_gpus=0) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert task_resources("torch", cluster_gpus=0, threads=2) == {"num_cpus": 2.0, "num_gpus": 0.0}
    assert task_resources("torch", cluster_gpus=8, threads=2) == {"num_cpus": 2.0, "num_gpus": 1.0}
    assert task_resources("mlx", cluster_gpus=8) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert task_resources("torch", cluster_gpus=16, nproc_per_node=8) == {"num_cpus": 1, "num_gpus": 8.0}
    with pytest.raises(ConfigError, match="--threads 0: must be >= 1"):
        task_resources("torch", cluster_gpus=0, threads=0)


def test_a_task_no_node_can_hold_is_an_error_not_a_hang():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0}}, {"Alive": False, "Resources": {"GPU": 8.0}}]
    check_fits({"num_cpus": 1, "num_gpus": 4.0}, nodes)
    with pytest.raises(ConfigError, match=r"needing 1 CPU and 8 GPU \(nodes: 16 CPU/4 GPU\)"):
        check_fits({"num_cpus": 1, "num_gpus": 8.0}, nodes)


def test_code_digest_changes_with_the_trainer_code(tmp_path):
    a, b = tmp_path / "train_gpt.py", tmp_path / "trainer.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = code_digest([a, b])
    assert code_digest([a, b]) == before and len(before) == 64
    a.write_text("x = 2\n")
    assert code_digest([a, b]) != before
    assert code_digest() == code_digest()  # the real files


def test_missing_ray_is_a_config_error_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


def test_make_executor_builds_ray_with_its_options():
    ex = make_executor("ray", threads=2, address="auto", timeout_s=60.0, nproc_per_node=8)
    assert isinstance(ex, RayExecutor) and ex.name == "ray"
    assert (ex.threads, ex.address, ex.timeout_s, ex.nproc_per_node) == (2, "auto", 60.0, 8)


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    rc = er.main(["--interventions", "aa", "--preset", "tiny", "--ledger", str(tmp_path / "l.sqlite"),
                  "--ray-address", "auto"])
    assert rc == 1 and "--ray-address needs --executor ray" in capsys.readouterr().err


def test_run_pipeline_threads_executor_and_address_to_its_screens(tmp_path, tiny_corpus, monkeypatch):
    from scripts.causal import run_pipeline as rp
    from scripts.causal.core.schema import ScreenResult
    from scripts.causal.pipeline import cycle

    argv = ["--preset", "tiny", "--executor", "ray", "--ray-address", "auto", "--output-dir", str(tmp_path)]
    opts = rp.options_from_args(rp.build_parser().parse_args(argv))
    assert (opts.executor, opts.ray_address, opts.threads) == ("ray", "auto", None)
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        rp.options_from_args(rp.build_parser().parse_args(["--ray-address", "auto", "--output-dir", str(tmp_path)]))
    seen = []

    def fake_run_screen(plan, *, ledger, executor, progress):
        seen.append(executor)
        return ScreenResult(plan=plan, runs=(), n_executed=0, n_skipped=0)

    monkeypatch.setattr(er, "run_screen", fake_run_screen)
    cycle.run_screen_stage(opts, name="screen", interventions=["aa"], seeds=[1, 2], out_dir=tmp_path / "s",
                           base_overrides=tiny_corpus.overrides(), progress=False,
                           log=lambda _: None, threads=2)
    assert isinstance(seen[0], RayExecutor) and (seen[0].address, seen[0].threads) == ("auto", None)


def test_cluster_progress_is_a_line_off_a_terminal_and_the_bar_postfix_on_one():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Tty()
    for prog in (make_progress(True, plain), make_progress(True, tty)):
        prog.start("screen", 4, 0)
        prog.cluster(["control seed 1 @nodeA:7", "aa seed 1 @nodeB:9"], 2)
        prog.run_finished("[1/4] control seed=1 val_bpb=2.0000 (control)")
        prog.close()
    assert plain.getvalue() == ("running 2, queued 2: control seed 1 @nodeA:7, aa seed 1 @nodeB:9\n"
                                "[1/4] control seed=1 val_bpb=2.0000 (control)\n")
    assert "2 running, 2 queued" in tty.getvalue() and "[1/4] control seed=1" in tty.getvalue()


class _BatchFake:
    """A batch executor that 'finishes' the jobs in reverse order with made-up metrics (no training)."""

    name = "fake-batch"

    def __init__(self):
        self.batches = []

    def run(self, config, seed, backend, *, on_step=None):
        raise AssertionError("the runner must use run_many when an executor has it")

    def run_many(self, jobs, *, on_status=None):
        jobs = list(jobs)
        self.batches.append([(tag.intervention, seed) for tag, _, seed, _ in jobs])
        on_status([(jobs[-1][0], "nodeA:7")], len(jobs) - 1)
        for tag, cfg, seed, backend in reversed(jobs):
            ran = cfg.with_overrides(seed=seed)
            bpb = 2.0 + seed / 100 + (0.01 if tag.arm == "treatment" else 0)
            yield tag, tg.RunResult(config=ran.to_dict(), config_hash=tg.config_hash(ran), seed=seed, backend=backend,
                                    versions={}, val_bpb=bpb, post_quant_val_bpb=bpb, steps=1, wall_s=0.1)


def test_runner_records_batch_results_in_completion_order_and_resumes(tmp_path, tiny_corpus):
    plan = er.build_plan(interventions=["mlp_mult_3"], seeds=[1, 2], preset="tiny",
                         base_overrides=tiny_corpus.overrides())
    stream, ex = io.StringIO(), _BatchFake()
    with Ledger(tmp_path / "l.sqlite") as led:
        result = er.run_screen(plan, ledger=led, executor=ex, progress=LineProgress(stream))
        ids = [(r.intervention, r.seed) for r in sorted(led.runs(plan.screen_id), key=lambda r: r.finished_at)]
    assert ex.batches == [[("control", 1), ("mlp_mult_3", 1), ("control", 2), ("mlp_mult_3", 2)]]
    assert ids == [("mlp_mult_3", 2), ("control", 2), ("mlp_mult_3", 1), ("control", 1)]  # completion order
    assert [(r.intervention, r.seed) for r in result.runs] == [("control", 1), ("mlp_mult_3", 1), ("control", 2),
                                                              ("mlp_mult_3", 2)]  # returned in grid order
    assert {r.executor for r in result.runs} == {"fake-batch"} and result.n_executed == 4
    text = stream.getvalue()
    assert "running 1, queued 3: mlp_mult_3 seed 2 @nodeA:7" in text
    assert "[4/4] control                  seed=1      score_bpb=2.0100 (control)" in text
    assert "[1/4] mlp_mult_3               seed=2      score_bpb=2.0300 delta n/a" in text  # its control came later
    # Resume: only the cells missing from the ledger go to the executor.
    con = sqlite3.connect(tmp_path / "l.sqlite")
    con.execute("DELETE FROM runs WHERE seed = 2 AND intervention = 'control'")
    con.commit()
    con.close()
    with Ledger(tmp_path / "l.sqlite") as led:
        again = er.run_screen(plan, ledger=led, executor=ex, progress=False)
    assert ex.batches[-1] == [("control", 2)] and (again.n_executed, again.n_skipped) == (1, 3)


# ---------------------------------------------------------------------------------------------
# Slow: a local 2-CPU Ray cluster
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module (each run takes 1 CPU: 2 workers)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    ex = RayExecutor(local_cpus=2, threads=1)
    ex.connect()
    yield ex
    ex.close()


@pytest.mark.slow
def test_ray_tiny_screen_matches_inprocess_bit_for_bit(tmp_path, tiny_corpus, ray_cluster, one_torch_thread):
    """2 interventions x 3 seeds: every run's numbers are identical in-process and on 2 Ray workers."""
    plan = er.build_plan(interventions=["mlp_mult_3", "act_gelu"], seeds=[1, 2, 3], preset="tiny",
                         base_overrides=tiny_corpus.overrides())
    with Ledger(tmp_path / "a.sqlite") as led:
        local = er.run_screen(plan, ledger=led, executor=InProcessExecutor(threads=1), progress=False).runs
    stream = io.StringIO()
    with Ledger(tmp_path / "b.sqlite") as led:
        remote = er.run_screen(plan, ledger=led, executor=RayExecutor(threads=1), progress=LineProgress(stream)).runs
    assert len(local) == len(remote) == 9
    assert all(r.status == "ok" for r in local + remote), [r.error for r in remote if r.status != "ok"]
    for a, b in zip(local, remote, strict=True):
        assert (a.intervention, a.seed) == (b.intervention, b.seed)
        assert a.val_bpb == b.val_bpb and a.post_quant_val_bpb == b.post_quant_val_bpb, (a.intervention, a.seed)
        assert a.step_losses == b.step_losses and a.config_hash == b.config_hash
    assert {r.executor for r in remote} == {"ray"}
    # the progress line reports the workers in use; whether both are busy at one poll depends on timing (0.4 s
    # runs on a loaded 2-core machine), so the test checks the bound, not that the poll caught both busy. A run
    # that ended since the last poll is not running (it once read "running 4" on 2 workers: runs started and
    # ended between two polls were counted until collected)
    running = [int(n) for n in re.findall(r"running (\d+), queued \d+", stream.getvalue())]
    assert running and max(running) in (1, 2), stream.getvalue()


class _KillOnStart(LineProgress):
    """Progress that SIGKILLs the Ray worker of the first run whose label starts with ``victim``."""

    def __init__(self, victim: str):
        super().__init__(io.StringIO())
        self.victim, self.killed = victim, None

    def cluster(self, running, queued):
        super().cluster(running, queued)
        for label in running:
            if self.killed is None and label.startswith(self.victim):
                self.killed = int(label.rsplit(":", 1)[1])
                os.kill(self.killed, signal.SIGKILL)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_a_failed_run_and_the_screen_goes_on(tmp_path, tiny_corpus, ray_cluster):
    plan = er.build_plan(interventions=[], overrides=["iterations=3000"], seeds=[1], preset="tiny",
                         base_overrides=tiny_corpus.overrides())
    prog = _KillOnStart("override:iterations=3000")
    t0 = time.monotonic()
    with Ledger(tmp_path / "l.sqlite") as led:
        runs = er.run_screen(plan, ledger=led, executor=RayExecutor(threads=1), progress=prog).runs
        stored = {r.intervention: r for r in led.runs(plan.screen_id)}
    assert prog.killed is not None
    control, victim = runs
    assert control.status == "ok" and control.val_bpb is not None
    assert victim.status == "failed" and victim.val_bpb is None
    assert f"(pid {prog.killed})" in victim.error and "WorkerCrashedError" in victim.error, victim.error
    assert stored["override:iterations=3000"].status == "failed"  # in the ledger, with its error
    assert time.monotonic() - t0 < 120  # killed early, not run to its end


@pytest.mark.slow
def test_a_run_past_its_timeout_is_cancelled_and_failed(tiny_corpus, ray_cluster):
    cfg = tg.preset_config("tiny", **tiny_corpus.overrides(), iterations=5000)
    t0 = time.monotonic()
    result = RayExecutor(threads=1, timeout_s=3.0).run(cfg, 1, "torch")
    assert result.status == "failed" and result.error == "timeout: run exceeded 3 s (raise --timeout)"
    assert time.monotonic() - t0 < 60 and result.config_hash == tg.config_hash(cfg)


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, s in (ln.split() for ln in out.splitlines()) if int(s) == sid]


@pytest.mark.slow
def test_driver_killed_mid_screen_resumes_with_each_run_once(tmp_path, tiny_corpus, ray_cluster):
    """SIGKILL a ``--executor ray`` screen (driver and its local cluster) after 2 runs, then ``--resume`` it."""
    ledger = tmp_path / "ledger.sqlite"
    args = ["--interventions", "aa,mlp_mult_3", "--seeds", "1,2,3", "--preset", "tiny",
            "--base-override", f"data_path={tiny_corpus.data_path}",
            "--base-override", f"tokenizer_path={tiny_corpus.tokenizer_path}",
            "--ledger", str(ledger), "--output", str(tmp_path / "runs.json"), "--screen-id", "raykill",
            "--no-progress", "--executor", "ray", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "scripts/causal/experiment_runner.py", *args], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    n_before, deadline = 0, time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None and n_before < 2:
            if ledger.exists():
                con = sqlite3.connect(ledger, timeout=30)
                try:
                    n_before = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    pass
                con.close()
            time.sleep(0.05)
        assert proc.poll() is None, f"screen ended before the kill: {proc.stderr.read().decode()[-800:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        for pid in _session_pids(proc.pid):  # the local cluster the driver started (Ray leaves orphans)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    with Ledger(ledger) as led:
        assert led.integrity_ok()
        before = {(r.intervention, r.seed): r for r in led.runs("raykill")}
    assert 2 <= len(before) < 7
    assert er.main([*args, "--resume"]) == 0  # joins this module's cluster (Ray is initialised here)
    con = sqlite3.connect(ledger)
    counts = con.execute("SELECT intervention, seed, COUNT(*) FROM runs GROUP BY intervention, seed").fetchall()
    con.close()
    assert sorted((i, s) for i, s, _ in counts) == sorted(  # aa: one repeat run of the first seed on CPU
        [("aa", 1)] + [(i, s) for s in (1, 2, 3) for i in ("control", "mlp_mult_3")])
    assert all(n == 1 for _, _, n in counts)
    with Ledger(ledger) as led:
        after = {(r.intervention, r.seed): r for r in led.runs("raykill")}
    for key, rec in before.items():  # runs finished before the kill are kept untouched
        assert after[key] == rec
    assert all(r.status == "ok" for r in after.values())
