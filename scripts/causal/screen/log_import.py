"""Import runs that already happened (one's own H100 logs, a record's seeds) as a screen: ``--import-logs DIR``.

Each ``*.log`` / ``*.txt`` file in DIR (recursively) that has a final score is one run:

* its config is what the log prints (``records.log_config``: the hyperparameter dump, ``key:value`` tokens and
  ``KEY=VALUE`` env settings) minus run-specific keys (seed, run id, paths, sizes; ``RUN_SPECIFIC``), plus the
  sha256 of the script source the log embeds, if any;
* its seed is the log's ``seed:N`` (else the file name's ``seed_N``); a log without a seed is refused;
* its metrics are every stage read through the final-line table (``core.log_formats``).

Runs with the same config form an arm. The control is the arm matching ``--import-control KEY=VALUE`` (default:
the arm of the first log in name order); each other arm is a treatment named by how its config differs. Where
every treatment ran on exactly the control's seeds the runs are paired by seed and go through the screen's own
gate (``stats.analysis.analyze``). Otherwise the seeds cannot pair: the result says so and every arm is tested
with Welch's unpaired t against the control (``welch_gate``), with the gate's family, correction and decision
rule. The runs go into the ledger and runs.json, and into the DAG as interventional rows (``experiment_rows``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from scripts.causal.core import log_formats as lf
from scripts.causal.core.cli import parse_key_values
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import RESULTS_DIR
from scripts.causal.core.schema import RunRecord, ScreenPlan, write_json
from scripts.causal.extract import records as rp
from scripts.causal.stats.unpaired import welch_gate

__all__ = ["ImportedRun", "import_main", "import_screen", "read_log", "welch_gate"]

RUN_SPECIFIC = re.compile(r"^(seed|run_id|logfile|log_?file|local_rank|rank|is_main_process|payload\w*|raw_\w*|"
                          r"\w*_bytes|\w*_path|\w*_dir|tokens|warmup_step|step_avg|train_time|eval_time|"
                          r"world_size|grad_accum_steps|sdp_backends|train_shards|val_loader|train_loader)$")
LOG_SUFFIXES = (".log", ".txt")


class ImportedRun:
    """One log: ``path``, ``seed``, ``config`` (str -> str), ``stages`` (stage -> StageScore)."""

    def __init__(self, path: Path, seed: int, config: dict[str, str], stages: dict) -> None:
        self.path, self.seed, self.config, self.stages = path, seed, config, stages

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()


_TRAINING_STARTS = re.compile(r"^(?:step:\d+/\d+|\d+/\d+ (?:train_loss|val_loss)|warmup_step)", re.M)


def _settings_part(text: str, code: str | None) -> str:
    """The part of a log that prints settings: after the embedded source, before the first training step
    (later lines hold per-run numbers: losses, timings, TTT progress)."""
    if code:
        text = text.replace(code, "")
    m = _TRAINING_STARTS.search(text)
    return text[:m.start()] if m else text


def read_log(path: Path) -> ImportedRun | None:
    """The run a log records, or None when it has no final score (not a finished training log)."""
    text = rp.strip_line_prefixes(path.read_text(encoding="utf-8", errors="replace"))
    stages = lf.parse_stages(text)
    if not any(s in stages for s in ("post_quant", "sliding", "ttt")):
        return None
    code = rp.code_from_log(text)
    settings = _settings_part(text, code)
    token = re.search(r"(?<![\w.-])(?:seed|SEED)[:=]\s*(\d+)\b", settings)
    seed = rp.log_seed(path.name, text) if token is None else int(token.group(1))
    if seed is None:
        raise DataFormatError(f"{path}: no seed in the log (seed:N) nor in its name (seed_N); imported runs pair "
                              "and group by seed, so every log needs one")
    config = {k: v for k, v in rp.log_config(settings).items()
              if not RUN_SPECIFIC.match(k) and "/" not in v}
    if code:
        config["code_sha256"] = hashlib.sha256(code.encode()).hexdigest()[:16]
    return ImportedRun(path, seed, config, stages)


def _arm_name(cfg: Mapping[str, str], control: Mapping[str, str]) -> str:
    diff = {k: cfg.get(k, "<unset>") for k in sorted(set(cfg) | set(control)) if cfg.get(k) != control.get(k)}
    text = ",".join(f"{k}={v}" for k, v in diff.items())
    return "logs:" + (text if len(text) <= 80 else text[:60] + "..+" + hashlib.sha256(text.encode()).hexdigest()[:8])


def _record(run: ImportedRun, *, screen_id: str, name: str, arm: str) -> RunRecord:
    st = run.stages

    def bpb(stage: str) -> float | None:
        return st[stage].val_bpb if stage in st and math.isfinite(st[stage].val_bpb) else None

    post = st.get("post_quant")
    exact_loss = post.val_loss if post is not None and post.decimals >= 6 else None
    finite = any(bpb(s) is not None for s in ("post_quant", "sliding", "ttt"))
    return RunRecord(screen_id=screen_id, intervention=name, arm=arm, seed=run.seed, backend="torch",
                     config_hash=run.key(), status="ok" if finite else "diverged",
                     error=None if finite else "final val_bpb is not finite", val_bpb=bpb("pre_quant"),
                     post_quant_val_bpb=bpb("post_quant"), post_quant_val_loss=exact_loss,
                     sliding_val_bpb=bpb("sliding"), ttt_val_bpb=bpb("ttt"), executor="import",
                     config={**run.config, "log_path": str(run.path),
                             "formats": {s: v.format for s, v in st.items()}})


def import_screen(folder: str | Path, *, control: Mapping[str, str] | None = None, control_log: Path | None = None,
                  screen_id: str | None = None,
                  alpha: float = 0.01, margin_bpb: float = 0.0, correction: str = "holm",
                  metric: str = "final_val_bpb", effect_bpb: float | None = None) -> tuple[ScreenPlan, list]:
    """(ScreenPlan, [RunRecord]) of the logs in ``folder``: arms by config, the control, seeds (see module doc).
    ``control_log``: the control is the arm of this log file (instead of ``control`` / the first log)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--import-logs {folder}: not a directory")
    runs = [r for p in sorted(folder.rglob("*")) if p.suffix in LOG_SUFFIXES and p.is_file()
            and p.name != "requirements.txt" for r in [read_log(p)] if r is not None]
    if not runs:
        raise DataFormatError(f"--import-logs {folder}: no log with a final score line (formats in "
                              "scripts/causal/core/log_formats.py)")
    arms: dict[str, list[ImportedRun]] = {}
    for r in runs:
        arms.setdefault(r.key(), []).append(r)
    if control:
        want = {k.lower(): str(v) for k, v in control.items()}
        hits = [k for k, rs in arms.items() if all(rs[0].config.get(a) == v for a, v in want.items())]
        if len(hits) != 1:
            raise ConfigError(f"--import-control {want}: matches {len(hits)} of the {len(arms)} arms; it must pick "
                              "exactly one (add a key that only the control has)")
        ctrl_key = hits[0]
    elif control_log is not None:
        hits = [r.key() for r in runs if r.path.resolve() == Path(control_log).resolve()]
        if not hits:
            raise ConfigError(f"control log {control_log} is not one of the finished logs in {folder}")
        ctrl_key = hits[0]
    else:
        ctrl_key = runs[0].key()
    if len(arms) < 2:
        raise DataFormatError(f"--import-logs {folder}: all {len(runs)} logs print the same config, so there is "
                              "no treatment to compare with a control")
    base = arms[ctrl_key][0].config
    names = {k: ("control" if k == ctrl_key else _arm_name(rs[0].config, base)) for k, rs in arms.items()}
    for k, rs in arms.items():
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            raise DataFormatError(f"--import-logs: arm {names[k]} has two logs of one seed "
                                  f"({sorted(str(r.path) for r in rs)}); keep one log per seed and arm")
    from scripts.causal.screen.registry import CALIBRATION

    treatments = tuple((names[k], {a: rs[0].config.get(a) for a in set(rs[0].config) | set(base)
                                   if rs[0].config.get(a) != base.get(a)}) for k, rs in arms.items() if k != ctrl_key)
    if effect_bpb is None:
        effect_bpb = _record_bar(runs, folder)
    seeds = tuple(sorted({r.seed for r in runs}))
    digest = hashlib.sha256(json.dumps(sorted((names[r.key()], r.seed, str(r.path)) for r in runs)).encode())
    sid = screen_id or f"import-{digest.hexdigest()[:10]}"
    plan = ScreenPlan(screen_id=sid, preset="import", backend="torch", seeds=seeds, treatments=treatments,
                      base_config=dict(base), alpha=float(alpha), margin_bpb=float(margin_bpb),
                      correction=correction, metric=metric, effect_bpb=effect_bpb, aa_mode="arm", configs={})
    assert not set(n for n, _ in treatments) & set(CALIBRATION)
    records = [_record(r, screen_id=sid, name=names[r.key()], arm="control" if r.key() == ctrl_key else "treatment")
               for r in runs]
    return plan, records


