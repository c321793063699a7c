"""Accuracy of the leaderboard miner against a hand-labelled truth file.

Usage::

    python scripts/causal/extraction_accuracy.py --truth tests/causal/data/labels/truth.json \
        --pred results/interventions.json

Metrics (issue 3 targets in brackets): val_bpb exact to 1e-6 [>= 95%], feature agreement where the label is
known [>= 90%], agreement on labels that differ from the naive baseline [>= 80%], ablation recall [>= 70%]
(a labelled ablation counts as found when a mined row of the same record has a delta within 1e-4).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import BASELINE_FEATURES, read_json

BPB_TOL = 1e-6
DELTA_TOL = 1e-4


@dataclasses.dataclass(frozen=True)
class AccuracyReport:
    n_records: int
    n_missing: int
    val_bpb_exact: float
    feature_agreement: float
    feature_agreement_non_baseline: float
    ablation_recall: float
    n_features: int
    n_non_baseline: int
    n_ablations: int
    mismatches: tuple[str, ...]


def values_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return str(a).lower() == str(b).lower()


def _rate(hits: int, n: int) -> float:
    return hits / n if n else float("nan")


def score(pred: dict, truth: dict) -> AccuracyReport:
    """Compare a miner payload (``records`` list) with a truth file (``records`` dict by record_id)."""
    by_id = {r["record_id"]: r for r in pred.get("records", [])}
    labels = truth["records"]
    bpb_hits = feat_hits = feat_n = nb_hits = nb_n = abl_hits = abl_n = missing = 0
    bad: list[str] = []
    for rid, lab in labels.items():
        rec = by_id.get(rid)
        if rec is None:
            missing += 1
            bad.append(f"{rid}: not in predictions")
            rec = {"features": {}, "ablations": [], "val_bpb": None}
        if "val_bpb" in lab:
            ok = rec.get("val_bpb") is not None and abs(rec["val_bpb"] - lab["val_bpb"]) <= BPB_TOL
            bpb_hits += ok
            if not ok:
                bad.append(f"{rid}: val_bpb {rec.get('val_bpb')} != {lab['val_bpb']}")
        for feat, want in lab.get("features", {}).items():
            got = rec["features"].get(feat)
            ok = values_equal(got, want)
            feat_n += 1
            feat_hits += ok
            if not values_equal(want, BASELINE_FEATURES.get(feat)):
                nb_n += 1
                nb_hits += ok
            if not ok:
                bad.append(f"{rid}: {feat} {got!r} != {want!r}")
        mined = [a.get("delta_bpb") for a in rec.get("ablations", []) if a.get("delta_bpb") is not None]
        for row in lab.get("ablations", []):
            abl_n += 1
            found = any(abs(d - row["delta_bpb"]) <= DELTA_TOL for d in mined)
            abl_hits += found
            if not found:
                bad.append(f"{rid}: ablation not found: {row['change']} ({row['delta_bpb']:+g})")
    n = len(labels)
    return AccuracyReport(
        n_records=n, n_missing=missing, val_bpb_exact=_rate(bpb_hits, sum("val_bpb" in v for v in labels.values())),
        feature_agreement=_rate(feat_hits, feat_n), feature_agreement_non_baseline=_rate(nb_hits, nb_n),
        ablation_recall=_rate(abl_hits, abl_n), n_features=feat_n, n_non_baseline=nb_n, n_ablations=abl_n,
        mismatches=tuple(bad))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score results/interventions.json against hand-labelled truth.")
    p.add_argument("--truth", required=True, help="e.g. tests/causal/data/labels/truth.json")
    p.add_argument("--pred", required=True, help="e.g. results/interventions.json")
    p.add_argument("--batch", type=int, help="score only labels of this batch (e.g. 2)")
    p.add_argument("--show-mismatches", action="store_true", help="list every disagreement")
    add_debug_flag(p)
    return p


def _main(args: argparse.Namespace) -> int:
    truth = read_json(args.truth)
    if args.batch is not None:
        truth = {**truth, "records": {k: v for k, v in truth["records"].items() if v.get("batch") == args.batch}}
    rep = score(read_json(args.pred), truth)
    out = {k: v for k, v in dataclasses.asdict(rep).items() if k != "mismatches"}
    print(json.dumps(out, indent=2))
    if args.show_mismatches:
        print("\n".join(rep.mismatches))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _main(args), debug=args.debug, prog="extraction_accuracy")


if __name__ == "__main__":
    sys.exit(main())
