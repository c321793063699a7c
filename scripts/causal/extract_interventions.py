"""Leaderboard mining: record folders -> typed intervention matrix (results/interventions.json + .csv).

Usage::

    python scripts/causal/extract_interventions.py --input ../shared/records \
        --output results/interventions.json --csv results/interventions.csv --report results/interventions_coverage.md

Per record the sources are read in order of trust: log config dumps and env settings, code defaults,
submission JSON keys, README / JSON prose; features still unknown are inherited from the record that
introduced a base PR ("inherited from <record_id>"), then fall back to the naive baseline's values
("default: naive baseline"). Ablation rows are typed (feature, from -> to, metric, stack, seeds, source)
or classified as non-evidence (``core.schema.ABLATION_KINDS``). Bad input never stops the run: it becomes
a warning on that record. The logic lives in ``scripts/causal/extract/`` (``matrix``, ``record``,
``records``, ``features``, ``ablations``, ``row_types``, ``lineage``); this module is the CLI.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import MATRIX_SCHEMA_VERSION, write_json
from scripts.causal.extract.matrix import coverage, coverage_markdown, extract, source_kind, to_csv

__all__ = ["extract", "to_csv", "coverage", "coverage_markdown", "source_kind", "write_matrix", "main"]


def write_matrix(path: str | Path, payload: dict) -> Path:
    """Write the payload as results/interventions.json (schema ``MATRIX_SCHEMA_VERSION``)."""
    return write_json(path, payload, schema_version=MATRIX_SCHEMA_VERSION)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Mine leaderboard record folders into results/interventions.json (+ CSV).")
    p.add_argument("--input", action="append", required=True, metavar="DIR",
                   help="records/ folder, track folder or record folder (repeatable), e.g. ../shared/records")
    p.add_argument("--output", required=True, metavar="PATH", help="JSON output, e.g. results/interventions.json")
    p.add_argument("--csv", metavar="PATH", help="CSV twin for FCI, e.g. results/interventions.csv")
    p.add_argument("--report", metavar="PATH",
                   help="coverage report (.md or .json): feature sources and ablation row classes, "
                        "e.g. results/interventions_coverage.md")
    add_debug_flag(p)
    return p


def _main(args: argparse.Namespace) -> int:
    payload = extract([Path(p) for p in args.input])
    write_matrix(args.output, payload)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        Path(args.csv).write_text(to_csv(payload), encoding="utf-8")
    if args.report:
        cov = coverage(payload)
        if str(args.report).endswith(".json"):
            write_json(args.report, cov)
        else:
            Path(args.report).parent.mkdir(parents=True, exist_ok=True)
            Path(args.report).write_text(coverage_markdown(cov), encoding="utf-8")
    n_rows = sum(len(r["ablations"]) for r in payload["records"])
    n_ev = sum(a["kind"] == "ablation" for r in payload["records"] for a in r["ablations"])
    print(f"{len(payload['records'])} records, {n_rows} ablation rows ({n_ev} evidence), "
          f"{len(payload['warnings'])} warnings -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _main(args), debug=args.debug, prog="extract_interventions")


if __name__ == "__main__":
    sys.exit(main())
