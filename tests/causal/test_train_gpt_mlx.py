"""Tests for train_gpt_mlx.py (the MLX twin) and scripts/causal/screen/mlx_blas.py (the caller's OpenBLAS preload).

Parity: torch weights are copied into the MLX model by name; loss and every gradient must agree within 1e-4
(fp32) on a fixed batch, for every activation, loss variant and screening knob. Training runs use a small
in-memory dataset so they take seconds; the script's end-to-end run on the real corpus is marked slow.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")

import torch  # noqa: E402

import train_gpt as tg  # noqa: E402
import train_gpt_mlx as tm  # noqa: E402
from scripts.causal.screen import mlx_blas as blas  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4


# ----------------------------------------------------------------------------- config


def test_hyperparameters_identical_fields_and_defaults():
    t_fields = {f.name: f.default for f in dataclasses.fields(tg.Hyperparameters)}
    m_fields = {f.name: f.default for f in dataclasses.fields(tm.Hyperparameters)}
    assert m_fields == t_fields
    assert tm.Hyperparameters().to_dict() == tg.Hyperparameters().to_dict() and tm.PRESETS == tg.PRESETS
    for knob in ("activation", "rope_partial_dims", "ln_scale", "xsa_last_n", "ema_decay", "loss",
                 "rho1_keep_frac", "mtp_weight", "data_order", "compile"):
        assert knob in m_fields


def test_module_line_cap_and_quiet_import():
    """At most 3,000 lines; importing the twin prints nothing and writes nothing. Through the screen adapter
    (mlx_twin: Linux + mlx[cpu] + OpenBLAS installed), OpenBLAS is loaded ahead of mlx's bundled reference BLAS."""
    assert len((REPO / "train_gpt_mlx.py").read_text(encoding="utf-8").splitlines()) <= 3000
    code = (
        "import contextlib, io, os, sys\n"
        "before = set(os.listdir('.'))\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
        "    {load}\n"
        "print(repr(buf.getvalue()), set(os.listdir('.')) == before,\n"
        "      'openblas' in open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PG_MLX_BLAS"}

    def probe(load: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", code.format(load=load)], cwd=REPO, capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return proc.stdout.rsplit(maxsplit=2)

    printed, no_new_files, _ = probe("import train_gpt_mlx")
    assert printed == "''" and no_new_files == "True"
    if blas.bundled_reference_blas() is not None and blas.find_openblas() is not None:
        printed, no_new_files, openblas_mapped = probe("from scripts.causal.screen.trainer import mlx_twin; mlx_twin()")
        assert printed == "''" and no_new_files == "True" and openblas_mapped == "True"


# ----------------------------------------------------------------------------- parity


def _batch(cfg, seed: int = 0, seq: int = 32):
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg.vocab_size, (2, seq)), rng.integers(0, cfg.vocab_size, (2, seq))


PARITY_CASES = (
    [{"activation": a} for a in tg.ACTIVATIONS]
    + [{"loss": "rho1"}, {"loss": "rho1", "rho1_keep_frac": 0.01}, {"loss": "mtp"}, {"loss": "mtp", "mtp_weight": 1.0}]
    + [{"rope_partial_dims": 8}, {"ln_scale": True}, {"xsa_last_n": 1}, {"xsa_last_n": 2}, {"logit_softcap": 5.0}]
    + [{"tie_embeddings": False}, {"num_layers": 3, "num_kv_heads": 4}, {"qk_gain_init": 3.0, "rope_base": 500.0}]
)


