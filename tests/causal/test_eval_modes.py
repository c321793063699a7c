"""Evaluation modes of train_gpt.py: sliding windows (same byte accounting, equal to plain at stride = window),
score-first TTT (no target's score depends on itself or on later tokens) and the pre-registered metric."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg


@pytest.fixture(scope="module")
def setup(tiny_corpus, one_torch_thread):
    """A tiny model trained 40 steps on the tiny corpus, and an eval context over its val split."""
    cfg = tg.preset_config("tiny", **tiny_corpus.overrides(), iterations=40, warmdown_iters=10)
    data = tg.load_train_data(cfg)
    model = tg.build_model(cfg, torch.device("cpu"))
    assert tg.train(cfg, 5, data=data, model=model).status == "ok"  # leaves the round-tripped weights in `model`
    ctx = tg.make_eval_context(tg.trim_val_tokens(data.val_tokens, cfg.train_seq_len), data.luts, torch.device("cpu"))
    return cfg, model, ctx, data


@pytest.mark.parametrize("n,window,stride", [(64, 64, 64), (640, 64, 64), (650, 64, 16), (300, 64, 7), (64, 64, 1)])
def test_sliding_plan_scores_every_target_once_with_the_longest_context(n, window, stride):
    plan = tg.sliding_window_plan(n, window, stride)
    scored = np.concatenate([np.arange(lo, hi) for _, lo, hi in plan])
    np.testing.assert_array_equal(scored, np.arange(n))  # each target once, in order
    starts = plan[:, 0]
    assert np.all((starts >= 0) & (starts + window <= n)) and np.all((plan[:, 1] >= starts) & (plan[:, 2] <= starts + window))
    for j in range(n):  # scored in the first window holding it: no window gives target j more context
        row = np.searchsorted(plan[:, 2], j, side="right")
        first_holding = starts[(starts <= j) & (starts + window > j)].min()
        assert starts[row] == first_holding
    if stride == window and n % window == 0:
        np.testing.assert_array_equal(plan, [(s, s, s + window) for s in range(0, n, window)])


def test_sliding_plan_rejects_impossible_shapes():
    with pytest.raises(ValueError, match=r"need 0 < stride \(0\) <= window \(64\) <= number of targets \(100\)"):
        tg.sliding_window_plan(100, 64, 0)
    with pytest.raises(ValueError, match="<= number of targets"):
        tg.sliding_window_plan(10, 64, 8)


def test_split_plan_cuts_rows_at_chunk_boundaries():
    plan = tg.sliding_window_plan(256, 64, 48)
    chunks = tg.split_plan(plan, tg.chunk_boundaries(256, 100))
    assert len(chunks) == 3
    for k, (lo, hi) in enumerate([(0, 100), (100, 200), (200, 256)]):
        assert chunks[k][:, 1].min() == lo and chunks[k][:, 2].max() == hi
    merged = np.concatenate([np.arange(a, b) for c in chunks for _, a, b in c])
    np.testing.assert_array_equal(merged, np.arange(256))


def test_byte_count_matches_a_hand_count(setup):
    _, _, ctx, data = setup
    base_bytes, lead, boundary = data.luts
    tokens = ctx.val_tokens.numpy()
    by_hand = sum(int(base_bytes[t]) + int(lead[t] and not boundary[p]) for p, t in zip(tokens[:-1], tokens[1:], strict=True))
    assert tg.stream_bytes(ctx) == by_hand == tg.count_target_bytes(tokens[:-1], tokens[1:], data.luts)


def test_sliding_equals_plain_when_stride_is_the_window(setup):
    cfg, model, ctx, _ = setup
    plain = tg.eval_val(cfg, model, ctx)
    sliding = tg.eval_sliding(cfg.with_overrides(eval_stride=cfg.train_seq_len), model, ctx)
    # equal up to eval_val's fp32 per-batch mean (sliding sums per-token losses in fp64): measured 1.4e-8 relative
    assert sliding[1] == pytest.approx(plain[1], rel=1e-7, abs=0) and sliding[0] == pytest.approx(plain[0], rel=1e-7)
    shorter = tg.eval_sliding(cfg.with_overrides(eval_stride=16), model, ctx)
    assert shorter[1] < plain[1]  # more context per scored token helps a trained model


def test_per_target_scores_of_plain_windows_match_eval_val(setup):
    cfg, model, ctx, _ = setup
    n = ctx.val_tokens.numel() - 1
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    plan = tg.sliding_window_plan(n, cfg.train_seq_len, cfg.train_seq_len)
    total = tg.score_plan(model, ctx.val_tokens, plan, cfg.train_seq_len, 8, out=out)
    assert not torch.isnan(out).any() and total == pytest.approx(float(out.sum()), rel=1e-12)
    assert total / n == pytest.approx(tg.eval_val(cfg, model, ctx)[0], rel=1e-7)


def _fingerprint(model, x, y):
    """Stands in for the NLL: a fixed random projection of the whole predictive distribution, ignoring y."""
    logp = F.log_softmax(model._logits(model.final_norm(model.hidden(x))).float(), dim=-1)
    weights = torch.randn(logp.size(-1), generator=torch.Generator().manual_seed(0))
    return logp @ weights


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ttt_scores_depend_on_no_target_itself_nor_on_later_tokens(setup, mode):
    cfg, model, ctx, _ = setup
    window = cfg.train_seq_len
    tokens = ctx.val_tokens[: 8 * window + 1].clone()  # 512 targets, 4 chunks of 128
    ttt = cfg.with_overrides(ttt=mode, ttt_chunk_tokens=128, eval_stride=16, ttt_lr=0.05 if mode == "full" else 0.5)
    m = 200  # change token m, i.e. target m - 1, in the middle of the second chunk

    def run(toks):
        c = tg.EvalContext(toks, ctx.base_bytes, ctx.has_leading_space, ctx.is_boundary)
        out = torch.full((toks.numel() - 1,), float("nan"), dtype=torch.float64)
        tg.eval_ttt(ttt, model, c, score_fn=_fingerprint, out=out)
        return out

    changed = tokens.clone()
    changed[m] = (changed[m] + 1) % cfg.vocab_size
    a, b = run(tokens), run(changed)
    assert not torch.isnan(a).any()
    assert torch.equal(a[:m], b[:m])  # targets 0..m-1 (target m-1 is the changed token itself): untouched
    assert not torch.equal(a[m : m + 16], b[m : m + 16])  # the changed token is context from here on
    # chunk 4's windows start at or after target 384 - 48, far past m: only adaptation on chunk 2 can move them
    assert not torch.equal(a[400:], b[400:])


def test_ttt_adapts_and_leaves_the_exported_model_alone(setup):
    cfg, model, ctx, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = tg.eval_sliding(cfg.with_overrides(eval_stride=32), model, ctx)
    lora = tg.eval_ttt(cfg.with_overrides(ttt="lora", ttt_chunk_tokens=1024, eval_stride=32, ttt_lr=0.5), model, ctx)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    assert lora[1] != plain[1] and math.isfinite(lora[1])


def _result(**config):
    return tg.RunResult(config=config, config_hash="h", seed=0, backend="torch", versions={}, val_bpb=1.5,
                        post_quant_val_bpb=1.52, sliding_val_bpb=1.49, ttt_val_bpb=1.47)


def test_pick_metric_defaults_to_the_last_stage_that_is_on():
    assert tg.pick_metric(_result()) == ("post_quant", 1.52)  # a config from before these knobs
    assert tg.pick_metric(_result(eval_stride=0, ttt="off")) == ("post_quant", 1.52)
    assert tg.pick_metric(_result(eval_stride=64, ttt="off")) == ("sliding", 1.49)
    assert tg.pick_metric(_result(eval_stride=64, ttt="lora")) == ("ttt", 1.47)
    assert tg.pick_metric(_result(eval_stride=64, metric="pre_quant")) == ("pre_quant", 1.5)
    assert tg.pick_metric(_result(eval_stride=64), "post_quant") == ("post_quant", 1.52)
    stage, value = tg.pick_metric({"config": {"ttt": "full"}, "ttt_val_bpb": None})  # a failed run's JSON
    assert stage == "ttt" and math.isnan(value)
    with pytest.raises(tg.ConfigValueError, match="metric='final' is not supported"):
        tg.pick_metric(_result(), "final")


def test_eval_knobs_are_validated():
    with pytest.raises(tg.ConfigValueError, match=r"eval_stride=65 must lie in \[0, train_seq_len=64\]"):
        tg.preset_config("tiny", eval_stride=65)
    with pytest.raises(tg.ConfigValueError, match="metric='sliding' names a stage that is off"):
        tg.preset_config("tiny", metric="sliding")
    with pytest.raises(tg.ConfigValueError, match="ttt_chunk_tokens=32 must be >= train_seq_len=64"):
        tg.preset_config("tiny", ttt="full", ttt_chunk_tokens=32)
    assert tg.config_hash(tg.preset_config("tiny", metric="pre_quant")) == tg.config_hash(tg.preset_config("tiny"))
    long = tg.preset_config("tiny", train_seq_len=65_536, train_batch_tokens=65_536,
                            mlx_max_microbatch_tokens=65_536)  # TTT off: chunk size unchecked
    assert long.ttt == "off" and long.ttt_chunk_tokens < long.train_seq_len
