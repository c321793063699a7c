"""Accuracy of the leaderboard miner: ablation typing against the verified evidence table, features against labels.

Usage::

    python scripts/causal/extraction_accuracy.py --pred results/interventions.json            # verified table
    python scripts/causal/extraction_accuracy.py --pred results/interventions.json --show-mismatches
    python scripts/causal/extraction_accuracy.py --pred results/interventions.json \
        --truth tests/causal/data/labels/truth.json                                         # + features, val_bpb

Ablation typing (``extract.verified_score``, against ``evidence/verified``): precision of the miner's one-change
claims ("this row is knob K, from -> to") and recall of the verified single-change rows [targets >= 95% and
>= 80%], overall and on the records dated after ``--cutoff`` (the rules were written against the records up to
it; the later ones are scored as held out).

Feature labels (``--truth``; targets in brackets): val_bpb exact to 1e-6 [>= 95%], feature agreement where the label is known
[>= 90%], agreement on labels that differ from the naive baseline [>= 80%], ablation recall [>= 85%] (a labelled
ablation counts as found when a mined row of the same record has a delta within 1e-4), and typing accuracy
[>= 80%] over found labelled rows that carry a ``kind``: such a row is typed right when some mined row with that delta
has the labelled class and, for an ``ablation``, the same single feature and direction. Rows of a truth file
without a ``kind`` count for recall only. ``--truth`` may be given several times (records are merged).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.paths import EVIDENCE_DIR
from scripts.causal.core.schema import BASELINE_FEATURES, read_json
from scripts.causal.evidence.table import load_table
from scripts.causal.extract.verified_score import CUTOFF, score_typing

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
    typing_accuracy: float
    n_features: int
    n_non_baseline: int
    n_ablations: int
    n_typed: int
    mismatches: tuple[str, ...]


def values_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return str(a).lower() == str(b).lower()


def type_matches(mined: dict, label: dict) -> bool:
    """A mined row has the labelled class; an ``ablation`` also the same single feature and direction."""
    if mined.get("kind") != label["kind"]:
        return False
    if label["kind"] != "ablation":
        return True
    return list(mined.get("features") or []) == list(label.get("features") or []) and \
        int(mined.get("direction", 1)) == int(label.get("direction", 1))


def merge_truths(truths: list[dict]) -> dict:
    """One truth payload from several (records merged; a record labelled twice is an error)."""
    records: dict = {}
    for t in truths:
        for rid, lab in t["records"].items():
            if rid in records:
                raise ValueError(f"record {rid!r} is labelled in more than one --truth file")
            records[rid] = lab
    return {"records": records}


def _rate(hits: int, n: int) -> float:
    return hits / n if n else float("nan")


def score(pred: dict, truth: dict) -> AccuracyReport:
    """Compare a miner payload (``records`` list) with a truth file (``records`` dict by record_id)."""
    by_id = {r["record_id"]: r for r in pred.get("records", [])}
    labels = truth["records"]
    bpb_hits = feat_hits = feat_n = nb_hits = nb_n = abl_hits = abl_n = missing = typed_hits = typed_n = 0
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
        mined = [a for a in rec.get("ablations", []) if a.get("delta_bpb") is not None]
        for row in lab.get("ablations", []):
            abl_n += 1
            same = [a for a in mined if abs(a["delta_bpb"] - row["delta_bpb"]) <= DELTA_TOL]
            abl_hits += bool(same)
            if not same:
                bad.append(f"{rid}: ablation not found: {row['change']} ({row['delta_bpb']:+g})")
            if "kind" in row and same:  # typing is scored on the rows that were found (recall scores the rest)
                typed_n += 1
                ok = any(type_matches(a, row) for a in same)
                typed_hits += ok
                if not ok:
                    got = "; ".join(f"{a.get('kind')} {a.get('features')} {a.get('direction')}" for a in same)
                    bad.append(f"{rid}: typed {got} != {row['kind']} {row.get('features', [])} "
                               f"{row.get('direction', 1)}: {row['change']}")
    n = len(labels)
    return AccuracyReport(
        n_records=n, n_missing=missing, val_bpb_exact=_rate(bpb_hits, sum("val_bpb" in v for v in labels.values())),
        feature_agreement=_rate(feat_hits, feat_n), feature_agreement_non_baseline=_rate(nb_hits, nb_n),
        ablation_recall=_rate(abl_hits, abl_n), typing_accuracy=_rate(typed_hits, typed_n), n_features=feat_n,
        n_non_baseline=nb_n, n_ablations=abl_n, n_typed=typed_n, mismatches=tuple(bad))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score results/interventions.json against the verified evidence table "
                                            "(ablation typing) and, with --truth, hand-labelled features.")
    p.add_argument("--pred", required=True, help="e.g. results/interventions.json")
    p.add_argument("--evidence", default=str(EVIDENCE_DIR), help="verified evidence table, e.g. evidence/verified")
    p.add_argument("--cutoff", default=CUTOFF, help=f"date the miner's rules were written up to, e.g. {CUTOFF}")
    p.add_argument("--truth", action="append", default=[],
                   help="feature/val_bpb truth file (repeatable), e.g. tests/causal/data/labels/truth.json")
    p.add_argument("--batch", type=int, help="with --truth: score only labels of this batch (e.g. 2)")
    p.add_argument("--show-mismatches", action="store_true", help="list every disagreement")
    add_debug_flag(p)
    return p


def typing_report(pred: dict, table: dict, cutoff: str) -> dict:
    """The verified-table scores overall and after ``cutoff`` (``extract.verified_score``)."""
    out = {}
    for name, after in (("all", None), (f"after_{cutoff}", cutoff)):
        s = score_typing(pred.get("records", []), table, after=after)
        out[name] = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("wrong", "missed")}
        out[name]["wrong"], out[name]["missed"] = list(s.wrong), list(s.missed)
    return out


def _main(args: argparse.Namespace) -> int:
    pred = read_json(args.pred)
    rep = typing_report(pred, load_table(args.evidence), args.cutoff)
    brief = {k: {m: v for m, v in b.items() if m not in ("wrong", "missed")} for k, b in rep.items()}
    print(json.dumps({"ablation_typing": brief}, indent=2))
    if args.show_mismatches:
        for k, b in rep.items():
            print(f"# {k}: wrong claims\n" + "\n".join(b["wrong"]) + f"\n# {k}: missed single changes\n"
                  + "\n".join(b["missed"]))
    if args.truth:
        truth = merge_truths([read_json(t) for t in args.truth])
        if args.batch is not None:
            truth = {**truth, "records": {k: v for k, v in truth["records"].items() if v.get("batch") == args.batch}}
        feat = score(pred, truth)
        print(json.dumps({"features": {k: v for k, v in dataclasses.asdict(feat).items() if k != "mismatches"}},
                         indent=2))
        if args.show_mismatches:
            print("\n".join(feat.mismatches))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _main(args), debug=args.debug, prog="extraction_accuracy")


if __name__ == "__main__":
    sys.exit(main())
