"""Download the real challenge FineWeb shards (sp1024 by default) from the Hugging Face Hub.

Behaves like upstream's ``data/cached_challenge_fineweb.py``: the dataset repo ``willdepueoai/parameter-golf``
(env ``MATCHED_FINEWEB_REPO_ID``), the export rooted at ``datasets/`` (env ``MATCHED_FINEWEB_REMOTE_ROOT_PREFIX``),
manifest-driven shard counts, the full validation split always, the first ``--train-shards N`` (default 80)
train shards, and the tokenizer files, written to::

    data/datasets/fineweb10B_sp1024/fineweb_{train,val}_*.bin
    data/tokenizers/fineweb_1024_bpe.{model,vocab}

``--variant sp4096`` / ``sp8192`` default to ``kevclark/parameter-golf``, where the leaderboard records that
use those vocabularies got them. Existing files are kept. Needs ``pip install huggingface_hub`` (imported only when downloading).
``--dry-run`` prints the (remote, local) plan without touching the network.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import ConfigError, DataFormatError, StageError
from scripts.causal.core.paths import DATA_DIR

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
#: Where the leaderboard records got the larger-vocabulary variants (their READMEs: MATCHED_FINEWEB_REPO_ID).
VARIANT_REPO_IDS = {"sp4096": "kevclark/parameter-golf", "sp8192": "kevclark/parameter-golf"}
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_VARIANT = "sp1024"
DEFAULT_TRAIN_SHARDS = 80
HF_INSTALL_HINT = "pip install huggingface_hub  (or: pip install -e '.[fineweb]')"


@dataclass(frozen=True)
class FilePair:
    """One file to fetch: its path inside the HF dataset repo and where it goes locally."""

    remote: str
    local: Path


def dataset_dir_for_variant(variant: str) -> str:
    """``sp1024`` -> ``fineweb10B_sp1024``; also ``byte260`` and ``char``, as upstream."""
    if variant in ("byte260", "char"):
        return f"fineweb10B_{variant}"
    if variant.startswith("sp") and variant[2:].isdigit():
        return f"fineweb10B_{variant}"
    raise ConfigError(f"unsupported --variant {variant!r}; expected sp<VOCAB_SIZE> (e.g. sp1024), byte260 or char")


def local_path_for_remote(remote: str, *, data_dir: str | Path, remote_root: str = DEFAULT_REMOTE_ROOT) -> Path:
    """Strip the export root; ``datasets/...`` and ``tokenizers/...`` map under ``data_dir``, the rest to its top."""
    parts = PurePosixPath(remote).parts
    if remote_root and parts[:1] == (remote_root,):
        parts = parts[1:]
    return Path(data_dir).joinpath(*parts)


def _default_tokenizer_files(variant: str) -> list[str]:
    if variant.startswith("sp"):
        vocab = variant[2:]
        return [f"tokenizers/fineweb_{vocab}_bpe.model", f"tokenizers/fineweb_{vocab}_bpe.vocab"]
    if variant == "byte260":
        return ["tokenizers/fineweb_pure_byte_260.json"]
    return ["tokenizers/fineweb_char.json"]


def _manifest_entries(manifest: Mapping, dataset_dir: str) -> tuple[int, int, list[str]]:
    """(max train shards, val shards, tokenizer artifact paths) for ``dataset_dir`` from upstream's manifest."""
    dataset = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset_dir), None)
    if dataset is None:
        names = [d.get("name") for d in manifest.get("datasets", [])]
        raise DataFormatError(f"manifest.json: dataset {dataset_dir!r} not listed (has {names}); pick another --variant")
    stats = dataset.get("stats") or {}
    try:
        max_train, val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"manifest.json: dataset {dataset_dir!r} lacks stats.files_train/files_val") from exc
    tok_name = dataset.get("tokenizer_name")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tok_name), None)
    if tok is None:
        raise DataFormatError(f"manifest.json: tokenizer {tok_name!r} of dataset {dataset_dir!r} not listed")
    artifacts = [str(tok[k]) for k in ("model_path", "vocab_path", "path") if tok.get(k)]
    if not artifacts:
        raise DataFormatError(f"manifest.json: tokenizer {tok_name!r} has no model_path/vocab_path/path")
    return max_train, val, artifacts


