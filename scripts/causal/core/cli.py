"""Shared CLI plumbing: run a stage's main() so that pipeline errors print one line and exit 1.

The package is installed (``pip install -e .``), so ``python scripts/causal/X.py`` and
``python -m scripts.causal.X`` both import it without touching sys.path.

Usage in a stage module::

    def main(argv=None) -> int:
        parser = build_parser(); args = parser.parse_args(argv)
        return run_cli(lambda: _main(args), debug=args.debug)
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from scripts.causal.core.errors import CausalPipelineError, ConfigError


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



def parse_key_values(items: str | Sequence[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` items (a list, or one comma-separated string) -> {key: raw value}; keys lower-cased.

    The values stay strings: the trainer's config coerces them to each field's type and rejects unknown keys.
    """
    parts = items.split(",") if isinstance(items, str) else [p for item in items for p in item.split(",")]
    out: dict[str, str] = {}
    for part in parts:
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ConfigError(f"{flag} {part.strip()!r}: expected KEY=VALUE, e.g. {flag} mlp_mult=3")
        out[key] = value.strip()
    return out


def parse_seeds(seeds: str | Sequence[int], flag: str = "--seeds") -> tuple[int, ...]:
    """Comma-separated (or a sequence of) distinct integer seeds -> a tuple, in the given order."""
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"{flag} {seeds!r}: expected comma-separated integers, e.g. 11,12,13,14,15") from None
    out = tuple(int(s) for s in seeds)
    if not out:
        raise ConfigError(f"{flag} is empty; give at least one seed (>= 3 pairs for a decision)")
    if len(set(out)) != len(out):
        raise ConfigError(f"{flag} {list(out)} has duplicates; each seed is one pair")
    return out
