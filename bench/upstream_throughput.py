"""Training tokens/s of our trainers against upstream's, at the `fast` preset's shape, on the same shards, in one run.

Four implementations, each timed for ``--steps`` full optimizer steps (forward, backward, Muon + Adam) after
``--warmup`` untimed ones, one after the other in this process: ours (train_gpt.py, torch; train_gpt_mlx.py, MLX)
and upstream's (../shared/upstream/train_gpt.py and train_gpt_mlx.py, imported by file path, never copied). All
use the `fast` shape (4 layers x 128, 4 heads / 2 KV heads, mlp_mult 2, vocab 1024, seq 128, 2048 tokens per
step in one micro-batch), our prepared embedded corpus (FineWeb shard format, read by each trainer's own loader),
fp32 weights and activations on the CPU and ``--threads`` torch / OpenBLAS threads. The ratio column is ours over
the upstream counterpart (> 1: ours is faster). Upstream's trainers are built in-process from their own classes
(GPT, Muon/SplitOptimizers, token loaders); the CPU adjustments this needs are listed in the table.

    python bench/upstream_throughput.py --steps 10 --warmup 3 --threads 1 [--out /tmp/upstream_throughput.json]
    python bench/upstream_throughput.py --impls ours-mlx upstream-mlx upstream-mlx-eager   # + upstream w/o mx.compile

MLX uses OpenBLAS where scripts/causal/screen/mlx_blas.py finds it (PG_MLX_BLAS=/path/libopenblas.so.0 names one),
else mlx[cpu]'s bundled reference BLAS; the `mlx_blas:` line says which. Results: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import train_gpt as tg
from scripts.causal.screen.trainer import cached_data, mlx_twin

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_DIR = REPO.parent / "shared" / "upstream"


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (upstream's scripts and bench/throughput.py are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (upstream's scripts are expected in ../shared/upstream; "
                                f"pass --upstream-dir)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


THROUGHPUT = load_by_path("bench_throughput", REPO / "bench" / "throughput.py")


def upstream_args(module: ModuleType, cfg: tg.Hyperparameters):
    """Upstream's Hyperparameters with every plain field our config also has set to our value, one micro-batch."""
    args = module.Hyperparameters()
    for name, value in vars(module.Hyperparameters).items():
        if not name.startswith("_") and not isinstance(value, property) and not callable(value) and hasattr(cfg, name):
            setattr(args, name, getattr(cfg, name))
    args.grad_accum_steps = 1  # upstream torch hard-codes 8 // world_size in main(); ours steps on one micro-batch
    return args


def measure_upstream_torch(cfg: tg.Hyperparameters, upstream_dir: Path, *, steps: int, warmup: int,
                           seed: int = 0) -> dict[str, float]:
    """Upstream train_gpt.py's GPT, Muon + fused-Adam split and DistributedTokenLoader, stepped as its main loop."""
    import torch

    ut = load_by_path("upstream_train_gpt", upstream_dir / "train_gpt.py")
    cfg, _ = cached_data(cfg)
    a = upstream_args(ut, cfg)
    torch.manual_seed(seed)
    model = ut.GPT(vocab_size=a.vocab_size, num_layers=a.num_layers, model_dim=a.model_dim, num_heads=a.num_heads,
                   num_kv_heads=a.num_kv_heads, mlp_mult=a.mlp_mult, tie_embeddings=a.tie_embeddings,
                   tied_embed_init_std=a.tied_embed_init_std, logit_softcap=a.logit_softcap,
                   rope_base=a.rope_base, qk_gain_init=a.qk_gain_init)  # fp32: no .bfloat16(), no torch.compile
    model.train()
    control = ut.CONTROL_TENSOR_NAME_PATTERNS
    named = list(model.blocks.named_parameters())
    matrix = [p for n, p in named if p.ndim == 2 and not any(c in n for c in control)]
    scalar = [p for n, p in named if p.ndim < 2 or any(c in n for c in control)] + [model.skip_weights]
    adam = dict(betas=(a.beta1, a.beta2), eps=a.adam_eps, fused=True)
    optimizers = [torch.optim.Adam([model.tok_emb.weight], lr=a.tied_embed_lr, **adam),
                  ut.Muon(matrix, lr=a.matrix_lr, momentum=a.muon_momentum, backend_steps=a.muon_backend_steps),
                  torch.optim.Adam(scalar, lr=a.scalar_lr, **adam)]
    loader = ut.DistributedTokenLoader(a.train_files, 0, 1, torch.device("cpu"))

    step = THROUGHPUT.torch_step(model, optimizers,
                                 lambda: loader.next_batch(a.train_batch_tokens, a.train_seq_len, a.grad_accum_steps))
    return THROUGHPUT.time_steps(step, cfg, steps=steps, warmup=warmup, threads=torch.get_num_threads())


