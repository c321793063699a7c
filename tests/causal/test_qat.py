"""QAT in train_gpt.py: straight-through fake quantization in the export's format that really switches on at its
start step, under torch.compile too (a class-attribute flag would be constant-folded at trace time)."""
from __future__ import annotations

import copy
import shutil

import pytest
import torch

import train_gpt as tg


def _tiny_qat_model(**overrides):
    cfg = tg.preset_config("tiny", quant_bits=6, quant_keep_float_max_numel=0, qat=True, **overrides)
    model = tg.GPT.from_config(cfg)
    tg.init_weights(model, 0)
    with torch.no_grad():  # zero-init projections would quantize to themselves; give every matrix some values
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
    return cfg, model


def _grads(model, forward, x, y) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    forward(x, y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def test_fake_quantize_matches_the_export_quantizer():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    for bits in (8, 6, 5, 4):
        q, s = tg.quantize_rows(w.numpy(), bits)  # the export's plain clip is the row max here (32 values)
        torch.testing.assert_close(tg.fake_quantize_rows(w, bits), torch.from_numpy(tg.dequantize_rows(q, s)),
                                   rtol=0, atol=1e-6)


def test_configure_qat_follows_the_export_spec_and_can_be_turned_off():
    cfg, model = _tiny_qat_model(quant_bits_mlp=5)
    alphas = tg.configure_qat(model, tg.ExportSpec.from_config(cfg), True)
    assert len(alphas) == 12 and all(float(a) == 0.0 for a in alphas)
    assert model.blocks[0].mlp.fc.qat_bits == 5 and model.blocks[0].attn.c_q.qat_bits == 6
    assert "qat_alpha" not in "".join(model.state_dict())  # not part of the artifact
    assert tg.configure_qat(model, tg.ExportSpec.from_config(cfg), False) == []
    assert all(m.qat_bits == 0 for m in model.modules() if isinstance(m, tg.CastedLinear))
    # at the tiny preset's default threshold every block matrix stays fp16, so QAT has nothing to fake
    plain = tg.ExportSpec.from_config(tg.preset_config("tiny", qat=True, quant_bits=6))
    assert tg.configure_qat(model, plain, True) == []


@pytest.mark.slow  # about 40 s: inductor compiles the tiny model's forward and backward on the CPU
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_qat_changes_gradients_after_its_start_under_compile_and_not_before(one_torch_thread):
    cfg, model = _tiny_qat_model()
    reference = copy.deepcopy(model)  # QAT off, eager
    alphas = tg.configure_qat(model, tg.ExportSpec.from_config(cfg), True)
    tg.emulate_fp16_scales()  # as train() does before compiling with QAT
    model.prepare_rotary(cfg.train_seq_len)  # as train() does: the rotary tables are built outside the graph
    reference.prepare_rotary(cfg.train_seq_len)
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.train_seq_len), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (2, cfg.train_seq_len), generator=gen)
    g_ref = _grads(reference, reference, x, y)
    g_before = _grads(model, compiled, x, y)
    assert _max_rel_diff(g_before, g_ref) < 1e-4  # alpha = 0: the float model (up to kernel rounding)
    for alpha in alphas:  # what train() does at the start step, with the compiled graph already built
        alpha.fill_(1.0)
    g_after = _grads(model, compiled, x, y)
    g_eager = _grads(model, model, x, y)
    assert _max_rel_diff(g_after, g_ref) > 1e-2  # the quantized forward changes the gradients ...
    assert _max_rel_diff(g_after, g_eager) < 1e-4  # ... exactly as eager QAT does
    fake = torch.compile(tg.fake_quantize_rows, dynamic=False, fullgraph=True)
    w = model.blocks[0].mlp.fc.weight.detach()
    assert torch.equal(fake(w, 6), tg.fake_quantize_rows(w, 6))  # compiled weights sit on the export's grid


def test_train_turns_qat_on_at_the_start_step(tiny_corpus, one_torch_thread):
    base = tg.preset_config("tiny", **tiny_corpus.overrides(), quant_bits=6, quant_keep_float_max_numel=0)
    logs: list[str] = []
    off = tg.train(base, 1)
    on = tg.train(base.with_overrides(qat=True, qat_start_frac=0.5), 1, log=logs.append)
    start = tg.qat_start_step(base.with_overrides(qat_start_frac=0.5))
    assert start == 6 and f"qat:enabled step:{start} layers:12 format:int6/emb-int8/zlib" in logs
    assert on.step_losses[:start] == off.step_losses[:start]  # bit for bit before the start step
    assert on.step_losses[start] != off.step_losses[start]  # step `start` already trains on fake-quantized weights