@pytest.mark.parametrize("overrides", PARITY_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_loss_and_gradients_match_torch(overrides, perturbed):
    cfg = tg.preset_config("tiny", **overrides)
    tmodel = perturbed(cfg)
    x, y = _batch(cfg)
    t_loss = tmodel(torch.from_numpy(x), torch.from_numpy(y))
    t_loss.backward()

    mmodel = tm.GPT(cfg)
    tm.load_flat_params(mmodel, tm.params_from_torch(dict(tmodel.named_parameters())))
    m_loss, grads = tm.nn.value_and_grad(mmodel, lambda a, b: mmodel(a, b))(mx.array(x), mx.array(y))
    grads = dict(tm.tree_flatten(grads))

    assert abs(float(m_loss.item()) - float(t_loss.item())) < TOL
    assert set(grads) == {n for n, _ in tmodel.named_parameters()}
    for name, p in tmodel.named_parameters():
        diff = float(np.abs(np.array(grads[name]) - p.grad.numpy()).max())
        assert diff < TOL, f"{name}: max |grad diff| {diff}"
        assert float(np.abs(p.grad.numpy()).max()) > 0.0, f"{name}: zero gradient, the check would be vacuous"


def test_eval_loss_is_plain_ce_for_every_loss_variant(perturbed):
    for loss in tg.LOSSES:
        cfg = tg.preset_config("tiny", loss=loss)
        tmodel = perturbed(cfg).eval()
        x, y = _batch(cfg, seed=1)
        with torch.no_grad():
            t_eval = float(tmodel(torch.from_numpy(x), torch.from_numpy(y)).item())
        mmodel = tm.GPT(cfg)
        tm.load_flat_params(mmodel, tm.params_from_torch(dict(tmodel.named_parameters())))
        assert abs(float(mmodel.eval_loss(mx.array(x), mx.array(y)).item()) - t_eval) < TOL


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "loss": "mtp", "vocab_size": 1000}])
def test_init_matches_torch_and_is_keyed_by_name(overrides):
    """Without torch, the twin reproduces torch's keyed init: every uniform, zero and constant parameter bit for
    bit; tok_emb (torch.randn) to within float32 rounding of log/sin/cos, with many values identical."""
    cfg = tg.preset_config("tiny", **overrides)
    tmodel = tg.GPT.from_config(cfg)
    tg.init_weights(tmodel, 11)
    params = tm.init_params(cfg, 11)
    assert set(params) == {n for n, _ in tmodel.named_parameters()}
    for name, p in tmodel.named_parameters():
        mine, ref = np.array(params[name]), p.detach().numpy()
        if name != "tok_emb.weight":
            np.testing.assert_array_equal(mine, ref, err_msg=name)
            continue
        std = cfg.tied_embed_init_std if cfg.tie_embeddings else 1.0
        assert float(np.abs(mine - ref).max()) <= 1e-5 * std and float(np.mean(mine == ref)) > 0.3
        assert abs(float(ref.std()) - std) < 0.05 * std  # the check is not vacuous: real N(0, std) draws
    if overrides:
        return
    deeper = tm.init_params(tg.preset_config("tiny", num_layers=3), 11)
    for name in params:  # CRN: an extra layer leaves every shared parameter's draw unchanged
        np.testing.assert_array_equal(np.array(deeper[name]), np.array(params[name]))
    assert not np.array_equal(np.array(tm.init_params(cfg, 12)["tok_emb.weight"]), np.array(params["tok_emb.weight"]))


def test_torch_generators_reproduced_without_torch():
    """torch.rand bit for bit; torch.randn (Box-Muller in blocks of 16, the last 16 redrawn) to float32 rounding."""
    for seed in (0, 7, 2**62 + 5):
        for n in (16, 37, 1000):
            np.testing.assert_array_equal(tm.torch_uniform(seed, n),
                                          torch.rand(n, generator=torch.Generator().manual_seed(seed)).numpy())
            ref = torch.randn(n, generator=torch.Generator().manual_seed(seed)).numpy()
            assert float(np.abs(tm.torch_normal(seed, n) - ref).max()) < 1e-5
    with pytest.raises(ValueError, match="n >= 16"):
        tm.torch_normal(0, 15)


def test_newton_schulz_matches_torch():
    rng = np.random.default_rng(5)
    for shape in ((16, 48), (48, 16), (32, 32)):
        g = rng.standard_normal(shape).astype(np.float32)
        ref = tg.zeropower_via_newtonschulz5(torch.from_numpy(g), steps=5).numpy()
        out = np.array(tm.zeropower_via_newtonschulz5(mx.array(g), steps=5))
        np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "loss": "mtp", "grad_clip_norm": 0.5},
                                       {"tie_embeddings": False, "adam_wd": 0.5}])
