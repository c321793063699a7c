"""Identifiability of feature effects from the leaderboard: lineage diffs, confounded pairs, untried combos.

Each record is compared with its base: the record whose ``pr`` is in its ``base_prs``, else the nearest
earlier record of the same track. The verdict is machine-readable: ``status`` is "identified",
"partially_identified" or "under_identified", and ``lean_on`` tells the ranking which evidence to trust
(observational estimates only for identified features; ablation rows and our own experiments otherwise).

CLI: python scripts/causal/dag/identifiability.py --input results/interventions.json --out dags/cycle_0/identifiability.json
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from typing import Any, Mapping, Sequence

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import INTERVENTION_FEATURES, read_json, write_json

RULE = ("a feature is observationally identified when some record changes it alone against its base, or when "
        ">=3 records have it and >=3 lack it and no other feature always co-occurs with it. Overall: "
        "'under_identified' if < 40% of the varying features are identified, or if fewer than 3 records change "
        "exactly one feature while more than half of the records change >= 3 (changes come in bundles); "
        "'identified' if >= 75% are and >= 3 records change exactly one feature; else 'partially_identified'")


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() not in ("", "none", "false", "0", "relu2", "zlib")
    return bool(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def find_base(records: Sequence[Mapping], i: int) -> tuple[int | None, str]:
    """Index of record i's base and how it was found ("base_prs", "nearest_earlier", "none")."""
    rec = records[i]
    by_pr = {r.get("pr"): j for j, r in enumerate(records) if r.get("pr") is not None}
    for pr in rec.get("base_prs") or ():
        j = by_pr.get(pr)
        if j is not None and j != i:
            return j, "base_prs"
    date = rec.get("date")
    if not date:
        return None, "none"
    earlier = [j for j, r in enumerate(records)
               if j != i and r.get("date") and r["date"] < date and r.get("track") == rec.get("track")]
    if not earlier:
        return None, "none"
    return max(earlier, key=lambda j: (records[j]["date"], j)), "nearest_earlier"


def feature_diff(rec: Mapping, base: Mapping, features: Sequence[str]) -> list[str]:
    """Features whose values are known in both records and differ."""
    fa, fb = rec.get("features") or {}, base.get("features") or {}
    return [f for f in features if fa.get(f) is not None and fb.get(f) is not None and not _same(fa[f], fb[f])]


def check_identifiability(records: Sequence[Mapping], *, features: Sequence[str] = INTERVENTION_FEATURES,
                          min_support: int = 2, single_change_min: int = 3) -> dict:
    """Lineage diffs, always-co-occurring pairs, never-tried pairs and a machine-readable verdict."""
    records = list(records)
    diffs = []
    for i, rec in enumerate(records):
        j, how = find_base(records, i)
        if j is None:
            diffs.append({"record_id": rec.get("record_id"), "base": None, "how": how, "changed": []})
            continue
        changed = feature_diff(rec, records[j], features)
        diffs.append({"record_id": rec.get("record_id"), "base": records[j].get("record_id"), "how": how,
                      "changed": changed})
    with_base = [d for d in diffs if d["base"] is not None]
    present = {f: [_truthy((r.get("features") or {}).get(f)) for r in records
                   if (r.get("features") or {}).get(f) is not None] for f in features}
    binary_like = [f for f in features if present[f] and 0 < sum(present[f]) and sum(present[f]) < len(records)]
    co_occur = []
    for a, b in itertools.combinations(binary_like, 2):
        both = [(_truthy(r["features"][a]), _truthy(r["features"][b])) for r in records
                if (r.get("features") or {}).get(a) is not None and (r.get("features") or {}).get(b) is not None]
        support = sum(x or y for x, y in both)
        if support >= min_support and all(x == y for x, y in both):
            co_occur.append({"a": a, "b": b, "records_with_both": support})
    changes = {f: [d for d in with_base if f in d["changed"]] for f in features}
    co_change = []
    for a, b in itertools.combinations(features, 2):
        ca, cb = changes[a], changes[b]
        if len(ca) >= min_support and {d["record_id"] for d in ca} == {d["record_id"] for d in cb}:
            co_change.append({"a": a, "b": b, "times": len(ca)})
    adopted = [f for f in binary_like]
    never = []
    for a, b in itertools.combinations(adopted, 2):
        if not any(_truthy((r.get("features") or {}).get(a)) and _truthy((r.get("features") or {}).get(b))
                   for r in records):
            never.append([a, b])
    confounded: dict[str, list[str]] = {}
    for pair in co_occur + co_change:
        confounded.setdefault(pair["a"], []).append(pair["b"])
        confounded.setdefault(pair["b"], []).append(pair["a"])
    per_feature = {}
    for f in features:
        vals = present[f]
        if not vals:
            continue
        n_with, n_without = sum(vals), len(vals) - sum(vals)
        n_single = sum(1 for d in changes[f] if len(d["changed"]) == 1)
        ident = n_single >= 1 or (n_with >= 3 and n_without >= 3 and f not in confounded)
        per_feature[f] = {"n_known": len(vals), "n_with": n_with, "n_without": n_without,
                          "n_changes": len(changes[f]), "n_single_change": n_single,
                          "confounded_with": sorted(set(confounded.get(f, []))), "identifiable": bool(ident)}
    varying = {f: v for f, v in per_feature.items() if v["n_with"] and v["n_without"]}
    ident_feats = sorted(f for f, v in varying.items() if v["identifiable"])
    frac = len(ident_feats) / len(varying) if varying else 0.0
    n_single = sum(1 for d in with_base if len(d["changed"]) == 1)
    n_ge3 = sum(1 for d in with_base if len(d["changed"]) >= 3)
    bundled = n_single < single_change_min and n_ge3 > 0.5 * max(len(with_base), 1)
    if frac < 0.4 or bundled:
        status = "under_identified"
    elif frac >= 0.75 and n_single >= single_change_min:
        status = "identified"
    else:
        status = "partially_identified"
    lean_on = ["observational"] if status == "identified" else ["ablations", "experiments", "observational"]
    if status == "under_identified":
        lean_on = ["ablations", "experiments"]
    hist: dict[str, int] = {}
    for d in with_base:
        k = str(min(len(d["changed"]), 5)) + ("+" if len(d["changed"]) >= 5 else "")
        hist[k] = hist.get(k, 0) + 1
    return {
        "n_records": len(records), "n_with_base": len(with_base),
        "n_single_change": n_single, "n_ge3_changes": n_ge3,
        "changes_histogram": dict(sorted(hist.items())),
        "always_co_occur": co_occur, "always_change_together": co_change,
        "never_tried_pairs": never, "per_feature": per_feature, "diffs": diffs,
        "verdict": {"status": status, "fraction_identified": round(frac, 4),
                    "identified_features": ident_feats,
                    "under_identified_features": sorted(set(varying) - set(ident_feats)),
                    "lean_on": lean_on, "rule": RULE},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default="results/interventions.json", help="intervention matrix, e.g. results/interventions.json")
    p.add_argument("--out", default="dags/cycle_0/identifiability.json", help="output JSON path")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        data = read_json(args.input)
        result = check_identifiability(data.get("records") or [])
        write_json(args.out, result)
        v = result["verdict"]
        print(f"identifiability:{v['status']} single_change:{result['n_single_change']} "
              f"ge3_changes:{result['n_ge3_changes']} out:{args.out}")
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
