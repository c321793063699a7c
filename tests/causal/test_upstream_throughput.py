"""Tests for bench/upstream_throughput.py: upstream's config is ours field by field, ratios and the table, and one
real step of our torch trainer and of upstream's on the same shards (skipped where ../shared/upstream is absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO.parent / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not (UPSTREAM / "train_gpt.py").is_file(), reason=f"no {UPSTREAM}/train_gpt.py")


@pytest.fixture(scope="module")
def ub(load_bench):
    return load_bench("upstream_throughput")


def test_ratios_are_ours_over_upstream_and_failures_are_rows(ub):
    rows = ub.add_ratios([
        {"impl": "ours-torch", "tokens_per_s": 6000.0, "step_ms": 341.3, "cpu_step_ms": 200.0, "load": 3.5},
        {"impl": "upstream-torch", "tokens_per_s": 4000.0, "step_ms": 512.0, "cpu_step_ms": 250.0, "load": 3.5},
        {"impl": "ours-mlx", "tokens_per_s": 500.0, "step_ms": 4096.0, "cpu_step_ms": 2600.0, "load": 3.9},
        {"impl": "upstream-mlx", "error": "RuntimeError: boom", "load": 3.7},
    ])
    assert rows[0]["ratio"] == pytest.approx(1.5) and rows[0]["cpu_ratio"] == pytest.approx(1.25)
    assert rows[1]["ratio"] is None and rows[2]["ratio"] is None  # a reference row; a missing counterpart
    table = ub.format_table(rows).splitlines()
    assert len(table) == 6
    assert "| **1.50x** | 1.25x |" in table[2] and "| 1 (reference) | 1 |" in table[3]
    assert "| - | - |" in table[4] and "does not run: RuntimeError: boom" in table[5]


@needs_upstream
def test_upstream_hyperparameters_take_our_fast_config(ub):
    import train_gpt as tg

    cfg = tg.preset_config("fast")
    ut = ub.load_by_path("upstream_train_gpt", UPSTREAM / "train_gpt.py")
    a = ub.upstream_args(ut, cfg)
    shape = (a.num_layers, a.model_dim, a.num_heads, a.num_kv_heads, a.mlp_mult, a.vocab_size)
    assert shape == (4, 128, 4, 2, 2, 1024)
    assert (a.train_seq_len, a.train_batch_tokens, a.grad_accum_steps) == (128, 2048, 1)
    assert a.train_files == cfg.train_files and a.matrix_lr == cfg.matrix_lr == 0.04


@needs_upstream
def test_ours_and_upstream_torch_take_one_step_on_the_same_shards(ub, tiny_corpus, one_torch_thread):
    import train_gpt as tg

    cfg = tg.preset_config("fast", **tiny_corpus.overrides())
    rows = ub.run(["ours-torch", "upstream-torch"], steps=1, warmup=0, upstream_dir=UPSTREAM, cfg=cfg)
    assert [r.get("error") for r in rows] == [None, None]
    for r in rows:
        assert r["tokens_per_s"] == pytest.approx(2048 / (r["step_ms"] / 1000))
    assert rows[0]["ratio"] == pytest.approx(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"])
