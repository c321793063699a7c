"""Shared CLI plumbing: run a stage's main() so that pipeline errors print one line and exit 1.

A stage run as ``python scripts/causal/X.py`` first puts the repo root on sys.path::

    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

Usage in a stage module::

    def main(argv=None) -> int:
        parser = build_parser(); args = parser.parse_args(argv)
        return run_cli(lambda: _main(args), debug=args.debug)
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from scripts.causal.errors import CausalPipelineError


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run_cli(body: Callable[[], int | None], *, debug: bool = False, prog: str = "") -> int:
    """Call ``body``; turn a CausalPipelineError into one stderr line and exit code 1."""
    try:
        rc = body()
    except CausalPipelineError as exc:
        if debug:
            raise
        name = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "")
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if rc is None else int(rc)