def measure_upstream_mlx(cfg: tg.Hyperparameters, upstream_dir: Path, *, steps: int, warmup: int, seed: int = 0,
                         compiled: bool = True) -> dict[str, float]:
    """Upstream train_gpt_mlx.py's GPT, SplitOptimizers and TokenLoader, stepped as its main loop (mx.compile'd
    loss+grad as shipped unless ``compiled`` is False), with COMPUTE_DTYPE set to float32."""
    tm, _ = mlx_twin()  # OpenBLAS preload before upstream's `import mlx`
    mx, nn = tm.mx, tm.nn
    um = load_by_path("upstream_train_gpt_mlx", upstream_dir / "train_gpt_mlx.py")
    um.COMPUTE_DTYPE = mx.float32  # shipped: bfloat16 activations and embedding table
    cfg, _ = cached_data(cfg)
    a = upstream_args(um, cfg)
    mx.random.seed(seed)
    model = um.GPT(vocab_size=a.vocab_size, num_layers=a.num_layers, dim=a.model_dim, num_heads=a.num_heads,
                   num_kv_heads=a.num_kv_heads, mlp_mult=a.mlp_mult, logit_chunk_tokens=a.logit_chunk_tokens,
                   logit_softcap=a.logit_softcap, rope_base=a.rope_base, tied_embed_init_std=a.tied_embed_init_std,
                   qk_gain_init=a.qk_gain_init)
    opt = um.SplitOptimizers(model, a)
    loss_and_grad = nn.value_and_grad(model, lambda x, y: model.loss(x, y))
    if compiled:
        loss_and_grad = mx.compile(loss_and_grad, inputs=model.state, outputs=model.state)
    loader = um.TokenLoader(a.train_files)
    state = {"step": 0}

    def step() -> None:
        loss, grads = um.loss_and_grad_chunked(a, loader, loss_and_grad)
        accum = um.accumulate_flat_grads(None, grads, 1.0 / a.grad_accum_steps)
        grads = um.clip_grad_tree(um.tree_unflatten(list(accum.items())), a.grad_clip_norm)
        float(loss.item())
        opt.step(model, grads, step=state["step"], lr_mul=1.0)
        # upstream leaves the update lazy until the next forward; evaluate it here so each timed step holds its own
        mx.eval(model.state, opt.muon.buffers, opt.adam_embed.state, opt.adam_scalar.state)
        state["step"] += 1

    return THROUGHPUT.time_steps(step, cfg, steps=steps, warmup=warmup, threads=os.environ["OPENBLAS_NUM_THREADS"])


class Impl(NamedTuple):
    backend: str
    ratio: tuple[str, str] | None  # (numerator, denominator) implementations, "self" = this row; None: a reference
    how: str  # how it runs here (the adjustments upstream's trainers need on a CPU)
    measure: Callable[..., dict[str, float]]  # (cfg, upstream_dir, *, steps, warmup) -> time_steps' dict


IMPLS: dict[str, Impl] = {
    "ours-torch": Impl("torch", ("self", "upstream-torch"), "as shipped on CPU: fp32, eager (fast preset: compile "
                       "off), seeded data windows", lambda c, u, **k: THROUGHPUT.measure_torch(c, **k)),
    "upstream-torch": Impl("torch", None, "built in-process (main() requires CUDA): fp32 model (no .bfloat16() "
                           "cast, no autocast), no torch.compile, 1 micro-batch; Muon's Newton-Schulz in bf16 as "
                           "shipped", measure_upstream_torch),
    "ours-mlx": Impl("mlx", ("self", "upstream-mlx"), "as shipped (train() default): fp32, no mx.compile, seeded "
                     "data windows", lambda c, u, **k: THROUGHPUT.measure_mlx(c, **k)),
    "upstream-mlx": Impl("mlx", None, "built in-process: COMPUTE_DTYPE=float32 (shipped: bfloat16), mx.compile'd "
                         "loss+grad as shipped, 1 micro-batch, update evaluated each step", measure_upstream_mlx),
    "upstream-mlx-eager": Impl("mlx", ("ours-mlx", "self"), "as upstream-mlx without mx.compile (ratio: ours-mlx "
                               "over this row)", lambda c, u, **k: measure_upstream_mlx(c, u, compiled=False, **k)),
}
DEFAULT_IMPLS = ["ours-torch", "upstream-torch", "ours-mlx", "upstream-mlx"]


