"""Tests for scripts/causal/horizon (Δ along the horizon, the horizon-unstable flag, the H100-sign predictors)
and scripts/causal/horizon_curves.py, on synthetic branched-cooldown runs with known numbers."""
from __future__ import annotations

import json
import math

import pytest

import train_gpt as tg
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import CalibrationItem
from scripts.causal.horizon.curves import delta_curves, horizon_rows, horizons_of, stability
from scripts.causal.horizon.predict import candidate_values, loo_choice, predictor_table
from scripts.causal.horizon.render import horizon_lines

HS = (100, 200, 400)
CONTROL = {1: (3.00, 2.50, 2.20), 2: (3.01, 2.52, 2.21), 3: (2.99, 2.49, 2.19)}
# per-seed Δ at each horizon
DELTAS = {
    "flipper": {1: (-0.050, -0.010, 0.010), 2: (-0.052, -0.012, 0.012), 3: (-0.049, -0.011, 0.011)},
    "mover": {1: (-0.010, -0.020, -0.040), 2: (-0.011, -0.021, -0.042), 3: (-0.009, -0.019, -0.041)},
    "steady": {1: (-0.020, -0.020, -0.020), 2: (-0.021, -0.022, -0.020), 3: (-0.019, -0.018, -0.021)},
}


def _row(name: str, seed: int, values, config=None) -> dict:
    hm = {str(h): {"steps": h, "branch_step": h // 2, "status": "ok", "val_bpb": v, "post_quant_val_bpb": v}
          for h, v in zip(HS, values, strict=True)}
    return {"intervention": name, "arm": "control" if name == "control" else "treatment", "seed": seed,
            "backend": "torch", "status": "ok", "val_bpb": values[-1], "post_quant_val_bpb": values[-1],
            "steps": HS[-1], "config": config or {}, "horizon_metrics": hm}


def runs_payload(config=None) -> dict:
    rows = [_row("control", s, v, config) for s, v in CONTROL.items()]
    for name, per_seed in DELTAS.items():
        rows += [_row(name, s, [c + d for c, d in zip(CONTROL[s], per_seed[s], strict=True)], config) for s in CONTROL]
    return {"schema_version": 1, "runs": rows}


def test_horizon_rows_take_each_horizons_scored_fields():
    rows = horizon_rows(runs_payload(), 200)
    ctrl = next(r for r in rows if r["intervention"] == "control" and r["seed"] == 2)
    assert ctrl["post_quant_val_bpb"] == 2.52 and ctrl["steps"] == 200 and "horizon_metrics" not in ctrl
    assert horizons_of(runs_payload()) == list(HS)


def test_runs_without_horizons_are_refused_naming_the_flag():
    bad = runs_payload()
    bad["runs"][0] = {**bad["runs"][0], "horizon_metrics": {}}
    with pytest.raises(DataFormatError, match="control/seed 1 has no horizon_metrics.*horizons=H1/H2"):
        horizons_of(bad)


def test_delta_curves_give_each_horizon_its_paired_delta_and_t_interval():
    curves = delta_curves(runs_payload())
    p = curves["mover"][2]
    assert p["horizon"] == 400 and p["n_pairs"] == 3
    assert p["mean_delta_bpb"] == pytest.approx(-0.041, abs=1e-9)
    # exact t: sd of (-0.040, -0.042, -0.041) = 0.001, se = 0.001/sqrt(3), t_{0.975,2} = 4.3027
    assert p["ci_high"] - p["mean_delta_bpb"] == pytest.approx(4.302653 * 0.001 / 3 ** 0.5, rel=1e-4)


def test_stability_flags_a_sign_flip_and_a_moving_delta_but_not_a_steady_one():
    curves = delta_curves(runs_payload())
    flip, mover, steady = (stability(curves[n]) for n in ("flipper", "mover", "steady"))
    assert flip["unstable"] and flip["sign_flip"] and "CI at 100 steps excludes 0" in flip["reason"]
    assert mover["unstable"] and mover["moving"] and not mover["sign_flip"]
    assert mover["drift"] == pytest.approx(-0.021, abs=1e-9) and mover["drift_p"] < 0.05
    assert steady["unstable"] is False and steady["drift_p"] > 0.05 and steady["reason"].startswith("stable")


def test_stability_is_unmeasured_below_three_pairs():
    payload = runs_payload()
    payload["runs"] = [r for r in payload["runs"] if r["seed"] != 3]
    assert stability(delta_curves(payload)["mover"])["unstable"] is None


def _item(name: str, klass: str, delta: float) -> CalibrationItem:
    return CalibrationItem(intervention=name, transfer_class=klass, feature="", record_id=f"r_{name}_{delta}",
                           change="", h100_delta=delta, metric="post_quant", n_seeds=3, hardware="8xH100")


def test_candidates_extrapolate_in_log_tokens_per_parameter():
    curve = delta_curves(runs_payload())["flipper"]
    tpp = {100: 1.0, 200: 2.0, 400: 4.0}
    v = candidate_values(curve, tpp, target_tpp=16.0)
    assert v["h=100"] == pytest.approx(-0.0503333, abs=1e-6) and v["longest"] == v["h=400"]
    # last two points: -0.011 at log 2, +0.011 at log 4 -> slope 0.022 per doubling; two more doublings: +0.055
    assert v["trend_last2"] == pytest.approx(0.011 + 2 * 0.022, abs=1e-6)


def test_loo_choice_scores_each_intervention_with_the_predictor_chosen_on_the_others():
    values = {"a": {"longest": -0.01, "h=100": 0.02}, "b": {"longest": -0.02, "h=100": 0.01},
              "c": {"longest": 0.01, "h=100": 0.03}}
    rows = [_item("a", "architecture", -0.01), _item("b", "architecture", -0.03), _item("c", "architecture", 0.02)]
    loo = loo_choice(rows, values)
    assert loo["picks"] == {"a": "longest", "b": "longest", "c": "longest"} and (loo["k"], loo["n"]) == (3, 3)
    assert loo["ci"][0] == pytest.approx(0.2924, abs=1e-3)  # Clopper-Pearson 95% lower bound for 3/3
    single = loo_choice(rows[:1], values)
    assert single["choice_possible"] is False and single["picks"] == {"a": "longest"}


def test_predictor_table_lists_unscreened_interventions_and_small_rows():
    items = [_item("a", "architecture", -0.01), _item("x", "evaluation", -0.03), _item("a", "architecture", 0.001)]
    table = predictor_table(items, {"a": {"longest": -0.005}})
    assert table["architecture"]["n_decisive"] == 1 and table["architecture"]["candidates"]["longest"]["k"] == 1
    assert table["evaluation"]["unscreened"] == ["x"] and table["evaluation"]["loo"]["n"] == 0


def test_build_and_report_lines_show_the_flag_and_the_predictor_table():
    from scripts.causal.horizon_curves import build

    cfg = tg.preset_config("tiny").to_dict()
    items = [_item("flipper", "architecture", 0.02), _item("mover", "architecture", -0.03),
             _item("steady", "optimizer_schedule", -0.01)]
    block = build(runs_payload(cfg), items, target_tpp=400.0, source="runs.json", plot="plots/horizon.png")
    assert block["stability"]["flipper"]["unstable"] and block["n_seeds"] == 3
    assert block["tokens_per_param"][1] == pytest.approx(2 * block["tokens_per_param"][0])
    text = "\n".join(horizon_lines(json.loads(json.dumps(block))))
    assert "| `flipper` |" in text and "**horizon-unstable**" in text and "LOO-chosen" in text
    assert "optimizer_schedule:" in text and "not to be trusted" in text


def _screen_with_horizons(early: float, final: float) -> dict:
    """A schema-1 runs.json of mlp_mult_3 on fast, 5 seeds, whose Δ is ``early`` at 60 steps and ``final`` at 120."""
    from scripts.causal.screen.registry import resolve_overrides

    base, noise = [1.50, 1.52, 1.49, 1.51, 1.50], [0.0004, -0.0003, 0.0002, 0.0, -0.0002]
    seeds = (11, 12, 13, 14, 15)
    runs = []
    for s, c, e in zip(seeds, base, noise, strict=True):
        for name, arm, d in (("control", "control", (0.0, 0.0)), ("mlp_mult_3", "treatment", (early, final))):
            hm = {"60": {"steps": 60, "status": "ok", "post_quant_val_bpb": c + 0.3 + d[0] + e, "val_bpb": c + 0.3},
                  "120": {"steps": 120, "status": "ok", "post_quant_val_bpb": c + d[1] + e, "val_bpb": c}}
            if arm == "control":
                hm = {h: {**v, "post_quant_val_bpb": v["post_quant_val_bpb"] - e} for h, v in hm.items()}
            runs.append({"intervention": name, "arm": arm, "seed": s, "backend": "torch", "status": "ok",
                         "val_bpb": c, "val_loss": c * math.log(2) * 2.44,
                         "post_quant_val_bpb": hm["120"]["post_quant_val_bpb"], "horizon_metrics": hm})
    header = {"screen_id": "h1", "preset": "fast", "backend": "torch", "seeds": list(seeds),
              "interventions": ["mlp_mult_3"], "base_config": tg.preset_config("fast").to_dict(),
              "treatment_overrides": {"mlp_mult_3": resolve_overrides("mlp_mult_3", tg.preset_config("fast"))},
              "alpha": 0.01, "margin_bpb": 0.0, "correction": "holm", "metric": "post_quant_val_bpb"}
    return {"schema_version": 1, "screen": header, "runs": runs}


def test_a_horizon_unstable_change_is_confirmed_by_the_gate_but_never_promoted():
    from scripts.causal.core.errors import ConfigError
    from scripts.causal.promote import check_promotable
    from scripts.causal.statistical_analysis import analyze

    flips = analyze(_screen_with_horizons(early=+0.03, final=-0.02))
    row = flips["results"][0]
    assert row["decision"] == "confirmed" and row["horizon_unstable"] is True
    with pytest.raises(ConfigError, match=r"refusing to promote 'mlp_mult_3': it is horizon-unstable \(sign flips"):
        check_promotable(flips, "mlp_mult_3")
    steady = analyze(_screen_with_horizons(early=-0.02, final=-0.02))
    assert steady["results"][0]["horizon_unstable"] is False
    assert check_promotable(steady, "mlp_mult_3")["decision"] == "confirmed"


def test_report_shows_the_horizon_section_from_a_horizon_dir(tmp_path):
    from scripts.causal.core.schema import write_json
    from scripts.causal.horizon_curves import build
    from scripts.causal.report import render_markdown, with_horizon

    block = build(runs_payload(tg.preset_config("tiny").to_dict()), [_item("mover", "architecture", -0.03)],
                  target_tpp=400.0, source="runs.json", plot="plots/horizon.png")
    write_json(tmp_path / "h" / "horizon.json", block)
    report = {"run": {"run_id": "r", "command": "c", "started_utc": "t", "versions": {}, "backend": "torch",
                      "hardware": "cpu", "preset": "fast", "cycles": 0, "seeds": [1], "confirm_seeds": [],
                      "interventions": ["mover"], "test": "paired t"},
              "test": {"alpha": 0.01, "margin_bpb": 0.0, "correction": "holm"}, "decisions": [], "plots": {}}
    out = with_horizon(report, tmp_path / "h", tmp_path / "report")
    assert out["horizon"]["plot"] == "../h/plots/horizon.png"
    md = render_markdown(out)
    assert "## Along the training horizon" in md and "![Δ along the horizon](../h/plots/horizon.png)" in md
    assert "- architecture: the LOO-chosen predictor" in md


def test_cli_writes_the_json_the_markdown_and_the_panel(tmp_path):
    from scripts.causal.horizon_curves import main

    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps(runs_payload(tg.preset_config("tiny").to_dict())), encoding="utf-8")
    assert main(["--runs", str(runs), "--out-dir", str(tmp_path / "out")]) == 0
    block = json.loads((tmp_path / "out" / "horizon.json").read_text())
    assert block["schema_version"] == 1 and block["target_tokens_per_param"] == pytest.approx(423.5, abs=1.0)
    assert (tmp_path / "out" / "plots" / "horizon.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "horizon.md").read_text().startswith("# Δ along the training horizon\n\nBranched")


def _split(payload: dict, names: set[str], base=None) -> dict:
    """The part of a screen with the control and ``names``, under a header with its own interventions."""
    rows = [json.loads(json.dumps(r)) for r in payload["runs"] if r["arm"] == "control" or r["intervention"] in names]
    return {"schema_version": 1, "runs": rows,
            "screen": {"base_config": base or {"iterations": 400}, "interventions": sorted(names),
                       "treatment_overrides": {n: {} for n in names}, "seeds": [1, 2, 3]}}


def test_two_screens_that_share_their_control_read_as_one():
    from scripts.causal.horizon.curves import merge_screens

    full = runs_payload()
    a, b = _split(full, {"flipper"}), _split(full, {"mover", "steady"})
    merged = merge_screens([("a.json", a), ("b.json", b)])
    assert merged["screen"]["interventions"] == ["flipper", "mover", "steady"]
    assert merged["screen"]["merged_from"] == ["a.json", "b.json"]
    assert len(merged["runs"]) == 3 + 9   # the shared control once per seed
    assert delta_curves(merged) == delta_curves(full)
    b["runs"][0]["horizon_metrics"]["200"]["post_quant_val_bpb"] += 1e-9   # a control that does not reproduce
    with pytest.raises(DataFormatError, match=r"b\.json: the control of seed 1 scores post_quant_val_bpb"):
        merge_screens([("a.json", a), ("b.json", b)])
    with pytest.raises(DataFormatError, match=r"b\.json: its base config differs .* \['iterations'\]"):
        merge_screens([("a.json", a), ("b.json", _split(full, {"mover"}, base={"iterations": 200}))])
    with pytest.raises(DataFormatError, match=r"b\.json: flipper seed 1 is also in a\.json"):
        merge_screens([("a.json", a), ("b.json", _split(full, {"flipper"}))])