def plan_downloads(*, variant: str = DEFAULT_VARIANT, train_shards: int = DEFAULT_TRAIN_SHARDS,
                   data_dir: str | Path = DATA_DIR, remote_root: str = DEFAULT_REMOTE_ROOT,
                   manifest: Mapping | None = None, with_docs: bool = False) -> list[FilePair]:
    """The (remote, local) files to fetch, in order: docs (optional), all val shards, N train shards, tokenizer.

    With ``manifest`` (upstream's ``manifest.json``) the val shard count, the train shard limit and the
    tokenizer files come from it; without, the sp1024 layout is assumed (1 val shard, .model + .vocab).
    """
    if train_shards < 0:
        raise ConfigError(f"--train-shards must be non-negative, got {train_shards}")
    dataset_dir = dataset_dir_for_variant(variant)
    if manifest is not None:
        max_train, val_shards, tokenizer_files = _manifest_entries(manifest, dataset_dir)
        if train_shards > max_train:
            raise ConfigError(f"--train-shards {train_shards}: {variant} only has {max_train} training shards "
                              "in the published export; ask for at most that")
    else:
        val_shards, tokenizer_files = 1, _default_tokenizer_files(variant)
    root = f"{remote_root}/" if remote_root else ""
    remotes: list[str] = []
    if with_docs:
        remotes += [f"{root}docs_selected.jsonl", f"{root}docs_selected.source_manifest.json"]
    prefix = f"{root}datasets/{dataset_dir}"
    remotes += [f"{prefix}/fineweb_val_{i:06d}.bin" for i in range(val_shards)]
    remotes += [f"{prefix}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    remotes += [f"{root}{path}" for path in tokenizer_files]
    return [FilePair(r, local_path_for_remote(r, data_dir=data_dir, remote_root=remote_root)) for r in remotes]


def _hf_download_fn() -> Callable[..., str]:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise StageError(f"downloading FineWeb needs huggingface_hub, which is not installed; run: {HF_INSTALL_HINT}") \
            from exc
    return hf_hub_download


def fetch(pair: FilePair, *, repo_id: str, download: Callable[..., str] | None = None) -> bool:
    """Materialise one file from the HF cache (hard link, else copy). Returns False if it was already there."""
    if pair.local.exists():
        return False
    if pair.local.is_symlink():
        pair.local.unlink()
    download = download or _hf_download_fn()
    remote = PurePosixPath(pair.remote)
    subfolder = str(remote.parent) if str(remote.parent) != "." else None
    try:
        cached = Path(download(repo_id=repo_id, filename=remote.name, subfolder=subfolder, repo_type="dataset"))
    except Exception as exc:  # huggingface_hub raises many network/HTTP error types
        raise StageError(f"could not download {pair.remote} from the HF dataset {repo_id} ({type(exc).__name__}: "
                         f"{exc}); check the network and the repo id (MATCHED_FINEWEB_REPO_ID)") from exc
    source = cached.resolve(strict=True)
    pair.local.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, pair.local)
    except OSError:
        shutil.copy2(source, pair.local)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="download_fineweb.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("train_shards_positional", nargs="?", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-shards", type=int, default=DEFAULT_TRAIN_SHARDS,
                        help=f"training shards to fetch (100M tokens each), e.g. 8; default {DEFAULT_TRAIN_SHARDS}")
    parser.add_argument("--variant", default=DEFAULT_VARIANT,
                        help="tokenizer family, e.g. sp1024 (default), sp4096 or sp8192")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="local data folder, e.g. data")
    parser.add_argument("--repo-id", default=None,
                        help=f"HF dataset repo, e.g. {DEFAULT_REPO_ID} (default: $MATCHED_FINEWEB_REPO_ID, else "
                             f"{VARIANT_REPO_IDS['sp8192']} for sp4096/sp8192, else {DEFAULT_REPO_ID})")
    parser.add_argument("--remote-root", default=None,
                        help="export root inside the repo, e.g. datasets (default: $MATCHED_FINEWEB_REMOTE_ROOT_PREFIX)")
    parser.add_argument("--skip-manifest", action="store_true", help="use a local manifest.json, do not fetch it")
    parser.add_argument("--with-docs", action="store_true", help="also fetch docs_selected.jsonl and its sidecar")
    parser.add_argument("--dry-run", action="store_true", help="print the (remote -> local) plan and exit")
    add_debug_flag(parser)
    return parser


def _load_local_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the FineWeb manifest ({exc}); delete it and rerun") from exc


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env

    def body() -> int:
        repo_id = (args.repo_id or env.get("MATCHED_FINEWEB_REPO_ID")
                   or VARIANT_REPO_IDS.get(args.variant, DEFAULT_REPO_ID))
        remote_root = args.remote_root if args.remote_root is not None else \
            env.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT)
        train_shards = args.train_shards_positional if args.train_shards_positional is not None else args.train_shards
        manifest_remote = f"{remote_root}/manifest.json" if remote_root else "manifest.json"
        manifest_pair = FilePair(manifest_remote, local_path_for_remote(manifest_remote, data_dir=args.data_dir,
                                                                        remote_root=remote_root))
        manifest = None
        if args.dry_run:
            if manifest_pair.local.is_file():
                manifest = _load_local_manifest(manifest_pair.local)
        else:
            if not manifest_pair.local.is_file():
                if args.skip_manifest:
                    raise DataFormatError(f"{manifest_pair.local}: --skip-manifest given but no local manifest.json")
                fetch(manifest_pair, repo_id=repo_id)
            manifest = _load_local_manifest(manifest_pair.local)
        plan = plan_downloads(variant=args.variant, train_shards=train_shards, data_dir=args.data_dir,
                              remote_root=remote_root, manifest=manifest, with_docs=args.with_docs)
        if args.dry_run:
            for pair in plan:
                print(f"{repo_id}:{pair.remote} -> {pair.local}")
            return 0
        fetched = sum(fetch(pair, repo_id=repo_id) for pair in plan)
        print(f"fetched:{fetched} kept:{len(plan) - fetched} files into {args.data_dir}")
        return 0

    return run_cli(body, debug=args.debug, prog="download_fineweb.py")


if __name__ == "__main__":
    sys.exit(main())
