"""Measure how well each proxy preset's screen verdicts transfer to H100, on the leaderboard's own ablation rows.

Builds the calibration set (``transfer.calibration_set``: each verified single-change row of the evidence table,
``evidence/verified``, that a registry intervention makes exactly, with its H100 delta and the quote it rests on;
every other entry listed with the reason), screens its interventions at
each proxy preset with paired seeds (``transfer.proxy``: the same plan, ledger and gate as any screen; resumable),
and scores the agreement per transfer class (``transfer.agreement``: sign agreement on |H100 delta| >= 0.002,
Spearman, slope). Writes, under ``--output-dir``:

- ``transfer_calibration.json`` (schema 2): the set (each row with its quote and file:line), the entries left out,
  per preset its refusals and scores, and the preset that transfers best on the architecture class;
- ``transfer_<preset>.json``: ``{"classes": {...}}`` per class and per intervention, the ``--transfer`` input of
  select_interventions.py / estimate_dag.py and what the decision-gate report quotes;
- ``transfer_calibration.md``, and ``<preset>/runs.json`` + ``ablation_results.json`` per preset.

    python scripts/causal/transfer_calibration.py --presets fast,small_long@3 --seeds 1,2,3,4,5 --threads 2 \\
        --output-dir results/transfer_calibration
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.cli import add_debug_flag, parse_key_values, parse_seeds, run_cli
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import EVIDENCE_DIR
from scripts.causal.core.provenance import git_commit
from scripts.causal.core.schema import write_json
from scripts.causal.evidence.table import load_table, table_sha256
from scripts.causal.transfer.agreement import MIN_ROWS, score
from scripts.causal.transfer.calibration_set import build_calibration_set
from scripts.causal.transfer.proxy import screen_preset
from scripts.causal.transfer.render import render

SCHEMA_VERSION = 2  # 2: the set comes from the verified evidence table (rows carry quote, source, hardware)
DEFAULT_PRESETS = ("fast", "small_long")


def tokens_per_param(preset: str, overrides: Mapping[str, Any] | None = None) -> float:
    """Training tokens per model parameter of a preset (expected steps x batch tokens / parameters)."""
    import train_gpt as tg
    from scripts.causal.screen.plan import base_config
    from scripts.causal.screen.registry import expected_steps

    cfg = base_config(preset, dict(overrides or {}))
    n = sum(p.numel() for p in tg.GPT.from_config(cfg).parameters())
    return expected_steps(cfg) * cfg.train_batch_tokens / n


def registry_classes_of(names: Sequence[str]) -> dict[str, str]:
    """Intervention -> its registry transfer class (the class the report and the ranking look up)."""
    from scripts.causal.transfer.calibration_set import registry_classes

    reg = registry_classes()
    return {n: reg[n] for n in names}


def _display(path: str | Path) -> str:
    """A path as the payload records it: relative to the repository when inside it."""
    from scripts.causal.core.paths import REPO_ROOT

    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def transfer_json(block_scores: dict[str, Any], classes: dict[str, str], preset: str) -> dict[str, Any]:
    """The ``--transfer`` input: each class's agreement, and each intervention's (its class's)."""
    keys = ("agreement", "k_agree", "n_decisive", "agreement_ci", "ceiling_k", "verdict")
    per_class = {c: {k: b[k] for k in keys} for c, b in block_scores.items()}
    per_name = {name: {**per_class[c], "class": c} for name, c in classes.items() if c in per_class}
    return {"preset": preset, "classes": {**per_class, **per_name}}


def choose(presets: dict[str, dict[str, Any]], klass: str = "architecture") -> tuple[str | None, str]:
    """(preset, why): the preset with the highest sign agreement on ``klass`` (ties: higher overall Spearman), or
    None with the reason when no preset has enough decisive rows of that class to choose on."""
    def key(item: tuple[str, dict]) -> tuple[float, float]:
        b = item[1]["score"]["classes"].get(klass) or {}
        rho = item[1]["score"]["overall"].get("spearman")
        return (b.get("agreement") if b.get("agreement") is not None else -1.0, rho if rho is not None else -2.0)
    measured = {p: v for p, v in presets.items()
                if (v["score"]["classes"].get(klass) or {}).get("verdict") in ("good", "poor")}
    if not measured:
        n = max(((v["score"]["classes"].get(klass) or {}).get("n_decisive") or 0 for v in presets.values()), default=0)
        return None, (f"no preset can be chosen on the {klass} class: {n} decisive verified row(s) at 8xH100 "
                      f"(at least {MIN_ROWS} needed)")
    best = sorted(measured.items(), key=key, reverse=True)[0][0]
    b = presets[best]["score"]["classes"][klass]
    return best, f"highest {klass} sign agreement: {b['k_agree']}/{b['n_decisive']}"


def preset_seeds(spec: str, seeds: Sequence[int]) -> tuple[str, tuple[int, ...]]:
    """``NAME`` -> (NAME, seeds); ``NAME@N`` -> (NAME, the first N seeds): a costlier proxy on fewer seeds."""
    name, _, n = spec.partition("@")
    if not n:
        return name, tuple(seeds)
    if not n.isdigit() or not 3 <= int(n) <= len(seeds):
        raise ConfigError(f"--presets {spec!r}: N in NAME@N must be an integer from 3 to {len(seeds)} (the seeds given)")
    return name, tuple(seeds)[: int(n)]


def run(*, evidence_dir: str | Path = EVIDENCE_DIR, presets: Sequence[str] = DEFAULT_PRESETS,
        seeds: Sequence[int] | str = "1,2,3,4,5", output_dir: str | Path = "results/transfer_calibration",
        threads: int | None = None, backend: str = "torch", executor: str = "inprocess",
        ray_address: str | None = None, progress: bool = True, overrides: Mapping[str, Any] | None = None,
        reuse_only: Sequence[str] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the set, screen it at each preset, score and write everything (see the module docstring).

    ``overrides``: config values for every arm of every preset (e.g. another corpus's data_path)."""
    out = Path(output_dir)
    table = load_table(evidence_dir)
    items, left_out = build_calibration_set(table)
    if not items:
        raise DataFormatError(f"{evidence_dir}: no verified single-change row is made exactly by a registry "
                              "intervention")
    names = list(dict.fromkeys(it.intervention for it in items))
    classes = dict(registry_classes_of(names))
    seeds_t = parse_seeds(seeds)
    log(f"calibration set: {len(items)} verified rows, {len(names)} interventions; {len(left_out)} entries left out")
    results: dict[str, dict[str, Any]] = {}
    for spec in presets:
        preset, seeds_p = preset_seeds(spec, seeds_t)
        ablation, refused = screen_preset(preset, names, seeds=seeds_p, out_dir=out / preset,
                                          ledger_path=out / "ledger.sqlite", threads=threads, backend=backend,
                                          executor=executor, ray_address=ray_address, progress=progress,
                                          overrides=overrides, reuse_only=preset in reuse_only, log=log)
        sc = score(items, {r["intervention"]: r for r in ablation["results"]})
        results[preset] = {"tokens_per_param": tokens_per_param(preset, overrides), "seeds": list(seeds_p),
                           "refused": refused, "score": sc,
                           "ablation_results": f"{preset}/ablation_results.json"}
        write_json(out / f"transfer_{preset}.json", transfer_json(sc["classes"], classes, preset))
    payload = {"evidence": _display(evidence_dir), "evidence_sha256": table_sha256(evidence_dir),
               "git_commit": git_commit(), "seeds": list(seeds_t), "backend": backend,
               "overrides": dict(overrides or {}),
               "calibration_set": [dataclasses.asdict(i) for i in items], "left_out": left_out,
               "presets": results}
    payload["chosen"], payload["chosen_reason"] = choose(results)
    write_json(out / "transfer_calibration.json", payload, schema_version=SCHEMA_VERSION)
    (out / "transfer_calibration.md").write_text(render(payload), encoding="utf-8")
    log(f"wrote {out / 'transfer_calibration.json'} and {out / 'transfer_calibration.md'}")
    return payload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--evidence", default=str(EVIDENCE_DIR.relative_to(EVIDENCE_DIR.parents[1])),
                   help="the verified evidence table's folder, e.g. evidence/verified")
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help="comma-separated proxy presets to compare; NAME@N runs one on the first N seeds only, "
                        "e.g. fast,small_long@3")
    p.add_argument("--seeds", default="1,2,3,4,5", help="paired seeds per arm, comma-separated, e.g. 1,2,3,4,5")
    p.add_argument("--output-dir", default="results/transfer_calibration", help="where to write (resumable)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config value for every arm, repeatable (e.g. --set data_path=./data/datasets/fineweb10B_sp1024)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (pin it, e.g. 2)")
    p.add_argument("--backend", default="torch", help="torch or mlx")
    p.add_argument("--executor", default="inprocess", help="inprocess, subprocess or ray")
    p.add_argument("--ray-address", default=None, help="with --executor ray: 'auto' joins `ray start`")
    p.add_argument("--reuse-only", default="", help="presets that train nothing new: interventions without committed "
                                                   "runs (every seed, same config) are refused and listed, e.g. screen")
    p.add_argument("--no-progress", action="store_true", help="plain lines only")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    if not presets:
        raise SystemExit("--presets: name at least one preset, e.g. fast")

    def body() -> None:
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads {args.threads} must be >= 1")
        run(evidence_dir=args.evidence, presets=presets, seeds=args.seeds, output_dir=args.output_dir,
            threads=args.threads, backend=args.backend, executor=args.executor, ray_address=args.ray_address,
            progress=not args.no_progress, overrides=parse_key_values(args.sets, "--set"),
            reuse_only=[s.strip() for s in args.reuse_only.split(",") if s.strip()])

    return run_cli(body, debug=args.debug, prog="transfer_calibration.py")


if __name__ == "__main__":
    raise SystemExit(main())
