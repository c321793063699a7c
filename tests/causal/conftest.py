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


def synthetic_train_data(vocab: int = 128):
    """A learnable in-memory token stream (a noisy cycle over 64 ids) with one byte per token, as a
    train_gpt.TrainData. A small vocabulary keeps runs fast: MLX's CPU exp/tanh over the logits dominate a
    tiny model's step."""
    import numpy as np

    import train_gpt as tg

    rng = np.random.default_rng(0)

    def stream(n):
        base = (np.arange(n) * 7) % 64
        noise = rng.integers(0, 64, n)
        return np.where(rng.random(n) < 0.8, base, noise).astype(np.uint16)

    luts = (np.ones(vocab, dtype=np.int16), np.zeros(vocab, dtype=bool), np.zeros(vocab, dtype=bool))
    return tg.TrainData("synthetic", "synthetic.model", [stream(40_000)], stream(2_049), luts, vocab)


@pytest.fixture(scope="session")
def synthetic_data():
    return synthetic_train_data()


@pytest.fixture(scope="session")
def perturbed():
    """perturbed_torch_model, as a fixture (tests import nothing from conftest under --import-mode=importlib)."""
    return perturbed_torch_model


def perturbed_torch_model(cfg, seed: int = 3):
    """train_gpt.GPT with the keyed init, then every parameter moved off its start (N(0, 0.05), fixed generator)
    so that no gradient is trivially zero; in train mode. The parity tests copy it into MLX by name."""
    import torch

    import train_gpt as tg

    model = tg.GPT.from_config(cfg)
    tg.init_weights(model, seed)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.train()



@pytest.fixture(scope="session")
def load_bench():
    """A loader of bench/<name>.py as module ``name`` (bench scripts are not a package)."""
    import importlib.util
    import sys

    def load(name: str):
        if name not in sys.modules:
            path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load
