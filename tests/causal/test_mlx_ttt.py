"""Score-first TTT in train_gpt_mlx.py: the twin adapts (full weights or LoRA) as train_gpt.eval_ttt does, gives
torch's bpb on the same weights, and no target's score depends on itself or on later tokens."""
from __future__ import annotations

import math

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")

import torch  # noqa: E402

import train_gpt as tg  # noqa: E402
import train_gpt_mlx as tm  # noqa: E402


def _cfg(**overrides):
    return tg.preset_config("tiny", val_batch_size=2048, vocab_size=128, seed=7, **overrides)


def _pair(perturbed, cfg, data):
    """The same perturbed weights in both backends, and each backend's view of the val stream."""
    tmodel = perturbed(cfg)
    mmodel = tm.GPT(cfg)
    tm.load_flat_params(mmodel, tm.params_from_torch(dict(tmodel.named_parameters())))
    ctx = tg.make_eval_context(tg.trim_val_tokens(data.val_tokens, cfg.train_seq_len), data.luts, torch.device("cpu"))
    return tmodel, mmodel, ctx, tm.EvalSet(data.val_tokens, data.luts, cfg.train_seq_len)


def test_successive_normal_draws_follow_one_torch_generator():
    gen = torch.Generator().manual_seed(11)
    sizes = [512, 40, 32, 17]  # 40 and 17 are not multiples of 16: torch redraws their tails
    expected = [torch.randn(n, generator=gen).numpy() for n in sizes]
    for got, want in zip(tm.torch_normal_draws(11, sizes), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)  # within float32 rounding (module docstring)


@pytest.mark.parametrize("mode,lr", [("full", 0.05), ("lora", 0.5)])
def test_ttt_gives_torch_bpb_on_the_same_weights(perturbed, synthetic_data, mode, lr):
    cfg = _cfg(ttt=mode, ttt_chunk_tokens=512, eval_stride=32, ttt_lr=lr, ttt_epochs=2)
    tmodel, mmodel, ctx, ev = _pair(perturbed, cfg, synthetic_data)
    t_loss, t_bpb = tg.eval_ttt(cfg, tmodel, ctx)
    m_loss, m_bpb = tm.eval_ttt(cfg, mmodel, ev)
    plain = tm.eval_sliding(cfg, mmodel, ev)[1]
    assert abs(t_bpb - plain) > 1e-3  # the adaptation moved the score, so the comparison is not vacuous
    assert m_bpb == pytest.approx(t_bpb, rel=1e-5) and m_loss == pytest.approx(t_loss, rel=1e-5)


def _fingerprint(model, x, y):
    """Stands in for the NLL: a fixed random projection of the whole predictive distribution, ignoring y."""
    h = tm.rms_norm(model.hidden(x)).reshape(-1, model.cfg.model_dim)
    weights = mx.array(np.random.default_rng(0).standard_normal(model.cfg.vocab_size).astype(np.float32))
    return tm.nn.log_softmax(model.logits(h), axis=-1) @ weights


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ttt_scores_depend_on_no_target_itself_nor_on_later_tokens(perturbed, synthetic_data, mode):
    cfg = _cfg(ttt=mode, ttt_chunk_tokens=512, eval_stride=16, ttt_lr=0.05 if mode == "full" else 0.5)
    _, model, _, ev = _pair(perturbed, cfg, synthetic_data)
    m = 700  # change token m, i.e. target m - 1, in the middle of the second chunk

    def run(stream):
        es = tm.EvalSet(stream, synthetic_data.luts, cfg.train_seq_len)
        out = np.full(stream.size - 1, np.nan)
        tm.eval_ttt(cfg, model, es, score_fn=_fingerprint, out=out)
        return out

    tokens = tm._stream(ev)
    changed = tokens.copy()
    changed[m] = (changed[m] + 1) % cfg.vocab_size
    a, b = run(tokens), run(changed)
    assert not np.isnan(a).any()
    np.testing.assert_array_equal(a[:m], b[:m])  # targets 0..m-1 (m-1 is the changed token itself): untouched
    assert not np.array_equal(a[m : m + 16], b[m : m + 16])  # the changed token is context from here on
    assert not np.array_equal(a[1600:], b[1600:])  # chunk 4, far past m: only adaptation on chunk 2 moves it


def test_train_reports_ttt_and_leaves_the_exported_model_alone(synthetic_data):
    cfg = _cfg(iterations=6, warmdown_iters=2, ttt="lora", ttt_chunk_tokens=512, eval_stride=32, ttt_lr=0.5)
    logs: list[str] = []
    m = tm.train(cfg, 3, data=synthetic_data, log=logs.append)
    t = tg.train(cfg, 3, data=synthetic_data)
    assert m.status == "ok" and math.isfinite(m.ttt_val_bpb) and m.ttt_val_bpb != m.sliding_val_bpb
    assert any(line.startswith("final_ttt val_loss:") for line in logs)
    assert tm.pick_metric(m) == ("ttt", m.ttt_val_bpb)
    assert abs(m.ttt_val_bpb - t.ttt_val_bpb) < 1e-3 and abs(m.sliding_val_bpb - t.sliding_val_bpb) < 1e-3


def test_ttt_leaves_the_model_it_adapts_unchanged(perturbed, synthetic_data):
    cfg = _cfg(ttt="full", ttt_chunk_tokens=512, ttt_lr=0.05)
    _, model, _, ev = _pair(perturbed, cfg, synthetic_data)
    before = {k: np.array(v) for k, v in tm.flat_params(model).items()}
    tm.eval_ttt(cfg, model, ev)
    tm.eval_ttt(cfg.with_overrides(ttt="lora"), model, ev)
    assert all(np.array_equal(before[k], np.array(v)) for k, v in tm.flat_params(model).items())
    assert all(isinstance(b.attn.c_q, tm.CastedLinear) for b in model.blocks)