def _record_bar(runs: Sequence[ImportedRun], folder: Path) -> float:
    """The record bar (0.005 nats/token) in bpb, at the bytes per token the logs' exact (loss, bpb) lines give."""
    from scripts.causal.stats.effect import bytes_per_token_from_runs, record_bar_bpb

    rows = [{"post_quant_val_loss": sc.val_loss, "post_quant_val_bpb": sc.val_bpb} for r in runs
            for stage, sc in r.stages.items() if stage in ("pre_quant", "post_quant") and sc.decimals >= 6
            and sc.val_loss is not None]  # TTT/sliding may score a subset of the val docs
    try:
        return record_bar_bpb(bytes_per_token_from_runs(rows, rtol=1e-5, source=str(folder)))
    except DataFormatError as exc:
        raise ConfigError(f"{exc}; pass --effect-bpb") from None


def seeds_match(plan: ScreenPlan, records: Sequence[RunRecord]) -> dict[str, tuple[list[int], list[int]]]:
    """{treatment: (its seeds, control seeds)} for every treatment whose seeds differ from the control's."""
    by_arm: dict[str, set[int]] = {}
    for r in records:
        by_arm.setdefault(r.intervention, set()).add(r.seed)
    ctrl = by_arm.get("control", set())
    return {n: (sorted(s), sorted(ctrl)) for n, s in by_arm.items() if n != "control" and s != ctrl}


