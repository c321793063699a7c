"""Δ along the training horizon for a branched-cooldown screen: curves, horizon-unstable flags, the H100-sign
predictor table (leave-one-intervention-out per class, on the verified calibration set) and the panel plot.

    python scripts/causal/horizon_curves.py --runs results/horizon/runs.json --out-dir results/horizon

``--runs`` repeats: screens that share their control (same base config, bit-identical control runs per seed) are
read as one (``horizon.curves.merge_screens``), e.g. a second screen that adds interventions.

Writes ``horizon.json`` (schema_version 1; the block the decision-gate report shows with ``report.py
--horizon-dir``), ``horizon.md`` and ``plots/horizon.png`` into --out-dir.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import CalibrationItem, write_json
from scripts.causal.horizon.curves import delta_curves, horizons_of, merge_screens, stability
from scripts.causal.horizon.predict import candidate_values, predictor_table
from scripts.causal.horizon.render import horizon_lines, plot_panel
from scripts.causal.stats.pairing import FINAL_METRIC, load_runs, run_rows

SCHEMA_VERSION = 1
TARGET = 0.8
TARGET_HARDWARE = "8xH100"
POOLED = "all classes (8xH100 rows)"


def tokens_per_param(config: Mapping[str, Any], horizons: Sequence[int]) -> dict[int, float]:
    """Training tokens per parameter of the control's model at each horizon (steps x batch tokens / params)."""
    import train_gpt as tg

    cfg = tg.Hyperparameters(**{k: v for k, v in config.items() if k in tg.Hyperparameters.field_names()})
    n = sum(p.numel() for p in tg.GPT.from_config(cfg).parameters())
    return {h: h * cfg.train_batch_tokens / n for h in horizons}


def trust_lines(table: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """One sentence per class: may the curve's predicted sign be trusted for H100 there, and on what evidence."""
    out = {}
    for klass, b in table.items():
        loo = b["loo"]
        if not loo["n"]:
            out[klass] = (f"not measured along the horizon ({b['n_decisive']} decisive rows; "
                          f"{'no screened intervention' if not b['interventions'] else 'no decisive row'}): "
                          "do not trust the proxy's sign for H100")
            continue
        lo, hi = loo["ci"]
        base = (f"the LOO-chosen predictor agrees with H100 on {loo['k']}/{loo['n']} decisive rows "
                f"[{lo:.0%}, {hi:.0%}] over {loo['n_interventions']} intervention(s)")
        ok = loo["agreement"] >= TARGET and loo["n"] >= 3 and loo["choice_possible"]
        why = ("" if ok else "; below the 80% target" if loo["agreement"] < TARGET else
               "; too few rows or interventions to tell")
        out[klass] = base + why + (": trusted" if ok else ": not to be trusted from the proxy")
    return out


def build(runs: Mapping, items: Sequence[CalibrationItem], *, target_tpp: float, source: str,
          metric: str = FINAL_METRIC, plot: str | None = None) -> dict[str, Any]:
    """The horizon block (pure: the caller supplies the calibration items and the target tokens per parameter)."""
    hs = horizons_of(runs)
    rows = run_rows(runs)
    control = next(r for r in rows if r.get("arm") == "control")
    tpp = tokens_per_param(control.get("config") or {}, hs)
    curves = delta_curves(runs, metric=metric)
    stab = {name: stability(c) for name, c in curves.items()}
    values = {name: candidate_values(c, tpp, target_tpp) for name, c in curves.items()}
    table = predictor_table(items, values)
    pooled = [dataclasses.replace(it, transfer_class=POOLED) for it in items if it.hardware == TARGET_HARDWARE]
    table.update(predictor_table(pooled, values))  # LOO across classes: a choice even where a class has one change
    trust = trust_lines(table)
    if POOLED in trust:  # the pooled figure is mostly whichever class has most rows: say which
        from scripts.causal.horizon.predict import MIN_ABS_H100

        by = Counter(it.transfer_class for it in items if it.hardware == TARGET_HARDWARE and it.intervention in values and abs(it.h100_delta) >= MIN_ABS_H100)
        trust[POOLED] += (" (decisive rows by class: " + ", ".join(f"{k} {n}" for k, n in by.most_common())
                          + "; read the per-class lines, not this pooled figure, for a class's trust)")
    return {"schema_version": SCHEMA_VERSION, "source": source, "metric": metric, "horizons": hs,
            "tokens_per_param": [tpp[h] for h in hs], "target_tokens_per_param": target_tpp,
            "n_seeds": len({r["seed"] for r in rows}), "curves": curves, "stability": stab,
            "predicted": values, "predictors": table, "trust": trust, "plot": plot,
            "h100_rows": {name: [{"delta": it.h100_delta, "class": it.transfer_class, "record": it.record_id}
                                 for it in items if it.intervention == name] for name in curves}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, required=True, action="append",
                   help="runs.json of a screen run with horizons=H1/H2/... (repeatable: screens sharing a control)")
    p.add_argument("--out-dir", type=Path, required=True, help="e.g. results/horizon")
    p.add_argument("--target-preset", default="baseline", help="the regime to extrapolate to (default: baseline)")
    p.add_argument("--metric", default=FINAL_METRIC, help="the scored metric (default: the last stage that ran)")
    add_debug_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        from scripts.causal.evidence.table import load_table
        from scripts.causal.transfer.calibration_set import build_calibration_set
        from scripts.causal.transfer_calibration import tokens_per_param as preset_tpp

        runs = merge_screens([(str(p), load_runs(p)) for p in args.runs])
        items, _ = build_calibration_set(load_table())
        block = build(runs, items, target_tpp=preset_tpp(args.target_preset), source=", ".join(map(str, args.runs)),
                      metric=args.metric, plot="plots/horizon.png")
        plot_panel(block["curves"], dict(zip(block["horizons"], block["tokens_per_param"], strict=True)),
                   block["target_tokens_per_param"], block["h100_rows"], block["stability"],
                   args.out_dir / "plots" / "horizon.png")
        write_json(args.out_dir / "horizon.json", block, schema_version=SCHEMA_VERSION)
        md = ["# Δ along the training horizon", ""] + horizon_lines(block)[3:]
        (args.out_dir / "horizon.md").write_text("\n".join(md) + "\n", encoding="utf-8")
        print(args.out_dir / "horizon.md")
        return 0

    return run_cli(body, debug=args.debug, prog="horizon_curves.py")


if __name__ == "__main__":
    raise SystemExit(main())
