"""Training throughput: tokens/s and achieved GFLOP/s per backend, at the `fast` preset and at a 6x256 model.

Times full optimizer steps (forward, backward, Muon + Adam) after a few warm-up steps, on the default corpus.
FLOPs per token use the usual estimate 6 x (matrix params, incl. the tied output head) + 12 x layers x seq x dim
(attention scores and values, forward + backward), so GFLOP/s is comparable across backends.

    python bench/throughput.py --backend torch --steps 20
    python bench/throughput.py --backend mlx --steps 20                        # OpenBLAS preloaded (mlx_twin)
    PG_MLX_BLAS=reference python bench/throughput.py --backend mlx --steps 20  # mlx[cpu]'s bundled BLAS
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

import train_gpt as tg
from scripts.causal.screen.trainer import cached_data, mlx_twin

CONFIGS: dict[str, dict[str, object]] = {
    "fast": {},
    "6x256": {"num_layers": 6, "model_dim": 256, "num_heads": 4, "num_kv_heads": 2},
}


def flops_per_token(cfg: tg.Hyperparameters) -> float:
    d, L, T = cfg.model_dim, cfg.num_layers, cfg.train_seq_len
    head_dim = d // cfg.num_heads
    kv = cfg.num_kv_heads * head_dim
    per_layer = d * d + 2 * d * kv + d * d + 2 * cfg.mlp_mult * d * d
    matrix_params = L * per_layer + cfg.vocab_size * d
    return 6.0 * matrix_params + 12.0 * L * T * d


def time_steps(step, cfg: tg.Hyperparameters, *, steps: int, warmup: int, threads) -> dict[str, float]:
    """Run ``warmup`` untimed then ``steps`` timed calls of ``step``; wall and CPU time per step, tokens/s, GFLOP/s."""
    for _ in range(warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = steps * cfg.train_batch_tokens
    return {"tokens_per_s": tokens / elapsed, "gflops": tokens * flops_per_token(cfg) / elapsed / 1e9,
            "step_ms": 1000.0 * elapsed / steps, "cpu_step_ms": 1000.0 * cpu / steps, "threads": float(threads)}


def torch_step(model, optimizers, next_batch: Callable[[], tuple], *, cuda: bool = False) -> Callable[[], None]:
    """One full optimizer step as a training loop takes it: the next batch, forward (bf16 autocast on CUDA),
    backward, every optimizer, zero grads, and the loss read back (so the step is finished when it returns)."""
    import torch

    def step() -> None:
        x, y = next_batch()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        float(loss.item())

    return step


def measure_torch(cfg: tg.Hyperparameters, *, steps: int, warmup: int = 3, seed: int = 0) -> dict[str, float]:
    import torch

    cfg, data = cached_data(cfg)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = tg.build_model(cfg, device)
    tg.init_weights(model, seed)
    model.train()
    optimizers, _ = tg.build_optimizers(cfg, model)
    loader = tg.TokenLoader(data.train_shards, device=device, order="seeded", seed=seed)

    step = torch_step(model, optimizers, lambda: loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, 1),
                      cuda=device.type == "cuda")
    return time_steps(step, cfg, steps=steps, warmup=warmup, threads=torch.get_num_threads())


def sgemm_gflops(n: int = 1024, reps: int = 5) -> float:
    """Achieved GFLOP/s of one fp32 n x n matmul in MLX (shows which BLAS mlx[cpu] is running on)."""
    tm, _ = mlx_twin()  # preloads OpenBLAS (scripts/causal/screen/mlx_blas.py) before mlx is first imported
    mx = tm.mx
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a @ b)
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval(a @ b)
    return 2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def measure_mlx(cfg: tg.Hyperparameters, *, steps: int, warmup: int = 3, seed: int = 0) -> dict[str, float]:
    """Same steps as measure_torch with train_gpt_mlx. PG_MLX_BLAS=reference keeps mlx[cpu]'s bundled BLAS."""
    tm, status = mlx_twin()
    print(f"mlx_blas:{status.tag or 'native'} sgemm_1024_gflops:{sgemm_gflops():.1f}", flush=True)
    mx = tm.mx
    cfg, data = cached_data(cfg)
    model = tm.GPT(cfg)
    init = tm.init_params(cfg, seed)
    tm.load_flat_params(model, init)
    stepper = tm._Stepper(cfg, model, tm.Optimizers(cfg, init), compiled=False)
    loader = tm.TokenStream(data.train_shards, order="seeded", seed=seed)

    def step() -> None:
        x, y = loader.next_arrays(cfg.train_batch_tokens, cfg.train_seq_len, 1)
        xm, ym = mx.array(x.astype("int32")), mx.array(y.astype("int32"))
        float(stepper(xm, ym, 1.0, cfg.muon_momentum).item())

    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1  # MLX has no thread knob
    return time_steps(step, cfg, steps=steps, warmup=warmup, threads=blas_threads)


# Backend name -> measuring function.
MEASURES: dict[str, Callable[..., dict[str, float]]] = {"torch": measure_torch, "mlx": measure_mlx}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", choices=sorted(MEASURES), help="backend to time (e.g. torch)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per config (e.g. 20)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="which configs to time (default: fast 6x256)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, e.g. 1)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"machine:{platform.machine()} cpus:{os.cpu_count()} load_before:{os.getloadavg()[0]:.2f}")
    print("| backend | config | threads | step ms (wall) | step ms (CPU time) | tokens/s | GFLOP/s | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        cfg = tg.preset_config("fast", **CONFIGS[name])
        r = MEASURES[args.backend](cfg, steps=args.steps)
        print(f"| {args.backend} | {name} ({cfg.num_layers}x{cfg.model_dim}, seq {cfg.train_seq_len}, "
              f"{cfg.train_batch_tokens} tok/step) | {r['threads']:.0f} | {r['step_ms']:.1f} | {r['cpu_step_ms']:.1f} | "
              f"{r['tokens_per_s']:.0f} | "
              f"{r['gflops']:.2f} | {os.getloadavg()[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
