"""Ray executor: every screen run is a Ray task on a local or multi-node cluster; results stream back.

``RayExecutor.run_many(jobs)`` submits a batch of ``(tag, config, seed, backend)`` jobs at once and yields
``(tag, RunResult)`` in completion order; the screen runner (the driver) alone writes the ledger. ``run``
is the same for one job. Each task declares what it needs, and Ray places it where that is free:

* a CPU run: ``threads`` CPUs (default 1), and torch is pinned to that many threads in the task, exactly as
  ``InProcessExecutor(threads=...)`` does, so a run's numbers do not depend on where it ran;
* a 1-GPU proxy run (torch backend on a cluster that has GPUs): 1 GPU, in a fresh worker process per run;
* a torchrun job (``nproc_per_node=N``): N GPUs of one node, running ``TorchrunExecutor`` there; a
  ``--train-script`` arm (``ScriptConfig``) is always a torchrun job (N defaults to 1), whose worker checks
  the script's sha256 before it runs.

Inside the task the run goes through the same executors as a single machine (``make_executor``), after two
checks: the config rebuilt on the worker must hash like the driver's, and the worker's trainer code
(``code_digest``) must be byte-identical to the driver's. A failed check, a task error, a worker that dies
or a run past ``timeout_s`` comes back as a failed ``RunResult`` with the error; the batch goes on. Tasks are
not retried by default (``max_retries=0``): a dead worker is recorded, not silently rerun.

Cluster: ``address=None`` starts a local cluster in this process (``local_cpus`` CPUs, default all cores);
``"auto"`` joins the cluster of ``ray start`` on this machine; any other value goes to ``ray.init(address=)``.
``ray`` is an optional dependency (``pip install -e '.[ray]'``); it is imported on first use.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import train_gpt as tg
from scripts.causal.core.errors import ConfigError

Job = tuple[Any, tg.Hyperparameters, int, str]  # (tag, config, seed, backend); the tag stays on the driver
StatusCallback = Callable[[list[tuple[Any, str]], int], None]  # (running [(tag, "host:pid")], queued)

_SCREEN_DIR = Path(__file__).resolve().parent
_CODE_FILES = (Path(tg.__file__).resolve(), Path(tg.__file__).resolve().with_name("train_gpt_mlx.py"),
               _SCREEN_DIR / "trainer.py", _SCREEN_DIR / "executors.py")
_LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # results are small dicts; keep a local cluster's shared memory small


def import_ray() -> Any:
    """The ray module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs the ray package ({exc}); install it with pip install -e '.[ray]'") \
            from None
    return ray


def code_digest(files: Iterable[Path] = _CODE_FILES) -> str:
    """sha256 over the files that decide a run's numbers (the trainers, the trainer adapter, the executors)."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    return h.hexdigest()


def task_resources(backend: str, *, cluster_gpus: float, threads: int | None = None,
                   nproc_per_node: int | None = None) -> dict[str, float]:
    """What one run asks Ray for: {"num_cpus", "num_gpus"}.

    A torchrun job takes ``nproc_per_node`` GPUs and 1 CPU (``nproc_per_node`` CPUs on a cluster without
    GPUs); a torch run on a cluster with GPUs takes 1 GPU and ``threads`` CPUs; anything else (CPU torch, MLX)
    takes ``threads`` CPUs. ``threads`` defaults to 1."""
    cpus = 1 if threads is None else int(threads)
    if cpus < 1:
        raise ConfigError(f"--threads {threads}: must be >= 1")
    if nproc_per_node:
        if nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node {nproc_per_node}: must be >= 1")
        return {"num_cpus": 1, "num_gpus": float(nproc_per_node)} if cluster_gpus else \
            {"num_cpus": float(nproc_per_node), "num_gpus": 0.0}
    if backend == "torch" and cluster_gpus:
        return {"num_cpus": float(cpus), "num_gpus": 1.0}
    return {"num_cpus": float(cpus), "num_gpus": 0.0}


def check_fits(need: dict[str, float], nodes: list[dict]) -> None:
    """ConfigError unless one alive node of ``ray.nodes()`` has the CPUs and GPUs a task needs (else Ray would
    queue the task forever)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    for res in alive:
        if res.get("CPU", 0) >= need["num_cpus"] and res.get("GPU", 0) >= need["num_gpus"]:
            return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in alive) or "no alive nodes"
    raise ConfigError(f"no Ray node can run a task needing {need['num_cpus']:g} CPU and {need['num_gpus']:g} GPU "
                      f"(nodes: {have}); lower --threads / --nproc-per-node or add a bigger node")