def test_optimizer_steps_match_torch(overrides, perturbed):
    """Two steps of every optimizer group (Muon + the Adam groups, lr scale, momentum, clipping) fed the same
    gradients as train_gpt.build_optimizers. (Gradients themselves are compared above: recomputing them here
    would let Adam's division by sqrt(v) amplify 1e-7 gradient noise on near-zero embedding rows.)"""
    cfg = tg.preset_config("tiny", **overrides)
    tmodel = perturbed(cfg)
    params = tm.params_from_torch(dict(tmodel.named_parameters()))
    optimizers, muon = tg.build_optimizers(cfg, tmodel)
    opts = tm.Optimizers(cfg, params)
    for step, (scale, momentum) in enumerate(((1.0, 0.85), (0.5, 0.95))):
        x, y = _batch(cfg, seed=10 + step)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        for group in muon.param_groups:
            group["momentum"] = momentum
        tmodel(torch.from_numpy(x), torch.from_numpy(y)).backward()
        grads = {n: mx.array(p.grad.numpy().copy()) for n, p in tmodel.named_parameters()}
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), cfg.grad_clip_norm)
            grads = tm.clip_grad_norm(grads, cfg.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        opts.set_schedule(scale, momentum)
        params = opts.step(params, grads)
    for name, p in tmodel.named_parameters():
        diff = float(np.abs(np.array(params[name]) - p.detach().numpy()).max())
        assert diff < TOL, f"{name}: max |param diff| after 2 steps {diff}"


def test_rho1_keeps_at_least_one_token():
    assert tm.rho1_keep_count(10, 0.7) == 7
    assert tm.rho1_keep_count(10, 0.01) == 1
    losses = mx.array([0.5, 3.0, 1.0, 2.0])
    assert float(tm.rho1_loss(losses, 0.5).item()) == pytest.approx(2.5)
    assert float(tm.rho1_loss(losses, 0.01).item()) == pytest.approx(3.0)


def test_int8_roundtrip_uses_train_gpt_format_and_drops_mtp_head(perturbed):
    cfg = tg.preset_config("tiny", loss="mtp")
    params = tm.params_from_torch(dict(perturbed(cfg).named_parameters()))
    blob, stats, restored = tm.int8_zlib_roundtrip(params)
    assert "mtp_heads.0.weight" not in restored and set(restored) == set(params) - {"mtp_heads.0.weight"}
    torch_restored = tg.deserialize_int8_zlib(blob)  # torch reads the MLX artifact as its own
    for name, v in restored.items():
        np.testing.assert_array_equal(np.array(v), torch_restored[name].float().numpy())
        scale = float(np.abs(np.array(params[name])).max()) + 1e-12
        assert float(np.abs(np.array(v) - np.array(params[name])).max()) <= 0.02 * scale
    assert stats["int8_payload_bytes"] < stats["baseline_tensor_bytes"]


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def synth(synthetic_data) -> tg.TrainData:
    return synthetic_data


def _tiny(**overrides):
    return tg.preset_config("tiny", val_batch_size=2048, vocab_size=128, **overrides)


def test_train_returns_runresult_and_learns(synth):
    result = tm.train(_tiny(), 1, data=synth)
    assert isinstance(result, tm.RunResult) and result.status == "ok" and result.error is None
    assert result.backend == "mlx" and result.seed == 1 and result.steps == 12 and len(result.step_losses) == 12
    assert result.config_hash == tg.config_hash(_tiny(seed=1, data_path="synthetic", tokenizer_path="synthetic.model"))
    assert "mlx" in result.versions and "numpy" in result.versions
    assert result.step_losses[-1] < result.step_losses[0] - 1.0
    assert result.val_bpb < 0.8 * np.log2(128) and np.isfinite(result.post_quant_val_bpb)
    assert abs(result.post_quant_val_bpb - result.val_bpb) < 0.05
    assert result.artifact_bytes > (REPO / "train_gpt_mlx.py").stat().st_size
    assert result.val_history[-1]["step"] == 12 and result.val_history[-1]["val_bpb"] == result.val_bpb
    tg.RunResult.from_dict(result.to_dict())


def test_train_matches_torch_end_to_end(synth):
    """Same seed, same data order, same init: the two backends follow the same loss curve."""
    cfg = _tiny(iterations=4, warmdown_iters=2)
    m = tm.train(cfg, 4, data=synth)
    t = tg.train(cfg, 4, data=synth)
    np.testing.assert_allclose(m.step_losses, t.step_losses, atol=1e-3)
    assert abs(m.val_bpb - t.val_bpb) < 1e-3
    assert m.config_hash == t.config_hash


def test_train_is_deterministic_and_seed_sensitive(synth):
    cfg = _tiny(iterations=4, warmdown_iters=2)
    a, b, c = tm.train(cfg, 2, data=synth), tm.train(cfg, 2, data=synth), tm.train(cfg, 3, data=synth)
    assert a.val_bpb == b.val_bpb and a.step_losses == b.step_losses
    assert a.val_bpb != c.val_bpb


def test_export_and_sliding_eval_match_torch(synth):
    """The shared numpy export and the sliding plan give the twin torch's numbers (QAT and TTT: test_mlx_qat.py,
    test_mlx_ttt.py)."""
    cfg = _tiny(iterations=4, warmdown_iters=2, quant_bits=6, quant_clip_search=True, quant_keep_float_max_numel=0,
                compressor="lzma", eval_stride=16)
    m, t = tm.train(cfg, 4, data=synth), tg.train(cfg, 4, data=synth)
    assert m.export_format == t.export_format == "int6+clip/emb-int8/lzma"
    assert abs(m.sliding_val_bpb - t.sliding_val_bpb) < 1e-3 and abs(m.post_quant_val_bpb - t.post_quant_val_bpb) < 1e-3
    same = tm.train(cfg.with_overrides(eval_stride=cfg.train_seq_len), 4, data=synth)
    # stride = window: the plain windows, up to fp32 summation order (relative 1e-6)
    assert abs(same.sliding_val_bpb - same.post_quant_val_bpb) <= 1e-6 * same.post_quant_val_bpb


KNOB_CFG = dict(iterations=3, warmdown_iters=1)


@pytest.fixture(scope="module")
def baseline_run(synth) -> tg.RunResult:
    return tm.train(_tiny(**KNOB_CFG), 5, data=synth)


@pytest.mark.parametrize(
    "overrides",
    [{"activation": a} for a in tg.ACTIVATIONS if a != "relu2"]
    + [{"loss": "rho1"}, {"loss": "mtp"}, {"ema_decay": 0.9}, {"xsa_last_n": 1}, {"ln_scale": True},
       {"rope_partial_dims": 8}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_knob_changes_the_run(synth, baseline_run, overrides):
    changed = tm.train(_tiny(**KNOB_CFG, **overrides), 5, data=synth)
    assert changed.status == "ok"
    if "ema_decay" in overrides:  # EMA changes only what is evaluated, not the training trajectory
        assert changed.step_losses == baseline_run.step_losses and changed.val_bpb != baseline_run.val_bpb
    else:
        assert changed.step_losses[-1] != baseline_run.step_losses[-1]
        assert changed.val_bpb != baseline_run.val_bpb


def test_diverged_run_reports_status_instead_of_raising(synth):
    result = tm.train(_tiny(iterations=4, scalar_lr=float("inf")), 1, data=synth)
    assert result.status == "diverged" and "step" in result.error
    assert result.steps <= 4 and np.isnan(result.val_bpb)


def test_warmup_steps_do_not_change_the_result(synth):
    cfg = _tiny(iterations=3, warmdown_iters=1)
    assert tm.train(cfg, 1, data=synth).val_bpb == tm.train(cfg.with_overrides(warmup_steps=2), 1, data=synth).val_bpb


@pytest.mark.slow
def test_script_prints_upstream_final_line(tmp_path):
    from scripts.causal.data.shards import ensure_default_corpus

    ensure_default_corpus()  # the tiny preset's corpus, found next to the script (the twin never prepares data)
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "TOKENIZER_PATH")}
    env.update(PRESET="tiny", RUN_ID="mlx_script_test")
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt_mlx.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("final_int8_zlib_roundtrip_exact val_loss:") and " val_bpb:" in last
    assert (tmp_path / "logs" / "mlx_script_test.txt").is_file()


# ----------------------------------------------------------------------------- OpenBLAS preload


@pytest.fixture
def fresh_blas():
    saved = blas._STATUS
    blas._reset_for_tests()
    yield blas
    blas._STATUS = saved


def test_blas_not_applicable_off_linux(fresh_blas):
    status = fresh_blas.ensure_fast_blas(platform="darwin", env={})
    assert not status.applicable and status.hint is None and status.fast


def test_blas_reference_opt_out(fresh_blas):
    if fresh_blas.bundled_reference_blas() is None:
        pytest.skip("this mlx wheel bundles no reference BLAS")
    status = fresh_blas.ensure_fast_blas(platform="linux", env={"PG_MLX_BLAS": "reference"})
    assert status.applicable and status.loaded is None and status.hint is None


def test_blas_bad_library_gives_one_hint_and_never_raises(fresh_blas, tmp_path):
    if fresh_blas.bundled_reference_blas() is None:
        pytest.skip("this mlx wheel bundles no reference BLAS")
    bogus = tmp_path / "libopenblas.so.0"
    bogus.write_bytes(b"not a library")
    status = fresh_blas.ensure_fast_blas(platform="linux", env={"PG_MLX_BLAS": str(bogus)})
    assert status.loaded is None and "apt-get install libopenblas0-pthread" in status.hint
    assert fresh_blas.ensure_fast_blas() is status  # cached: one decision per process


def test_blas_loaded_after_mlx_import_is_reported(fresh_blas):
    lib = fresh_blas.find_openblas()
    if fresh_blas.bundled_reference_blas() is None or lib is None:
        pytest.skip("needs mlx[cpu] on Linux and an installed OpenBLAS")
    status = fresh_blas.ensure_fast_blas(platform="linux", env={})
    assert status.mlx_already_imported and status.loaded == str(lib)
    assert "before the first `import mlx`" in status.hint and not status.fast


def test_find_openblas_skips_missing_and_reference(tmp_path):
    ref_dir = tmp_path / "blas"
    ref_dir.mkdir()
    ref = ref_dir / "libblas.so.3"
    ref.write_bytes(b"")
    good = tmp_path / "openblas-pthread" / "libopenblas.so.0"
    good.parent.mkdir()
    good.write_bytes(b"")
    assert blas.find_openblas((str(tmp_path / "missing.so"), str(ref), str(good))) == good
    assert blas.find_openblas((str(tmp_path / "missing.so"),)) is None


def test_bundled_blas_found_despite_a_stray_mlx_folder_on_the_path(tmp_path):
    real = blas.bundled_reference_blas()
    if real is None:
        pytest.skip("this mlx wheel bundles no reference BLAS")
    (tmp_path / "mlx").mkdir()  # e.g. a folder named mlx in the cwd: listed before site-packages' location
    locations = [str(tmp_path / "mlx"), str(real.parent.parent / "mlx")]
    assert blas.bundled_reference_blas(locations) == real
    assert blas.bundled_reference_blas(locations[:1]) is None


def test_branched_cooldowns_equal_separate_runs_bit_for_bit(synth):
    """The MLX twin of train_gpt's branched cooldowns: each horizon equals a separate run of that length."""
    cfg = _tiny(iterations=8, warmdown_iters=3)
    branched = tm.train(cfg.with_overrides(horizons="5"), 2, data=synth)
    for h in (5, 8):
        separate = tm.train(cfg.with_overrides(iterations=h), 2, data=synth)
        assert branched.horizon_metrics[str(h)]["post_quant_val_bpb"] == separate.post_quant_val_bpb
    assert branched.step_losses == tm.train(cfg, 2, data=synth).step_losses
