"""Issue 21: the gate, closed against choices made after the data. One test (or more) per item of the issue; each
fails on the commit before the change (95c7143) and passes after it. Runs are synthetic rows with a runner-style
header (base_config, treatment_overrides), so nothing trains."""
from __future__ import annotations

import math
import shutil

import pytest

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.paths import TRAIN_GPT
from scripts.causal.promote import load_module, promote, promotion_entries
from scripts.causal.screen.ledger import Ledger
from scripts.causal.screen.registry import list_interventions, resolve_overrides
from scripts.causal.stats.analysis import analyze
from scripts.causal.stats.pairing import paired_deltas

C = [1.50, 1.52, 1.49, 1.51, 1.50, 1.53, 1.48, 1.52, 1.51, 1.50]
NOISE = [0.0004, -0.0003, 0.0002, 0.0, -0.0002, 0.0001, -0.0001, 0.0003, -0.0004, 0.00015]
BPT = 2.44
REGISTERED = {iv.name for iv in list_interventions()}


def _row(name, arm, seed, v, **extra):
    return {"intervention": name, "arm": arm, "seed": seed, "backend": "torch", "status": "ok", "val_bpb": v,
            "post_quant_val_bpb": v, "val_loss": v * math.log(2) * BPT, **extra}


def screen(effects, *, seeds=(11, 12, 13, 14, 15), preset="fast", metric="post_quant_val_bpb", extra=None,
           stage_of=None, drop=()):
    """runs.json payload: control + each treatment (control + effect + small noise) on every seed. ``stage_of``:
    {arm: field} also written (sliding/ttt scores); ``drop``: (arm, seed) rows left out altogether."""
    base = tg.preset_config(preset).to_dict()
    tested = {n: resolve_overrides(n, tg.preset_config(preset)) if n in REGISTERED else {} for n in effects}
    runs = []
    for i, s in enumerate(seeds):
        c = C[i]
        if ("control", s) not in drop:
            runs.append(_row("control", "control", s, c, **({"sliding_val_bpb": c - 0.01, "ttt_val_bpb": c - 0.02}
                                                            if stage_of else {})))
        for j, (name, eff) in enumerate(effects.items()):
            if (name, s) in drop:
                continue
            v = c if name == "aa" else c + eff + NOISE[(i + 3 * j) % len(NOISE)]
            row = _row(name, "treatment", s, v)
            if stage_of and name in stage_of:  # an evaluation change: training and round trip equal the control's
                row.update(val_bpb=c, post_quant_val_bpb=c, val_loss=c * math.log(2) * BPT, **{stage_of[name]: v})
            runs.append(row)
    header = {"screen_id": "s21", "preset": preset, "backend": "torch", "seeds": list(seeds),
              "interventions": list(effects), "base_config": base, "treatment_overrides": tested, "alpha": 0.01,
              "margin_bpb": 0.0, "correction": "holm", "metric": metric, "effect_bpb": None, "aa_mode": "repeat",
              "sequential": None, "stack": None, **(extra or {})}
    return {"schema_version": 1, "screen": header, "runs": runs}


def by_name(payload):
    return {r["intervention"]: r for r in payload["results"]}


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "train_gpt.py"
    shutil.copy(TRAIN_GPT, dst)
    shutil.copy(TRAIN_GPT.with_name("train_gpt_mlx.py"), tmp_path / "train_gpt_mlx.py")
    return dst


# --- item 1: the metric follows the change; zero variance is stated, never p = 0 ----------------------------


def test_item1_metric_blind_to_an_evaluation_only_arm_is_refused_with_the_stage_to_use():
    runs = screen({"ttt_full": -0.003, "mlp_mult_3": -0.02}, stage_of={"ttt_full": "ttt_val_bpb"})
    with pytest.raises(ConfigError, match=r"arm 'ttt_full' changes only the evaluation .*scored on ttt_val_bpb; "
                                          r"metric 'post_quant_val_bpb' cannot see it.*--metric final_val_bpb"):
        analyze(runs)
    ok = analyze(screen({"ttt_full": -0.003, "mlp_mult_3": -0.02}, stage_of={"ttt_full": "ttt_val_bpb"},
                        metric="final_val_bpb"))
    r = by_name(ok)["ttt_full"]
    # ttt_full is scored after TTT, its control (TTT off) on the round trip: the change is visible
    assert r["scored_stage"] == "ttt_val_bpb" and r["mean_delta_bpb"] == pytest.approx(-0.003, abs=5e-4)
    # the runner refuses it at registration, and its CLI default is the scored stage
    from scripts.causal import experiment_runner as er

    with pytest.raises(ConfigError, match="sliding_eval"):
        er.build_plan(interventions=["sliding_eval"], seeds="1,2,3", preset="tiny")
    assert er.build_parser().parse_args([]).metric == "final_val_bpb"


