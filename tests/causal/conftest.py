"""Shared pytest fixtures for the pipeline's tests (fixture data lives in tests/causal/data/)."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def fixtures_dir() -> Path:
    return DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared, busy CPU torch's default threads spin and run ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small offline corpus in the FineWeb layout: seeded synthetic text, BPE-1024 tokenizer, train+val shards.

    Returns ``scripts.causal.data.shards.DataPaths(data_path, tokenizer_path, vocab_size)`` (vocab_size is 1024);
    about 47K train and 9K val tokens, built in about a second. Use ``paths.overrides()`` for a config.
    """
    from scripts.causal.data.shards import ensure_corpus

    return ensure_corpus(tmp_path_factory.mktemp("tiny_corpus"), source="synthetic", n_bytes=300_000,
                         val_bytes=30_000, seed=0)
