"""QAT in train_gpt_mlx.py: the twin fakes the export's quantization exactly as train_gpt.py does (same grid, same
layers, same gradients), and the switch reaches an mx.compile'd step after its start and not before."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")

import torch  # noqa: E402

import train_gpt as tg  # noqa: E402
import train_gpt_mlx as tm  # noqa: E402

TOL = 1e-4
QAT = dict(quant_bits=6, quant_bits_mlp=5, quant_keep_float_max_numel=0, qat=True)


def _batch(cfg, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg.vocab_size, (2, 32)), rng.integers(0, cfg.vocab_size, (2, 32))


def _mlx_grads(model, fn, x, y) -> tuple[float, dict[str, np.ndarray]]:
    loss, grads = fn(mx.array(x), mx.array(y))
    return float(loss.item()), {k: np.array(v) for k, v in tm.tree_flatten(grads)}


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-12)) for k in b)


@pytest.mark.parametrize("bits,floor", [(8, 1 / 127), (8, 0.0), (6, 0.0), (5, 0.0), (4, 0.0)])
def test_fake_quantize_rows_is_torch_bit_for_bit(bits, floor):
    w = np.random.default_rng(bits).standard_normal((48, 160)).astype(np.float32) * 0.05
    w[3, 7] = 1.0  # one outlier row: the clip interpolates between its two largest values
    expected = tg.fake_quantize_rows(torch.from_numpy(w), bits, floor).numpy()
    np.testing.assert_array_equal(np.array(tm.fake_quantize_rows(mx.array(w), bits, floor)), expected)


def test_configure_qat_picks_torch_layers_and_bits_and_adds_no_parameter():
    cfg = tg.preset_config("tiny", **QAT)
    spec = tm.ExportSpec.from_config(cfg)
    model = tm.GPT(cfg)
    before = set(tm.flat_params(model))
    switch = tm.configure_qat(model, spec, True)
    tmodel = tg.GPT.from_config(cfg)
    tg.configure_qat(tmodel, tg.ExportSpec.from_config(cfg), True)
    t_bits = {n: m.qat_bits for n, m in tmodel.named_modules() if isinstance(m, tg.CastedLinear)}
    m_bits = {n: m.qat_bits for n, m in model.named_modules() if isinstance(m, tm.CastedLinear)}
    assert m_bits == t_bits and switch.layers == 12 and not switch.on
    assert m_bits["blocks.0.mlp.fc"] == 5 and m_bits["blocks.0.attn.c_q"] == 6
    assert set(tm.flat_params(model)) == before  # the switch is not a parameter, so not in the artifact
    assert tm.configure_qat(model, spec, False) is None
    assert all(m.qat_bits == 0 for _, m in model.named_modules() if isinstance(m, tm.CastedLinear))


def test_qat_loss_and_gradients_match_torch(perturbed):
    cfg = tg.preset_config("tiny", **QAT)
    tmodel = perturbed(cfg)
    for alpha in tg.configure_qat(tmodel, tg.ExportSpec.from_config(cfg), True):
        alpha.fill_(1.0)
    x, y = _batch(cfg)
    t_loss = tmodel(torch.from_numpy(x), torch.from_numpy(y))
    t_loss.backward()
    model = tm.GPT(cfg)
    tm.load_flat_params(model, tm.params_from_torch(dict(tmodel.named_parameters())))
    tm.configure_qat(model, tm.ExportSpec.from_config(cfg), True).set(True)
    m_loss, grads = _mlx_grads(model, tm.nn.value_and_grad(model, lambda a, b: model(a, b)), x, y)
    assert abs(m_loss - float(t_loss.item())) < TOL
    for name, p in tmodel.named_parameters():
        assert float(np.abs(grads[name] - p.grad.numpy()).max()) < TOL, name


def test_qat_changes_gradients_after_its_start_under_mx_compile_and_not_before(perturbed):
    cfg = tg.preset_config("tiny", **QAT)
    params = tm.params_from_torch(dict(perturbed(cfg).named_parameters()))
    reference, model = tm.GPT(cfg), tm.GPT(cfg)
    tm.load_flat_params(reference, params)
    tm.load_flat_params(model, params)
    switch = tm.configure_qat(model, tm.ExportSpec.from_config(cfg), True)
    eager = tm.nn.value_and_grad(model, lambda a, b: model(a, b))
    compiled = mx.compile(eager, inputs=[model.state, switch.state], outputs=[model.state])  # as _Stepper does
    x, y = _batch(cfg, 1)
    _, g_ref = _mlx_grads(reference, tm.nn.value_and_grad(reference, lambda a, b: reference(a, b)), x, y)
    _, g_before = _mlx_grads(model, compiled, x, y)
    assert _max_rel_diff(g_before, g_ref) < 1e-5  # switch off: the float model
    switch.set(True)  # what train() does at the start step, the compiled graph already traced
    _, g_after = _mlx_grads(model, compiled, x, y)
    _, g_eager = _mlx_grads(model, eager, x, y)
    assert _max_rel_diff(g_after, g_ref) > 1e-2  # the quantized forward changes the gradients ...
    assert _max_rel_diff(g_after, g_eager) < 1e-5  # ... exactly as the eager QAT step does


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_train_turns_qat_on_at_the_start_step_as_torch(synthetic_data, compiled):
    cfg = tg.preset_config("tiny", val_batch_size=2048, vocab_size=128, **{**QAT, "qat": False})
    logs: list[str] = []
    off = tm.train(cfg, 1, data=synthetic_data, compiled=compiled)
    on_cfg = cfg.with_overrides(qat=True, qat_start_frac=0.5)
    on = tm.train(on_cfg, 1, data=synthetic_data, compiled=compiled, log=logs.append)
    assert "qat:enabled step:6 layers:12 format:int6/mlp5/emb-int8/zlib" in logs
    assert on.step_losses[:6] == off.step_losses[:6]  # bit for bit before the start step
    assert on.step_losses[6] != off.step_losses[6]  # step 6 already trains on fake-quantized weights
    t = tg.train(on_cfg, 1, data=synthetic_data)
    np.testing.assert_allclose(on.step_losses, t.step_losses, atol=1e-3)
    assert abs(on.post_quant_val_bpb - t.post_quant_val_bpb) < 1e-3