def test_item1_zero_variance_pairs_get_words_not_a_p_of_zero():
    runs = screen({"x": 0.0})
    for r in runs["runs"]:
        if r["arm"] == "treatment":
            c = next(c for c in runs["runs"] if c["arm"] == "control" and c["seed"] == r["seed"])
            r.update(val_bpb=c["val_bpb"], post_quant_val_bpb=c["post_quant_val_bpb"], val_loss=c["val_loss"])
    r = by_name(analyze(runs, interventions=["x"], exploratory=True))["x"]
    assert r["p_null"] is None and r["p_improve"] is None and r["zero_variance"]
    assert r["decision"] == "inconclusive" and "all 5 pairs equal: Δ = +0 bpb exactly, no variance; no test" in r["reason"]


# --- item 2: the effect of interest is registered by default ----------------------------------------------


def test_item2_effect_chosen_at_analysis_is_a_deviation_and_said_so():
    runs = screen({"x": -0.02, "y": 0.0})
    with pytest.raises(ConfigError, match="effect_bpb: registered None, requested 0.02"):
        analyze(runs, effect_bpb=0.02)
    out = analyze(runs, effect_bpb=0.02, exploratory=True)
    assert out["exploratory"] and out["effect"]["registered"] is False
    assert "NOT pre-registered (chosen at analysis)" in out["effect"]["name"]
    assert "pre-registered" in analyze(runs)["effect"]["name"] and analyze(runs)["effect"]["registered"]


# --- item 3: pooling is part of the pre-registration -------------------------------------------------------


def test_item3_pool_aa_needs_registration():
    runs = screen({"x": -0.004, "aa": 0.0}, extra={"aa_mode": "arm"})
    for r in runs["runs"]:  # a backend that is not bit-reproducible: the A/A arm carries noise
        if r["intervention"] == "aa":
            r["post_quant_val_bpb"] += 0.001 * (r["seed"] % 3 - 1)
    with pytest.raises(ConfigError, match="pool_aa: registered False, requested True"):
        analyze(runs, pool_aa=True)
    assert analyze(runs, pool_aa=True, exploratory=True)["exploratory"]
    registered = {**runs, "screen": {**runs["screen"], "pool_aa": True}}
    out = analyze(registered)
    assert not out["exploratory"] and by_name(out)["x"]["sigma_source"].startswith("pooled_aa")


# --- item 4: a dropped seed makes the analysis exploratory ---------------------------------------------------


def test_item4_missing_registered_seed_is_a_deviation_and_blocks_promotion(copy):
    runs = screen({"qk_gain_4": -0.02}, drop={("control", 15), ("qk_gain_4", 15)})
    out = analyze(runs)
    assert out["exploratory"]
    dev = out["preregistration"]["deviations"]
    assert any(d["field"] == "seeds" and "no control run on registered seeds [15]" in d["used"] for d in dev)
    with pytest.raises(ConfigError, match="the analysis was exploratory"):
        promote(out, train_gpt=copy)
    one_arm = analyze(screen({"qk_gain_4": -0.02, "y": 0.0}, drop={("y", 12)}))
    assert one_arm["exploratory"] and "arm 'y' has no run on registered seeds [12]" in str(
        one_arm["preregistration"]["deviations"])


# --- item 5: the sequential design, the stack and the ledger copy -------------------------------------------


def test_item5_registered_sequential_design_decides_not_fixed_n_holm():
    seeds = tuple(range(1, 11))
    runs = screen({"x": -0.05}, seeds=seeds, extra={"sequential": {"n0": 3, "step": 1, "futility_effect_sd": None}})
    runs["runs"] = [r for r in runs["runs"] if r["seed"] <= 5]  # x crossed at look n=5 (OBF spends ~0 before)
    out = analyze(runs)
    assert out["correction"] == "group_sequential_bonferroni" and not out["exploratory"]
    assert by_name(out)["x"]["decision"] == "confirmed" and by_name(out)["x"]["sequential"]["look"] == 5
    assert out["family_size"] == 2 and "descriptive only" in out["note"]
    # item 9: the report says what decided (not "Holm"), and renders the note
    from scripts.causal import report as rep

    test = {k: out.get(k) for k in ("alpha", "correction", "family", "family_size", "family_tests", "note",
                                    "sequential_design")}
    assert "(Bonferroni)" in rep.error_control(test) and "descriptive only" in rep.error_control(test)
    assert "group-sequential looks from n0 = 3 to n_max = 10 seeds" in rep.test_sentence(test)
    assert "no null call" in rep.test_sentence(test) and "Holm" not in rep.test_sentence(test)


