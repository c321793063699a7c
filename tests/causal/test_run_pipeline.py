"""run_pipeline.py: flag resolution, stage helpers, and (slow) the whole pipeline on a tiny corpus."""
from __future__ import annotations

import time

import pytest

from scripts.causal import report as rep
from scripts.causal import run_pipeline as rp
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import REPO_ROOT
from scripts.causal.core.schema import read_json
from scripts.causal.pipeline import cycle as st
from scripts.causal.pipeline.profiles import resolve_options


def _opts(argv, **kw):
    return rp.options_from_args(rp.build_parser().parse_args(argv), **kw)


def test_fast_defaults(tmp_path):
    o = _opts(["--fast", "--output-dir", str(tmp_path / "run")])
    assert (o.preset, o.backend, o.top_k, o.cycles, o.budget_minutes) == ("fast", "torch", 2, 1, 10.0)
    assert o.profile == "fast" and o.bootstrap == 30 and _opts(["--profile", "fast", "--output-dir", str(tmp_path)]).top_k == 2
    assert o.calibration == ("aa", "sanity_frozen_matrices") and o.seeds == (11, 12, 13, 14, 15)
    assert not set(o.seeds) & set(o.confirm_seeds)
    assert o.run_id == "run" and o.output_dir == str((tmp_path / "run").resolve())