def add_ratios(rows: list[dict]) -> list[dict]:
    """Set each row's ``ratio`` (ours' tokens/s over upstream's, see Impl.ratio) and ``cpu_ratio`` (the same from
    CPU time per step, steadier on a loaded machine); None where a side is missing."""
    by_name = {r["impl"]: r for r in rows}
    for r in rows:
        pair = IMPLS[r["impl"]].ratio
        num, den = (by_name.get(r["impl"] if n == "self" else n, {}) for n in pair) if pair else ({}, {})
        ok = "tokens_per_s" in num and "tokens_per_s" in den
        r["ratio"] = num["tokens_per_s"] / den["tokens_per_s"] if ok else None
        r["cpu_ratio"] = den["cpu_step_ms"] / num["cpu_step_ms"] if ok else None
    return rows


def format_table(rows: list[dict]) -> str:
    """The markdown table: implementation, backend, wall and CPU ms/step, tokens/s, ratio, load, how it ran."""
    lines = ["| implementation | backend | step ms (wall) | step ms (CPU) | tokens/s | ratio vs upstream (wall) "
             "| ratio (CPU time) | load avg | how it runs here |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        backend, pair, how, _ = IMPLS[r["impl"]]
        if "error" in r:
            lines.append(f"| {r['impl']} | {backend} | - | - | - | - | - | {r['load']:.2f} | does not run: {r['error']} |")
            continue
        ratio, cpu = ((f"**{r['ratio']:.2f}x**", f"{r['cpu_ratio']:.2f}x") if r["ratio"] is not None
                      else ("-", "-") if pair else ("1 (reference)", "1"))
        lines.append(f"| {r['impl']} | {backend} | {r['step_ms']:.1f} | {r['cpu_step_ms']:.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {ratio} | {cpu} | {r['load']:.2f} | {how} |")
    return "\n".join(lines)


def run(impls: Sequence[str], *, steps: int, warmup: int, upstream_dir: Path,
        cfg: tg.Hyperparameters | None = None) -> list[dict]:
    """Time each implementation in turn (default: the fast preset); a failure is recorded in its row, the rest
    still run."""
    cfg = tg.preset_config("fast") if cfg is None else cfg
    rows = []
    for name in impls:
        t0 = time.perf_counter()
        try:
            row = dict(IMPLS[name].measure(cfg, upstream_dir, steps=steps, warmup=warmup))
        except Exception as exc:  # noqa: BLE001 - a trainer that cannot run here is a result, not a crash
            row = {"error": f"{type(exc).__name__}: {exc}".replace("|", "/").splitlines()[0]}
        row.update(impl=name, load=os.getloadavg()[0], wall_s=time.perf_counter() - t0)
        print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'impl'})}", flush=True)
        rows.append(row)
    return add_ratios(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per implementation (e.g. 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (e.g. 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and OPENBLAS_NUM_THREADS (e.g. 1)")
    parser.add_argument("--impls", nargs="+", default=DEFAULT_IMPLS, choices=list(IMPLS),
                        help="which implementations to time, in order (default: the four)")
    parser.add_argument("--upstream-dir", type=Path, default=UPSTREAM_DIR, help="folder with upstream's scripts")
    parser.add_argument("--out", type=Path, default=None, help="optional JSON file for the rows")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # read when OpenBLAS loads (before mlx's first import)
    load_before = os.getloadavg()
    print(f"cpus:{os.cpu_count()} threads:{args.threads} steps:{args.steps} warmup:{args.warmup} "
          f"load_before:{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}", flush=True)
    rows = run(args.impls, steps=args.steps, warmup=args.warmup, upstream_dir=args.upstream_dir)
    load_after = os.getloadavg()
    print(f"load_after:{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    blas = None
    if any(IMPLS[n].backend == "mlx" for n in args.impls):
        blas = mlx_twin()[1].tag or "native"
    print(f"mlx_blas:{blas}\n" if blas else "", end="")
    print(format_table(rows))
    if args.out:
        meta = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "mlx_blas": blas,
                "load_before": load_before, "load_after": load_after, "versions": tg.library_versions()}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