def test_item5_edited_header_is_detected_against_the_ledger(tmp_path):
    runs = screen({"x": -0.02, "y": 0.0})
    prereg = {k: v for k, v in runs["screen"].items() if k not in ("screen_id", "treatment_overrides")}
    prereg["interventions"] = [{"name": n, "overrides": runs["screen"]["treatment_overrides"].get(n, {})}
                               for n in runs["screen"]["interventions"]]
    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.register_screen("s21", prereg)
    assert not analyze(runs, ledger=tmp_path / "ledger.sqlite")["exploratory"]
    runs["screen"]["alpha"] = 0.05  # edited after the data
    runs["screen"]["base_config"]["iterations"] += 1
    out = analyze(runs, ledger=tmp_path / "ledger.sqlite")
    fields = {d["field"] for d in out["preregistration"]["deviations"]}
    assert out["exploratory"] and {"alpha", "base_config"} <= fields


# --- item 6: a failed calibration blocks promotion ------------------------------------------------------------


def test_item6_failed_calibration_blocks_promotion(copy):
    out = analyze(screen({"qk_gain_4": -0.02, "sanity_frozen_matrices": 0.0}))
    assert out["calibration"]["sanity_frozen_matrices"]["passed"] is False
    with pytest.raises(ConfigError, match=r"calibration failed \(sanity_frozen_matrices"):
        promote(out, train_gpt=copy, interventions=["qk_gain_4"])


# --- item 7: promotion records exactly what was tested ---------------------------------------------------------


def test_item7_changes_confirmed_alone_are_not_promoted_together(copy):
    out = analyze(screen({"qk_gain_4": -0.02, "muoneq_r": -0.02}))
    with pytest.raises(ConfigError, match="each was confirmed alone"):
        promote(out, train_gpt=copy)
    diff = promote(out, train_gpt=copy, interventions=["qk_gain_4"], check_budget=False)
    assert "tested on preset=fast backend=torch stack=none base_overrides=none" in diff and "screen=s21" in diff


def test_item7_stack_screen_is_refused(copy):
    out = analyze(screen({"qk_gain_4": -0.02}, extra={"stack": "11l_ema_leaky"}))
    with pytest.raises(ConfigError, match="tested on the stack '11l_ema_leaky'.*a context never tested"):
        promote(out, train_gpt=copy)


def test_item7_depth_relative_knob_stays_relative(copy):
    out = analyze(screen({"parallel_residuals": -0.02}))
    (entry,) = promotion_entries(out)
    assert entry["rule"] == ("depth", 0.75)  # layer 3 of 4 on fast; main wrote ("add", 3)
    promote(out, train_gpt=copy, apply=True, check_budget=False)
    mod = load_module(copy)
    assert mod.preset_config("fast").parallel_start_layer == 3  # the tested value
    assert mod.preset_config("baseline").parallel_start_layer == 7  # 9 layers: decoder half (>= 5), not 3
    assert mod.Hyperparameters().parallel_start_layer == 7
    for name in mod.PRESETS:  # the same fraction of every preset's depth
        n = mod.preset_config(name).num_layers
        assert mod.preset_config(name).parallel_start_layer == min(n - 1, int(0.75 * n + 0.5))


# --- item 8: a missing or NaN scored stage fails the run ------------------------------------------------------


def test_item8_nan_scored_stage_is_a_failed_run_not_an_earlier_stage():
    runs = screen({"ttt_full": -0.004}, stage_of={"ttt_full": "ttt_val_bpb"}, metric="final_val_bpb")
    for r in runs["runs"]:
        if r["seed"] == 12 and r["arm"] == "treatment":
            r["ttt_val_bpb"] = float("nan")
        if r["seed"] == 13 and r["arm"] == "control":
            r["sliding_val_bpb"] = None  # the control is scored on the round trip: unaffected
    p = paired_deltas(runs, metric="final_val_bpb")["ttt_full"]
    assert p["stage"] == "ttt_val_bpb" and p["seeds"] == [11, 13, 14, 15] and p["n_failed"] == 1
    assert p["failed_pairs"][0]["arm"] == "treatment" and "ttt_val_bpb" in p["failed_pairs"][0]["error"]
    r = by_name(analyze(runs))["ttt_full"]
    assert r["n_failed"] == 1 and r["failed_treatment_seeds"] == [12] and r["decision"] != "confirmed"


