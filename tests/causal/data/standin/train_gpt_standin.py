"""Stand-in for a record's train_gpt.py under torchrun (CPU, gloo): no model, the real launch and log path.

Configured only through env knobs, like upstream's Hyperparameters class. Every rank joins a gloo process
group and all-reduces its seed-derived "loss" (so a dead or hung rank blocks or kills the job as on GPUs);
rank 0 prints the final lines of one leaderboard log family (LOG_STYLE):

* upstream: final_int8_zlib_roundtrip(_exact), final_sliding_window_exact, final_int8_ttt_lora
* ours:     final_export_roundtrip(_exact) (EXPORT != int8) or final_int8_zlib_roundtrip, final_sliding, final_ttt
* int6:     final_int6_roundtrip_exact, final_int6_sliding_window_exact, legal_ttt_exact
* april:    pre-quantization post-ema, quantized, quantized_sliding_window, quantized_ttt_phased
* misc:     DIAGNOSTIC post_ema, final_int8_zlib_roundtrip_exact sliding ..., ttt_sliding:done val_loss=..

Scores are exact functions of the knobs: pre = 1.25 + seed noise - 0.01 (MLP_MULT 3); post = pre + 0.02
(int8) or + 0.015 (EXPORT=int6); sliding = post - 0.03; ttt = last stage - 0.01. FAIL_RANK=r makes rank r
exit 3 before the all-reduce; HANG_RANK=r makes rank r sleep forever.
"""
import os
import sys
import time

import torch
import torch.distributed as dist


class Hyperparameters:
    seed = int(os.environ.get("SEED", 1337))
    mlp_mult = int(os.environ.get("MLP_MULT", 2))
    export = os.environ.get("EXPORT", "int8")
    sliding = bool(int(os.environ.get("SLIDING", "0")))
    ttt = bool(int(os.environ.get("TTT", "0")))
    log_style = os.environ.get("LOG_STYLE", "upstream")
    fail_rank = int(os.environ.get("FAIL_RANK", -1))
    hang_rank = int(os.environ.get("HANG_RANK", -1))
    iterations = int(os.environ.get("ITERATIONS", 20))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")


def lines(a: Hyperparameters, pre: float) -> list[str]:
    post = pre + (0.015 if a.export == "int6" else 0.02)
    sw = post - 0.03
    ttt = (sw if a.sliding else post) - 0.01
    out = []
    st = a.log_style
    if st in ("upstream", "ours", "int6"):
        out.append(f"step:{a.iterations}/{a.iterations} val_loss:{pre * 1.7:.4f} val_bpb:{pre:.4f} train_time:5ms")
        tag = {"upstream": "int8_zlib", "int6": "int6"}.get(st, "int8_zlib" if a.export == "int8" else "export")
        out.append(f"final_{tag}_roundtrip val_loss:{post * 1.7:.4f} val_bpb:{post:.4f} eval_time:1ms")
        out.append(f"final_{tag}_roundtrip_exact val_loss:{post * 1.7:.8f} val_bpb:{post:.8f}")
        if a.sliding:
            out.append({"upstream": f"final_sliding_window_exact val_loss:{sw * 1.7:.8f} val_bpb:{sw:.8f}",
                        "ours": f"final_sliding val_loss:{sw * 1.7:.8f} val_bpb:{sw:.8f} eval_time:1ms",
                        "int6": f"final_int6_sliding_window_exact val_loss:{sw * 1.7:.8f} val_bpb:{sw:.8f}"}[st])
        if a.ttt:
            out.append({"upstream": f"final_int8_ttt_lora val_loss:{ttt * 1.7:.4f} val_bpb:{ttt:.4f} eval_time:1ms",
                        "ours": f"final_ttt val_loss:{ttt * 1.7:.8f} val_bpb:{ttt:.8f} eval_time:1ms",
                        "int6": f"legal_ttt_exact val_loss:{ttt * 1.7:.8f} val_bpb:{ttt:.8f} eval_time:1ms"}[st])
    elif st == "april":
        out.append(f"pre-quantization post-ema val_loss:{pre * 1.7:.8f} val_bpb:{pre:.8f} eval_time:1ms")
        out.append(f"quantized val_loss:{post * 1.7:.8f} val_bpb:{post:.8f} eval_time:1ms")
        if a.sliding:
            out.append(f"quantized_sliding_window val_loss:{sw * 1.7:.8f} val_bpb:{sw:.8f} eval_time:1ms")
        if a.ttt:
            out.append(f"quantized_ttt_phased val_loss:{ttt * 1.7:.8f} val_bpb:{ttt:.8f} eval_time:1ms")
    elif st == "misc":
        out.append(f"DIAGNOSTIC post_ema val_loss:{pre * 1.7:.4f} val_bpb:{pre:.4f} eval_time:1ms")
        out.append(f"final_int8_zlib_roundtrip_exact val_loss:{post * 1.7:.8f} val_bpb:{post:.8f}")
        if a.sliding:
            out.append(f"final_int8_zlib_roundtrip_exact sliding val_loss:{sw * 1.7:.8f} sliding val_bpb:{sw:.8f}")
        if a.ttt:
            out.append(f"ttt_sliding:done val_loss={ttt * 1.7:.6f} val_bpb={ttt:.6f} elapsed=1.0s")
    else:
        raise ValueError(f"LOG_STYLE={st!r} is not one of upstream, ours, int6, april, misc")
    return out


def main() -> int:
    a = Hyperparameters()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == a.fail_rank:
        print(f"rank {rank}: FAIL_RANK set, exiting with code 3", flush=True)
        sys.exit(3)
    if rank == a.hang_rank:
        print(f"rank {rank}: HANG_RANK set, sleeping", flush=True)
        while True:
            time.sleep(1)
    gen = torch.Generator().manual_seed(a.seed)
    noise = torch.rand(1, generator=gen) * 0.002
    total = noise.clone()
    dist.all_reduce(total)  # every rank took part, as a real job's gradient all-reduce
    pre = 1.25 + float(total.item()) / world - (0.01 if a.mlp_mult == 3 else 0.0)
    if rank == 0:
        print(f"world_size:{world} seed:{a.seed}")
        print(f"mlp_mult:{a.mlp_mult} export:{a.export} sliding:{int(a.sliding)} ttt:{int(a.ttt)}")
        for line in lines(a, pre):
            print(line, flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
