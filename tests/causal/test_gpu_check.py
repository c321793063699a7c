"""Tests for bench/gpu_check.py: the upstream ms/step scaling, rerun spread, paired deltas, log parsing, corpus
choice, and that one failing step is recorded while the others still run and the outputs are written."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gc(load_bench):
    return load_bench("gpu_check")


def test_one_gpu_reference_is_eight_times_upstreams_step_time(gc):
    cmp = gc.upstream_comparison(400.0, 524_288, gpus=1)
    assert cmp["tokens_per_gpu_vs_upstream"] == 8.0
    assert cmp["upstream_scaled_ms_per_step"] == pytest.approx(8 * 43.54)
    assert cmp["ratio_to_upstream"] == pytest.approx(400.0 / 348.32)
    assert cmp["tokens_per_s"] == pytest.approx(524_288 / 0.4)
    assert gc.upstream_comparison(43.54, 524_288, gpus=8)["ratio_to_upstream"] == pytest.approx(1.0)


def test_spread_reports_range_std_and_bit_identity(gc):
    same = gc.spread([1.25, 1.25, 1.25])
    assert same["bit_identical"] and same["max_minus_min"] == 0.0 and same["std"] == 0.0
    diff = gc.spread([1.0, 1.5, 2.0])
    assert not diff["bit_identical"] and diff["max_minus_min"] == 1.0 and diff["std"] == pytest.approx(0.5)
    assert gc.spread([1.0])["std"] is None
    assert not gc.spread([1.0, float("nan")])["bit_identical"]


def test_paired_deltas_are_per_seed_treatment_minus_control(gc):
    out = gc.paired_deltas({"control": {1: 2.0, 2: 3.0}, "arm": {1: 1.5, 2: 3.5}})
    assert out == {"arm": {"per_seed": {1: -0.5, 2: 0.5}, "mean": 0.0}}


def test_parse_log_extras_reads_upstreams_lines(gc):
    text = ("sdp_backends:cudnn=False flash=True mem_efficient=False math=False\n"
            "step:100/200 train_loss:2.0 train_time:35000ms step_avg:350.00ms\n"
            "step:200/200 val_loss:2.06 val_bpb:1.2172 train_time:69000ms step_avg:345.12ms\n"
            "peak memory allocated: 10184 MiB reserved: 10200 MiB\n")
    got = gc.parse_log_extras(text)
    assert got == {"ms_per_step": 345.12, "peak_allocated_mib": 10184, "peak_reserved_mib": 10200,
                   "sdp_backends": "sdp_backends:cudnn=False flash=True mem_efficient=False math=False"}
    assert gc.parse_log_extras("")["ms_per_step"] is None


def _fineweb_layout(tiny_corpus, root: Path) -> Path:
    data = root / "data"
    (data / "datasets" / "fineweb10B_sp1024").mkdir(parents=True)
    (data / "tokenizers").mkdir()
    for f in Path(tiny_corpus.data_path).glob("fineweb_*.bin"):
        shutil.copy(f, data / "datasets" / "fineweb10B_sp1024" / f.name)
    shutil.copy(tiny_corpus.tokenizer_path, data / "tokenizers" / "fineweb_1024_bpe.model")
    return data


def test_fineweb_is_preferred_and_sliced_for_the_small_steps(gc, tiny_corpus, tmp_path):
    import train_gpt as tg

    lines: list[str] = []
    corpus = gc.find_corpus(_fineweb_layout(tiny_corpus, tmp_path), tmp_path / "out", lines.append)
    assert corpus.name == "fineweb10B_sp1024" and "FineWeb shards" in lines[0]
    small = gc.small_corpus(corpus, tmp_path / "out", lines.append)
    val = tg.load_data_shard(Path(small.data_path) / "fineweb_val_000000.bin")
    full_val = tg.load_data_shard(next(Path(corpus.data_path).glob("fineweb_val_*.bin")))
    assert val.size == min(131_072, full_val.size) and (val == full_val[: val.size]).all()
    assert small.tokenizer_path == corpus.tokenizer_path


def test_a_failing_step_is_recorded_and_the_others_still_run(gc, tiny_corpus, tmp_path, monkeypatch):
    calls: list[str] = []

    def ok(ctx):
        calls.append("ok")
        return {"cpu_fp32_val_bpb": 1.5, "cpu_val_bpb": 1.5, "difference": 0.0}

    def boom(ctx):
        calls.append("boom")
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gc.STEP_FUNCS, "torchrun", boom)
    monkeypatch.setitem(gc.STEP_FUNCS, "cpu_vs_cuda", ok)
    plan = gc.Plan.dry_run(2)
    report = gc.run_check(tmp_path / "out", plan, ("torchrun", "cpu_vs_cuda"), budget_s=600,
                          data_dir=_fineweb_layout(tiny_corpus, tmp_path))
    assert calls == ["boom", "ok"]
    assert report["steps"]["torchrun"]["status"] == "failed"
    assert "planted failure" in report["steps"]["torchrun"]["error"]
    assert report["steps"]["cpu_vs_cuda"]["status"] == "ok"
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["schema_version"] == gc.SCHEMA_VERSION and saved["corpus"] == "fineweb10B_sp1024"
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| torchrun | failed |" in md and "RuntimeError: planted failure" in md
    assert "| cpu_vs_cuda | ok |" in md and "difference=0" in md
    assert "Traceback" in (tmp_path / "out" / "gpu_check.log").read_text()


def test_steps_after_the_budget_are_skipped(gc, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(gc.STEP_FUNCS, "rerun", lambda ctx: pytest.fail("should have been skipped"))
    report = gc.run_check(tmp_path / "out", gc.Plan.dry_run(2), ("rerun",), budget_s=-1.0,
                          data_dir=_fineweb_layout(tiny_corpus, tmp_path))
    assert report["steps"]["rerun"]["status"] == "skipped"


def test_cpu_dry_run_rejects_unknown_steps(gc):
    with pytest.raises(SystemExit):
        gc.main(["--cpu-dry-run", "--steps", "baseline,nope"])


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(gc, tiny_corpus, tmp_path):
    """Every real step at tiny sizes on CPU: torchrun child, in-process screen, reruns bit-identical on CPU."""
    report = gc.run_check(tmp_path / "out", gc.Plan.dry_run(2), gc.STEPS, budget_s=3600,
                          data_dir=_fineweb_layout(tiny_corpus, tmp_path))
    assert {name: s["status"] for name, s in report["steps"].items()} == dict.fromkeys(gc.STEPS, "ok")
    steps = report["steps"]
    assert steps["baseline"]["numbers"]["val_bpb"] == pytest.approx(steps["torchrun"]["numbers"]["val_bpb"], abs=1e-4)
    assert steps["cpu_vs_cuda"]["numbers"]["difference"] == 0.0
    assert steps["rerun"]["numbers"]["bit_identical"]
    assert math.isfinite(steps["screen"]["numbers"]["deltas"]["leaky_relu2"]["mean"])


@pytest.mark.slow
def test_script_screen_and_import_steps_on_the_cpu_stand_in(gc, tiny_corpus, tmp_path):
    """The GPU check's --train-script screen (2 arms x 2 seeds, torchrun, gloo 2 ranks on CPU with the stand-in
    record script) and the import of the logs it wrote: paired by seed, same scores as the screen recorded."""
    report = gc.run_check(tmp_path / "out", gc.Plan.dry_run(2), ("script_screen", "import"), budget_s=3600,
                          data_dir=_fineweb_layout(tiny_corpus, tmp_path))
    screen, imp = report["steps"]["script_screen"], report["steps"]["import"]
    assert screen["status"] == "ok", screen.get("error")
    deltas = screen["numbers"]["deltas"]["mlp_mult_3"]["per_seed"]
    assert all(d == pytest.approx(-0.01, abs=1e-7) for d in deltas.values())  # the stand-in's MLP_MULT=3 effect
    assert imp["status"] == "ok", imp.get("error")
    assert imp["numbers"]["pairing"] == "paired by seed" and imp["numbers"]["scores_equal_screen"] is True
    assert imp["numbers"]["runs"] == 4