def test_item8_runner_marks_a_nan_scored_stage_as_not_ok():
    from scripts.causal import experiment_runner as er
    from scripts.causal.screen.plan import GridCell

    cfg = tg.preset_config("tiny", ttt="full", ttt_chunk_tokens=4 * tg.preset_config("tiny").train_seq_len)
    res = tg.RunResult(status="ok", backend="torch", val_loss=3.0, val_bpb=1.5, post_quant_val_loss=3.0,
                       post_quant_val_bpb=1.5, ttt_val_bpb=float("nan"), config=cfg.to_dict(),
                       config_hash=tg.config_hash(cfg), seed=cfg.seed, versions={})
    rec = er.to_record(res, screen_id="s", cell=GridCell(0, "ttt_full", "treatment", cfg.seed, {}), planned=cfg,
                       expected_hash="h", commit=None, executor="test")
    assert rec.status == "diverged" and "scored stage ttt_val_bpb is not finite" in rec.error


# --- item 9: words that match the verdict ---------------------------------------------------------------------


def test_item9_labels_and_aa_repeat_wording():
    out = analyze(screen({"x": 0.0001, "aa": 0.0}))
    x, aa = by_name(out)["x"], by_name(out)["aa"]
    assert x["decision"] == "null" and x["label"] == "null: no gain of the effect; leans harmful (not significant)"
    assert aa["decision"] == "determinism_check" and aa["label"] == "bit-identical repeat"
    assert "determinism check, not a test of the noise" in aa["reason"]


# --- item 10: significant, but below the bar -----------------------------------------------------------------


def test_item10_confirmed_below_the_effect_is_labelled_and_not_promoted_by_default(copy):
    out = analyze(screen({"qk_gain_4": -0.001}))
    r = by_name(out)["qk_gain_4"]
    assert r["decision"] == "confirmed" and r["label"] == "confirmed: real, but below the record bar"
    with pytest.raises(ConfigError, match=r"real, but below the record bar \(mean gain 0.00\d+ bpb < effect"):
        promote(out, train_gpt=copy)
    assert "qk_gain_init" in promote(out, train_gpt=copy, check_budget=False, allow_below_bar=True)


# --- item 11: the 16 MB cap is part of the decision -----------------------------------------------------------


def test_item11_promotion_refuses_a_change_over_the_cap_naming_the_bytes(copy):
    out = analyze(screen({"mlp_mult_4": -0.02}))
    with pytest.raises(ConfigError, match=r"at preset baseline its artifact is estimated at 2\d,\d{3},\d{3} bytes "
                                          r"\(model .* \+ code .*\), over the 16,000,000-byte cap"):
        promote(out, train_gpt=copy)


def test_item11_report_shows_each_arms_bytes_at_the_preset_and_the_target():
    from scripts.causal.report import budget_lines
    from scripts.causal.screen.target_budget import arm_budgets

    runs = screen({"mlp_mult_4": -0.02})
    for r in runs["runs"]:
        r["artifact_bytes"] = 1_000_000 if r["arm"] == "control" else 1_400_000
    b = arm_budgets(runs["screen"], runs["runs"], ["mlp_mult_4"])
    assert b["control"]["preset_bytes"] == 1_000_000 and b["arms"]["mlp_mult_4"]["preset_bytes"] == 1_400_000
    assert b["arms"]["mlp_mult_4"]["target"]["status"] == "over" and b["target"] == "preset baseline"
    assert b["arms"]["mlp_mult_4"]["target"]["bytes"] > b["control"]["target"]["bytes"] + 5_000_000
    text = "\n".join(budget_lines(b))
    assert "| mlp_mult_4 | 1,400,000 | " in text and "| over |" in text


# --- item 12: one error-control statement ---------------------------------------------------------------------


def test_item12_one_family_and_one_statement():
    from scripts.causal.report import error_control

    out = analyze(screen({"x": -0.02, "y": 0.0}))
    assert out["family_size"] == 6 and out["power_alpha"] == pytest.approx(0.01 / 6)
    test = {k: out.get(k) for k in ("alpha", "correction", "family", "family_size", "family_tests")}
    assert "one Holm family of K = 6 one-sided tests (2 arms x improvement, harm and non-superiority)" in \
        error_control(test) and "at most α = 0.01" in error_control(test)
    old = {**test, "family_tests": None, "family_size": 4}  # a main-era payload: two families, said so
    assert "2α = 0.02" in error_control(old)