def test_plain_defaults_and_overrides(tmp_path):
    o = _opts(["--preset", "tiny", "--seeds", "1,2,3", "--confirm-seeds", "7,8,9", "--interventions", "act_gelu",
               "--set", "iterations=6", "--output-dir", str(tmp_path)])
    assert (o.preset, o.seeds, o.confirm_seeds, o.interventions) == ("tiny", (1, 2, 3), (7, 8, 9), ("act_gelu",))
    assert o.calibration == ("aa",) and o.cycles == 3 and o.budget_minutes is None
    assert o.extra_overrides == {"iterations": "6"}


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "1,2,3", "--confirm-seeds", "3,4,5"], "overlap --seeds"),
    (["--seeds", "a,b"], "comma-separated integers"),
    (["--set", "iterations"], "KEY=VALUE"),
    (["--data-path", "x"], "go together"),
    (["--cycles", "0"], "--cycles 0"),
    (["--interventions", "aa,nope"], r"unknown \[.nope.\]"),
])
def test_bad_flags_name_the_flag(argv, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        _opts([*argv, "--output-dir", str(tmp_path)])


def test_profile_layers_defaults_profile_then_explicit_flags(tmp_path):
    assert resolve_options("fast", {})["top_k"] == 2 and resolve_options("default", {})["top_k"] == 3
    assert resolve_options("fast", {"top_k": 4, "cycles": None}) | {} == {**resolve_options("fast", {}), "top_k": 4}
    o = _opts(["--fast", "--top-k", "3", "--budget-minutes", "30", "--preset", "tiny", "--output-dir", str(tmp_path)])
    assert (o.top_k, o.budget_minutes, o.preset, o.cycles, o.calibration) == (3, 30.0, "tiny", 1,
                                                                              ("aa", "sanity_frozen_matrices"))
    with pytest.raises(ConfigError, match="contradicts --profile default"):
        _opts(["--fast", "--profile", "default", "--output-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="unknown pipeline option"):
        resolve_options("fast", {"nope": 1})


def test_resume_without_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "RESULTS_DIR", tmp_path)
    with pytest.raises(ConfigError, match="no earlier run"):
        _opts(["--fast", "--resume"])
    (tmp_path / "fast-torch-20260101-000000").mkdir()
    (tmp_path / "fast-torch-20260101-000000" / "pipeline_options.json").write_text("{}")
    assert _opts(["--fast", "--resume"]).run_id == "fast-torch-20260101-000000"


def test_cli_error_is_one_line(capsys):
    assert rp.main(["--seeds", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ConfigError" in err[0] and "--seeds" in err[0]


def test_choose_interventions_from_ranking():
    ranking = {"candidates": [{"name": "act_gelu+mlp_mult_3"}, {"name": "aa"}, {"name": "act_gelu"},
                              {"name": "not_in_registry"}, {"name": "mlp_mult_3"}, {"name": "ln_scale"}]}
    assert st.choose_interventions(ranking, top_k=2) == ["act_gelu", "mlp_mult_3"]
    assert st.choose_interventions(ranking, top_k=2, exclude=["act_gelu"]) == ["mlp_mult_3", "ln_scale"]
    assert st.choose_interventions(ranking, top_k=2, explicit=["x"]) == ["x"]
    assert st.choose_interventions(None, top_k=2) == []


def test_experiment_rows_and_winners():
    from scripts.causal.core.schema import RunRecord
    from scripts.causal.experiment_runner import build_plan

    plan = build_plan(interventions=["aa", "model_dim_up"], seeds=[1, 2], preset="tiny", screen_id="t")
    rec = dict(screen_id="t", backend="torch", config_hash="h")
    runs = [RunRecord(intervention="control", arm="control", seed=1, status="ok", val_bpb=2.0, **rec),
            RunRecord(intervention="aa", arm="treatment", seed=1, status="ok", val_bpb=2.0, **rec),
            RunRecord(intervention="model_dim_up", arm="treatment", seed=1, status="ok", val_bpb=1.9, **rec),
            RunRecord(intervention="model_dim_up", arm="treatment", seed=2, status="diverged", val_bpb=None, **rec)]
    from scripts.causal.experiment_runner import experiment_rows

    rows = experiment_rows(plan, runs)
    assert [(r["intervention"], r["feature"], r["value"], r["control_value"], r["val_bpb"]) for r in rows] == [
        ("control", None, None, None, 2.0), ("aa", None, None, None, 2.0), ("model_dim_up", "model_dim", 72, 64, 1.9)]
    abl = {"results": [{"intervention": "aa", "decision": "confirmed", "mean_delta_bpb": -0.1},
                       {"intervention": "a", "decision": "confirmed", "mean_delta_bpb": -0.01, "seeds": [1, 2, 3]},
                       {"intervention": "b", "decision": "inconclusive", "mean_delta_bpb": -0.01},
                       {"intervention": "c", "decision": "null", "mean_delta_bpb": -0.02}]}
    plan = st.confirmation_plan(abl, (101, 102, 103))
    assert plan.interventions == ("a",) and plan.seeds == (101, 102, 103)  # calibration arms are never confirmed
    assert st.confirmation_plan({"results": abl["results"][2:]}, (101, 102, 103)) is None
    with pytest.raises(ConfigError, match="already used by the screen"):
        st.confirmation_plan(abl, (3, 4, 5))


def test_clock_budget():
    c = st.Clock(None)
    assert c.fits(1e9)
    c = st.Clock(1.0)
    assert c.fits(30) and not c.fits(61)


@pytest.mark.slow
def test_end_to_end_tiny(tiny_corpus, tmp_path, monkeypatch):
    """The whole pipeline on the synthetic corpus with the tiny preset: every output exists and agrees."""
    monkeypatch.setattr(st, "SHARED_STORE", tmp_path / "store")
    matrix = tmp_path / "interventions.json"  # a private copy: the committed matrix may change meanwhile
    matrix.write_bytes((REPO_ROOT / "results" / "interventions.json").read_bytes())
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--seeds", "1,2,3", "--confirm-seeds", "101,102,103", "--top-k", "1",
            "--cycles", "1", "--bootstrap", "2", "--data-path", tiny_corpus.data_path,
            "--tokenizer-path", tiny_corpus.tokenizer_path, "--output-dir", str(out), "--quiet",
            "--matrix", str(matrix)]
    t0 = time.perf_counter()
    summary = rp.run_pipeline(_opts(argv), progress=False, command="test")
    first_s = time.perf_counter() - t0
    for name in ("report.md", "report.json", "ablation_results.json", "runs.json", "ledger.sqlite",
                 "plots/forest.png", "plots/dag.png", "dags/cycle_0/causal_dag.json", "dags/cycle_0/ranking.json",
                 "dags/cycle_0/identifiability.json", "dags/cycle_1/causal_dag.json", "dags/cycle_1/dag_diff.json"):
        assert (out / name).is_file(), name
    ablation = read_json(out / "ablation_results.json")
    report = read_json(out / "report.json")
    assert report["decisions"] == ablation["results"]
    cells = rep.parse_decision_table((out / "report.md").read_text())
    assert [c["intervention"] for c in cells] == [r["intervention"] for r in ablation["results"]]
    for cell, row in zip(cells, ablation["results"], strict=True):
        for field in ("n_pairs", "mean_delta_bpb", "ci_low", "ci_high", "p_improve", "p_adjusted", "decision"):
            want = row.get("label") or row[field] if field == "decision" else row[field]  # the decision in words
            assert cell[field] == rep.fmt(field, want)
    names = [r["intervention"] for r in ablation["results"]]
    assert names[-1] == "aa" and len(names) == 2  # the family first, calibration arms after it
    for name in names:
        assert (out / "plots" / f"loss_{name}.png").is_file()
    # DAG cycle 1 holds exactly the screen's ok runs as interventional rows, with their measured val_bpb
    runs = read_json(out / "runs.json")["runs"]
    ok = sorted((r["intervention"], r["seed"], r["val_bpb"]) for r in runs if r["status"] == "ok")
    rows = read_json(out / "dags" / "cycle_1" / "experiment_rows.json")["rows"]
    assert sorted((r["intervention"], r["seed"], r["val_bpb"]) for r in rows) == ok
    dag1 = read_json(out / "dags" / "cycle_1" / "causal_dag.json")
    assert dag1["preparation"]["n_experiment_rows"] == len(ok) == 7  # aa is one repeat run of seed 1
    assert set(dag1["experiments"]) == set(names)
    assert summary["wall_s"] > 0
    # resume: every run comes from the ledger, and the cached stages are reused
    t0 = time.perf_counter()
    rp.run_pipeline(_opts([*argv, "--resume"]), progress=False, command="test")
    resume_s = time.perf_counter() - t0
    log = (out / "pipeline.log").read_text()
    assert "0 runs executed, 7 reused" in log and "dag_cycle_1: inputs unchanged" in log
    assert resume_s < first_s


def test_promotion_stage_dry_run_diff(tmp_path):
    import math

    import train_gpt as tg
    from scripts.causal.core.paths import TRAIN_GPT
    from scripts.causal.core.schema import write_json
    from scripts.causal.pipeline.promotion import promotion_stage
    from scripts.causal.statistical_analysis import analyze

    before = TRAIN_GPT.read_text()
    runs = []
    for i, s in enumerate(range(11, 16)):
        c = 1.5 + 0.01 * i
        for name, arm, v in (("control", "control", c), ("act_gelu", "treatment", c - 0.006 + 1e-4 * (i % 2))):
            runs.append({"intervention": name, "arm": arm, "seed": s, "backend": "torch", "status": "ok",
                         "val_bpb": v, "post_quant_val_bpb": v, "val_loss": v * math.log(2) * 2.44})
    header = {"screen_id": "s1", "preset": "fast", "seeds": list(range(11, 16)), "interventions": ["act_gelu"],
              "alpha": 0.01, "margin_bpb": 0.0, "correction": "holm", "metric": "post_quant_val_bpb",
              "base_config": tg.preset_config("fast").to_dict(), "treatment_overrides": {"act_gelu":
                                                                                        {"activation": "gelu"}}}
    payload = analyze({"screen": header, "runs": runs})
    abl = write_json(tmp_path / "ablation_results.json", payload, schema_version=payload["schema_version"])
    logs = []
    promo = promotion_stage(["act_gelu"], abl, screen_id="s1", log=logs.append)
    assert promo["promoted"] == ["act_gelu"] and not promo["applied"]
    assert ("+    'activation': ('set', 'gelu'),  # tested on preset=fast backend=unknown stack=none "
            "base_overrides=none: 'relu2' -> 'gelu'; screen=s1") in promo["diff"]
    assert TRAIN_GPT.read_text() == before  # dry run: nothing written
    assert promotion_stage([], abl, screen_id="s1", log=logs.append)["promoted"] == []
    assert promotion_stage(["act_gelu"], abl, enabled=False)["promoted"] == []


def test_clock_charges_reused_runs():
    from types import SimpleNamespace

    c = st.Clock(1.0)
    old = SimpleNamespace(wall_s=50.0, finished_at=c.session_start - 100)
    new = SimpleNamespace(wall_s=50.0, finished_at=c.session_start + 1)
    c.credit_reused([old, new])
    assert c.credited_s == 50.0 and c.fits(5) and not c.fits(15)


def test_snippets_are_the_analysis_claim_lines_of_confirmed_changes():
    import numpy as np

    from scripts.causal.report import claim_snippets
    from scripts.causal.stats.claims import claim_lines

    pair = {"delta": np.array([-0.012, -0.010, -0.011]), "control": np.array([1.21, 1.22, 1.20]),
            "treatment": np.array([1.198, 1.21, 1.189])}
    decided = {"results": [{"intervention": "mlp_mult_3", "decision": "confirmed",
                            "claims": claim_lines(pair, bytes_per_token=2.44)},
                           {"intervention": "gelu", "decision": "null", "claims": None}]}
    (s,) = claim_snippets(decided)
    assert s["intervention"] == "mlp_mult_3" and "README rule" in s["text"] and "maintainers' practice" in s["text"]
    assert claim_snippets({"results": []}) == []


def test_small_png_downscales(tmp_path):
    from PIL import Image

    from scripts.causal.dag.render import small_png

    Image.new("RGB", (3000, 1000), "white").save(tmp_path / "big.png")
    out = small_png(tmp_path / "big.png", tmp_path / "small.png")
    with Image.open(out) as im:
        assert im.size == (1600, 533)