class _Tracker:
    """Which tasks have started, on which host, and which have ended (a Ray actor: tasks call ``started`` and
    ``ended``, the driver ``snapshot``). A worker's calls reach the actor in order, so a worker's previous task
    has ended before its next one starts: started-but-not-ended counts each worker's one task at most, where the
    driver's own view (refs not yet collected) also holds runs that ended since its last poll."""

    def __init__(self) -> None:
        self._started: dict[int, tuple[str, int]] = {}
        self._ended: set[int] = set()

    def started(self, key: int, host: str, pid: int) -> None:
        self._started[key] = (host, pid)

    def ended(self, key: int) -> None:
        self._ended.add(key)

    def snapshot(self) -> tuple[dict[int, tuple[str, int]], set[int]]:
        return dict(self._started), set(self._ended)


def _task(key: int, config: dict, expected_hash: str, seed: int, backend: str, options: dict,
          tracker: Any) -> tg.RunResult:
    """One run on a Ray worker: report the start, check code and config, run through the named executor."""
    from scripts.causal.screen.executors import make_executor, rebuild_config

    host = socket.gethostname()
    if tracker is not None:
        tracker.started.remote(key, host, os.getpid())
    digest = code_digest()
    if digest != options["code_digest"]:
        raise ConfigError(f"worker {host} runs different trainer code than the driver (digest {digest[:12]} vs "
                          f"{options['code_digest'][:12]}); install the same commit on every node")
    cfg = rebuild_config(config, expected_hash, f"ray task on {host}")
    executor = make_executor(options["inner"], threads=options["threads"], timeout_s=options["timeout_s"],
                             nproc_per_node=options["nproc_per_node"])
    try:
        return executor.run(cfg, seed, backend)
    finally:
        if tracker is not None:
            tracker.ended.remote(key)


