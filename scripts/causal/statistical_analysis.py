"""Paired-seed statistics and the decision gate for a screen (runs.json -> ablation_results.json).

The logic lives in ``scripts/causal/stats/``: pairing (runs -> paired differences), paired_tests (t, Wilcoxon,
CIs), multiplicity (Holm/BH), effect (the record bar in bpb), decision (confirmed / harmful / null /
inconclusive), prereg (the pre-registration, enforced), calibration (A/A and sanity arms, outside the family),
claims (the two Parameter Golf claim lines) and analysis (``analyze``, which ties them together). This module is
the CLI; it re-exports the functions other stages import.

Every setting comes from the runs.json header (the pre-registration). A flag that differs from it, or sets a
field the header does not register, is refused unless ``--exploratory`` is given, and the output then says
EXPLORATORY. ``--ledger`` checks the header against the ledger's copy of the pre-registration (an edited header
makes the analysis exploratory) and writes the decisions to the ledger's ``decisions`` table. Missing registered
runs (a dropped seed) also make it exploratory; a registered sequential design decides with its own boundaries.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import write_json
from scripts.causal.stats.analysis import analyze, record_decisions
from scripts.causal.stats.decision import DECISIONS
from scripts.causal.stats.multiplicity import CORRECTIONS, adjust_pvalues, bh_adjust, holm_adjust
from scripts.causal.stats.paired_tests import pooled_sigma_from_aa, pooled_sigma_from_screens
from scripts.causal.stats.pairing import METRICS, MIN_PAIRS, load_runs, paired_deltas

__all__ = [
    "CORRECTIONS", "DECISIONS", "METRICS", "MIN_PAIRS", "adjust_pvalues", "analyze", "bh_adjust", "holm_adjust",
    "load_runs", "main", "paired_deltas", "pooled_sigma_from_aa", "pooled_sigma_from_screens", "record_decisions",
]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="runs.json from experiment_runner, e.g. results/s1/runs.json")
    ap.add_argument("--output", required=True, help="where to write ablation_results.json")
    reg = ap.add_argument_group("pre-registered settings (default: the runs.json header; a different value "
                                "needs --exploratory)")
    reg.add_argument("--alpha", type=float, default=None, help="family-wise alpha, e.g. 0.01")
    reg.add_argument("--margin-bpb", type=float, default=None, help="required improvement in bpb, e.g. 0.002")
    reg.add_argument("--correction", default=None, help="holm | bh | none")
    reg.add_argument("--metric", default=None,
                     help="final_val_bpb | post_quant_val_bpb | val_bpb | sliding_val_bpb | ttt_val_bpb (default: registered)")
    reg.add_argument("--effect-bpb", type=float, default=None,
                     help="effect of interest in bpb (default: the record bar 0.005 nats in bpb), e.g. 0.003")
    reg.add_argument("--interventions", default=None, help="comma list: the multiplicity family, e.g. a,b")
    ap.add_argument("--exploratory", action="store_true",
                    help="allow settings that differ from the pre-registration; the output says EXPLORATORY")
    ap.add_argument("--backend", default=None, help="analyze only rows of this backend, e.g. torch")
    ap.add_argument("--pool-aa", action="store_true",
                    help="pool the d variance with the screen's aa pairs (part of the pre-registration: a screen "
                         "that did not register it needs --exploratory)")
    ap.add_argument("--ledger", default=None,
                    help="check the runs.json header against this ledger's pre-registration (a difference makes the "
                         "analysis exploratory) and write the decisions there, e.g. results/ledger.sqlite")
    add_debug_flag(ap)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        family = [s.strip() for s in args.interventions.split(",") if s.strip()] if args.interventions else None
        payload = analyze(load_runs(args.input), alpha=args.alpha, margin_bpb=args.margin_bpb,
                          correction=args.correction, metric=args.metric, effect_bpb=args.effect_bpb,
                          interventions=family, exploratory=args.exploratory, backend=args.backend,
                          pool_aa=True if args.pool_aa else None, ledger=args.ledger)
        write_json(args.output, payload, schema_version=payload["schema_version"])
        if args.ledger:
            from scripts.causal.screen.ledger import Ledger

            with Ledger(args.ledger) as led:
                record_decisions(led, payload)
        if payload["exploratory"]:
            print("EXPLORATORY analysis: settings deviate from (or lack) the pre-registration: "
                  f"{payload['preregistration']['deviations'] or 'no pre-registration'}")
        if payload["preregistration"].get("unregistered"):
            print(f"not registered (defaults used): {', '.join(payload['preregistration']['unregistered'])}")
        print(f"metric {payload['metric']}; effect of interest: {payload['effect']['name']}; "
              f"family K={payload['family_size']}")
        for r in payload["results"]:
            mean = "n/a" if r["mean_delta_bpb"] is None else f"{r['mean_delta_bpb']:+.5f}"
            padj = "n/a" if r["p_adjusted"] is None else f"{r['p_adjusted']:.3g}"
            print(f"{r['intervention']:<28} n={r['n_pairs']} failed={r['n_failed']} delta={mean} "
                  f"p_adj={padj} decision={r['label']}")
        return 0

    return run_cli(body, debug=args.debug, prog="statistical_analysis.py")


if __name__ == "__main__":
    sys.exit(main())