def _num(v: str | None):
    try:
        return float(v) if v is not None else None
    except ValueError:
        return {"true": True, "false": False}.get(str(v).lower(), v)


def experiment_rows(plan: ScreenPlan, records: Sequence[RunRecord]) -> list[dict]:
    """The imported runs as DAG interventional rows (``schema.ExperimentRow`` fields; val_bpb pre-quant, as the
    screen runner's rows; runs without a pre-quant line are left out). A treatment that differs
    from the control in exactly one config key the registry maps to a feature carries that feature, its value
    and the control's; any other treatment has feature None (it still counts as a run, not as a feature)."""
    from scripts.causal.screen.registry import treatment_feature

    diffs = dict(plan.treatments)
    rows = []
    for r in records:
        score = r.val_bpb  # as experiment_runner.experiment_rows: the pre-quant val_bpb of the run
        if r.status != "ok" or score is None:
            continue
        diff = diffs.get(r.intervention, {})
        feature = treatment_feature("override:", diff) if r.arm == "treatment" else None
        key = next(iter(diff)) if feature else None
        rows.append({"intervention": r.intervention, "feature": feature, "value": _num(diff[key]) if key else None,
                     "val_bpb": score, "seed": r.seed, "arm": r.arm,
                     "control_value": _num(plan.base_config.get(key)) if key else None})
    return rows


def gate(plan: ScreenPlan, records: Sequence[RunRecord], runs_path: Path) -> dict:
    """Paired gate (``analysis.analyze`` on runs.json) when every arm ran on the control's seeds, else Welch."""
    from scripts.causal.core.schema import read_json
    from scripts.causal.stats.analysis import analyze

    mismatch = seeds_match(plan, records)
    if not mismatch:
        payload = analyze(read_json(runs_path))
        payload["pairing"] = "paired by seed"
        return payload
    rows = [r.runs_row() for r in records]
    effect = float(plan.effect_bpb)
    why = "; ".join(f"{n} ran seeds {s}, the control {c}" for n, (s, c) in mismatch.items())
    family = [n for n, _ in plan.treatments]
    return welch_gate(rows, family=family, metric=plan.metric, alpha=plan.alpha, margin_bpb=plan.margin_bpb,
                      correction=plan.correction, effect_bpb=effect, why=why)


def import_main(args: argparse.Namespace) -> int:
    """``experiment_runner.py --import-logs DIR``: ledger rows, runs.json, the gate's result, DAG rows."""
    from scripts.causal.experiment_runner import write_runs_json
    from scripts.causal.screen.ledger import Ledger

    control = parse_key_values(args.import_control, "--import-control") if args.import_control else None
    plan, records = import_screen(args.import_logs, control=control, screen_id=args.screen_id, alpha=args.alpha,
                                  margin_bpb=args.margin_bpb, correction=args.correction,
                                  metric=args.metric or "final_val_bpb", effect_bpb=args.effect_bpb)
    with Ledger(args.ledger) as ledger:
        if ledger.get_screen(plan.screen_id) is not None and ledger.count_runs(plan.screen_id):
            raise ConfigError(f"screen {plan.screen_id!r} is already in {args.ledger}; pass a new --screen-id")
        ledger.register_screen(plan.screen_id, plan.preregistration(), git_commit=None)
        for rec in records:
            ledger.record_run(rec)
    out = Path(args.output) if args.output else RESULTS_DIR / plan.screen_id / "runs.json"
    runs_path = write_runs_json(out, plan, records)
    payload = gate(plan, records, runs_path)
    write_json(out.parent / "ablation_results.json", payload, schema_version=payload["schema_version"])
    write_json(out.parent / "experiment_rows.json", {"rows": experiment_rows(plan, records)})
    print(f"import {plan.screen_id}: {len(records)} runs, control + {len(plan.treatments)} arm(s), "
          f"{payload['pairing']} -> {out.parent}", file=sys.stderr)
    for row in payload["results"]:
        print(f"  {row['intervention']}: {row['decision']}: {row.get('message', '')}", file=sys.stderr)
    if payload["pairing"] == "unpaired":
        print(f"  {payload['pairing_note']}", file=sys.stderr)
    return 0