def _error_text(ray: Any, exc: BaseException) -> str:
    """One line for a failed task: the task's own exception, or what Ray says happened to the worker."""
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@dataclasses.dataclass
class RayExecutor:
    """Run each job as a Ray task (see the module docstring); ``run_many`` runs a batch concurrently.

    ``threads``: CPUs and torch threads per CPU run (None: 1). ``nproc_per_node``: run each job as a torchrun
    job over that many GPUs of one node. ``timeout_s``: per-run limit from the task's start (None: none).
    ``local_cpus``: CPUs of a cluster started here (None: all cores). ``log``: where connection notes go."""

    address: str | None = None
    threads: int | None = None
    nproc_per_node: int | None = None
    timeout_s: float | None = None
    local_cpus: int | None = None
    max_retries: int = 0
    poll_s: float = 0.5
    log: Callable[[str], None] | None = None
    name: str = "ray"
    startup_s: float | None = dataclasses.field(default=None, init=False)
    _started_here: bool = dataclasses.field(default=False, init=False, repr=False)

    def _say(self, text: str) -> None:
        (self.log or (lambda t: print(t, file=sys.stderr, flush=True)))(text)

    def connect(self) -> Any:
        """Join or start the cluster (once per process; an already initialised Ray is reused). Returns ray."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        import logging

        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:  # "local": always a new cluster (plain ray.init() would join `ray start`'s)
            kwargs.update(address="local", num_cpus=self.local_cpus, include_dashboard=False,
                          object_store_memory=_LOCAL_OBJECT_STORE_BYTES)
        else:
            kwargs["address"] = self.address
        t0 = time.perf_counter()
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "start a local Ray cluster" if self.address is None else f"join Ray at {self.address!r}"
            raise ConfigError(f"--executor ray: cannot {where}: {exc} (for 'auto', run `ray start --head` first)") \
                from None
        self.startup_s = time.perf_counter() - t0
        self._started_here = True
        res = ray.cluster_resources()
        self._say(f"ray: {'started a local cluster' if self.address is None else 'joined ' + self.address} in "
                  f"{self.startup_s:.1f} s: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPU, "
                  f"{res.get('GPU', 0):g} GPU")
        return ray

    def close(self) -> None:
        """Shut Ray down if this executor started or joined it (a no-op otherwise)."""
        if self._started_here:
            import_ray().shutdown()
            self._started_here = False

    def run(self, config: tg.Hyperparameters, seed: int, backend: str, *,
            on_step: Callable[[int, int], None] | None = None) -> tg.RunResult:
        """One run as a Ray task (steps are not reported back; the run is reported when it ends)."""
        for _, result in self.run_many([(None, config, seed, backend)]):
            return result
        raise AssertionError("run_many yielded nothing for one job")

    def run_many(self, jobs: Iterable[Job], *, on_status: StatusCallback | None = None
                 ) -> Iterator[tuple[Any, tg.RunResult]]:
        """Submit every job, then yield ``(tag, RunResult)`` as each finishes (completion order).

        ``on_status(running, queued)`` is called whenever the set of started-but-unfinished runs changes, with
        ``[(tag, "host:pid"), ...]`` and the number still waiting for resources. Leaving the loop early (or an
        exception in the consumer) cancels the runs not yet collected."""
        from scripts.causal.screen.executors import failed_result

        jobs = list(jobs)
        if not jobs:
            return
        ray = self.connect()
        gpus = ray.cluster_resources().get("GPU", 0)
        scripts = any(hasattr(job[1], "script_sha256") for job in jobs)  # --train-script arms run under torchrun
        nproc = self.nproc_per_node or (1 if scripts else None)
        options = {"code_digest": code_digest(), "inner": "torchrun" if nproc else "inprocess",
                   "threads": self.threads or 1, "timeout_s": self.timeout_s, "nproc_per_node": nproc}
        remotes: dict[tuple, Any] = {}
        tracker = ray.remote(num_cpus=0)(_Tracker).remote()
        pending: dict[Any, int] = {}
        for i, (_, cfg, seed, backend) in enumerate(jobs):
            need = task_resources(backend, cluster_gpus=gpus, threads=self.threads, nproc_per_node=nproc)
            key = tuple(sorted(need.items()))
            if key not in remotes:
                check_fits(need, ray.nodes())
                # A fresh process per in-process GPU run: a reused worker may hold another GPU's CUDA context.
                fresh = need["num_gpus"] > 0 and options["inner"] == "inprocess"
                remotes[key] = ray.remote(max_retries=self.max_retries, max_calls=1 if fresh else 0, **need)(_task)
            chash = cfg.config_hash() if hasattr(cfg, "script_sha256") else tg.config_hash(cfg)
            ref = remotes[key].remote(i, cfg.to_dict(), chash, int(seed), backend, options, tracker)
            pending[ref] = i
        seen: dict[int, float] = {}  # job index -> driver time its start was first seen
        timed_out: set[int] = set()
        last_status: tuple | None = None
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                rest = [r for r in pending if r not in ready]
                if ready and rest:
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                started, ended = ray.get(tracker.snapshot.remote())
                now = time.monotonic()
                for i in started:
                    seen.setdefault(i, now)
                finished = []
                for ref in ready:
                    i = pending.pop(ref)
                    finished.append((i, self._collect(ray, ref, jobs[i], started.get(i), i in timed_out,
                                                      now - seen.get(i, now), failed_result)))
                if self.timeout_s:
                    for ref, i in pending.items():
                        if i in seen and i not in timed_out and now - seen[i] > self.timeout_s:
                            ray.cancel(ref, force=True)
                            timed_out.add(i)
                running = [(jobs[i][0], "{}:{}".format(*started[i])) for i in sorted(pending.values())
                           if i in started and i not in ended]
                status = (running, sum(i not in started for i in pending.values()))
                if on_status is not None and status != last_status:
                    on_status(*status)
                    last_status = status
                for i, result in finished:
                    yield jobs[i][0], result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.kill(tracker)

    def _collect(self, ray: Any, ref: Any, job: Job, where: tuple[str, int] | None, timed_out: bool,
                 wall_s: float, failed_result: Callable[..., tg.RunResult]) -> tg.RunResult:
        """The finished task's RunResult, or a failed one saying what happened to the task."""
        _, cfg, seed, backend = job
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if timed_out:
                error = f"timeout: run exceeded {self.timeout_s:g} s (raise --timeout)"
            else:
                host = f" on {where[0]} (pid {where[1]})" if where else ""
                error = f"ray task failed{host}: {_error_text(ray, exc)}"
            return failed_result(cfg, seed, backend, error, wall_s=wall_s)
        if not isinstance(result, tg.RunResult):
            return failed_result(cfg, seed, backend, f"ray task returned {type(result).__name__}, not a RunResult")
        return result
