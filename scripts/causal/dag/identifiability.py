"""What the leaderboard alone can and cannot separate: per feature, the evidence that isolates its effect.

A cross-record association (records with a feature against records without it) is never an effect here: records
adopt features in date order and change several at once, so "records with X score lower" mostly says "X is
recent". Each feature's effect is **separable** from the leaderboard only by

1. **verified single-change rows**: entries of the verified evidence table (``evidence/verified``) that a person
   classed ``single_change`` (one change against a reference that differs in that change only), or
2. **within-lineage contrasts**: a record against its *stated* base (a base PR it names, resolved to a record of
   the snapshot) that differs from that base in this feature alone among the canonical features, with per-seed
   scores on both sides so that the difference carries a Welch interval. It adjusts for everything the two records
   share (stack, hardware, era); it cannot adjust for changes outside the canonical features (tuning, kernels).

For every feature the output also states what confounds the cross-record view: the Spearman correlation of its
presence with the record date, and the features it always co-occurs with. ``never_tried_pairs`` (features never
present together) feed the ranking's combinations. The verdict is in words (``statement``); ``status`` is
``separable_for_some`` or ``separable_for_none``, and ``lean_on`` names the evidence the ranking uses.

CLI: python scripts/causal/dag/identifiability.py --input results/interventions.json --out dags/cycle_0/identifiability.json
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import date as _date
from typing import Any

import numpy as np
from scipy import stats

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import INTERVENTION_FEATURES, EvidenceEntry, read_json, write_json

RULE = ("a feature's effect is separable from the leaderboard only by verified single-change rows (a person read "
        "the row: one change against a reference that differs in it alone) or by within-lineage contrasts (a record "
        "against its stated base PR that differs from it in that canonical feature alone, with per-seed scores on "
        "both sides for a Welch interval; it adjusts for what the two records share, not for changes outside the "
        "canonical features). A cross-record association is never an effect: records adopt features in date order "
        "and change several at once")
DATE_RHO = 0.3  # |Spearman(presence, date)| at or above which a feature's adoption is said to follow the date


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() not in ("", "none", "false", "0", "relu2", "zlib")
    return bool(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def stated_base(records: Sequence[Mapping], i: int) -> int | None:
    """Index of the record that record ``i`` names as its base (a base PR resolved to a snapshot record), else
    None. The nearest earlier record is not a base: a lineage contrast needs the author's own statement."""
    by_pr = {r.get("pr"): j for j, r in enumerate(records) if r.get("pr") is not None}
    for pr in records[i].get("base_prs") or ():
        j = by_pr.get(pr)
        if j is not None and j != i:
            return j
    return None


def feature_diff(rec: Mapping, base: Mapping, features: Sequence[str]) -> list[str]:
    """Features whose values are known in both records and differ."""
    fa, fb = rec.get("features") or {}, base.get("features") or {}
    return [f for f in features if fa.get(f) is not None and fb.get(f) is not None and not _same(fa[f], fb[f])]


def _seed_scores(rec: Mapping) -> list[float]:
    return [float(s["val_bpb"]) for s in rec.get("seeds") or () if isinstance(s, Mapping)
            and isinstance(s.get("val_bpb"), (int, float)) and math.isfinite(float(s["val_bpb"]))]


def welch_contrast(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> dict[str, Any] | None:
    """mean(a) - mean(b) with a Welch t interval; None unless both sides have >= 2 values and some spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = float(np.var(a, ddof=1)) / len(a), float(np.var(b, ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return None
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    q = float(stats.t.ppf(0.5 + level / 2, df))
    d = float(np.mean(a) - np.mean(b))
    return {"delta_bpb": d, "se": se, "df": df, "ci_low": d - q * se, "ci_high": d + q * se,
            "n": [len(a), len(b)]}


def lineage_contrasts(records: Sequence[Mapping], *, features: Sequence[str] = INTERVENTION_FEATURES
                      ) -> list[dict[str, Any]]:
    """Every record that differs from its stated base in exactly one canonical feature: the contrast of their
    per-seed scores (with a Welch interval when both have >= 2 seeds) and what it does and does not adjust for."""
    out = []
    for i, rec in enumerate(records):
        j = stated_base(records, i)
        if j is None:
            continue
        changed = feature_diff(rec, records[j], features)
        if len(changed) != 1:
            continue
        f = changed[0]
        w = welch_contrast(_seed_scores(rec), _seed_scores(records[j]))
        out.append({"feature": f, "record_id": rec.get("record_id"), "base": records[j].get("record_id"),
                    "from_value": (records[j].get("features") or {}).get(f),
                    "to_value": (rec.get("features") or {}).get(f), "track": rec.get("track"),
                    "contrast": w, "adjusts_for": "everything the record shares with its stated base (stack, "
                                                  "hardware, era)",
                    "does_not_adjust_for": "changes outside the canonical features (tuning, kernels, code)"})
    return out


def _ordinal(d: Any) -> int | None:
    try:
        return _date.fromisoformat(str(d)[:10]).toordinal()
    except ValueError:
        return None


def date_association(records: Sequence[Mapping], feature: str) -> dict[str, Any]:
    """Spearman correlation of a feature's presence with the record date (records with both known)."""
    pairs = [(_ordinal(r.get("date")), _truthy((r.get("features") or {}).get(feature))) for r in records
             if (r.get("features") or {}).get(feature) is not None]
    pairs = [(d, float(p)) for d, p in pairs if d is not None]
    if len(pairs) < 4 or len({p for _, p in pairs}) < 2 or len({d for d, _ in pairs}) < 2:
        return {"rho": None, "p_value": None, "n": len(pairs)}
    res = stats.spearmanr([d for d, _ in pairs], [p for _, p in pairs])
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": len(pairs)}


def _co_occurrence(records: Sequence[Mapping], features: Sequence[str], min_support: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a, b in itertools.combinations(features, 2):
        both = [(_truthy(r["features"][a]), _truthy(r["features"][b])) for r in records
                if (r.get("features") or {}).get(a) is not None and (r.get("features") or {}).get(b) is not None]
        if sum(x or y for x, y in both) >= min_support and all(x == y for x, y in both):
            out.setdefault(a, []).append(b)
            out.setdefault(b, []).append(a)
    return out


def _verified_by_feature(verified: Sequence[EvidenceEntry]) -> dict[str, list[str]]:
    from scripts.causal.screen import registry as reg

    out: dict[str, list[str]] = {}
    for e in verified:
        if not e.is_single_change:
            continue
        feat = e.knob
        if e.intervention:
            feat = reg.get_intervention(e.intervention).feature or feat
        if feat:
            out.setdefault(feat, []).append(e.key)
    return out


def check_identifiability(records: Sequence[Mapping], *, verified: Sequence[EvidenceEntry] = (),
                          features: Sequence[str] = INTERVENTION_FEATURES, min_support: int = 2) -> dict:
    """Per feature: what separates its effect (verified rows, lineage contrasts) and what confounds the
    cross-record view (date, co-occurrence); never-tried pairs; the verdict in words."""
    records = list(records)
    present = {f: [_truthy((r.get("features") or {}).get(f)) for r in records
                   if (r.get("features") or {}).get(f) is not None] for f in features}
    varying = [f for f in features if present[f] and 0 < sum(present[f]) < len(present[f])]
    co = _co_occurrence(records, varying, min_support)
    contrasts = lineage_contrasts(records, features=features)
    ver = _verified_by_feature(verified)
    per_feature = {}
    for f in features:
        if not present[f]:
            continue
        lin = [c for c in contrasts if c["feature"] == f]
        lin_ci = [c for c in lin if c["contrast"] is not None]
        date = date_association(records, f)
        separable_by = (["verified single-change rows"] if ver.get(f) else []) + (
            ["within-lineage contrasts"] if lin_ci else [])
        confounders = []
        if date["rho"] is not None and abs(date["rho"]) >= DATE_RHO:
            confounders.append(f"date (Spearman {date['rho']:+.2f})")
        if co.get(f):
            confounders.append("always together with " + ", ".join(sorted(co[f])))
        per_feature[f] = {"n_known": len(present[f]), "n_with": sum(present[f]),
                          "n_without": len(present[f]) - sum(present[f]),
                          "verified_single_change": ver.get(f, []), "lineage_contrasts": lin,
                          "date_association": date, "co_occurs_with": sorted(co.get(f, [])),
                          "cross_record_confounders": confounders, "separable_by": separable_by,
                          "separable": bool(separable_by)}
    never = [[a, b] for a, b in itertools.combinations(varying, 2)
             if not any(_truthy((r.get("features") or {}).get(a)) and _truthy((r.get("features") or {}).get(b))
                        for r in records)]
    sep = sorted(f for f in varying if per_feature[f]["separable"])
    dated = sorted(f for f in varying if any(c.startswith("date") for c in per_feature[f]["cross_record_confounders"]))
    statement = (
        f"The leaderboard alone ({len(records)} records) establishes the effect of {len(sep)} of the {len(varying)} "
        f"features that vary across records, each only on the stacks it was measured on: "
        f"{', '.join(sep) if sep else 'none'} (verified single-change rows or within-lineage contrasts). It cannot "
        f"establish the effect of the other {len(varying) - len(sep)} from records with and without them: "
        f"{len(dated)} of the {len(varying)} are adopted in date order (|Spearman| >= {DATE_RHO} with the date), "
        f"and records change several features at once. No cross-record association is used as an effect.")
    return {
        "n_records": len(records), "n_verified_single_change": sum(len(v) for v in ver.values()),
        "n_lineage_contrasts": len(contrasts), "lineage_contrasts": contrasts, "never_tried_pairs": never,
        "per_feature": per_feature,
        "verdict": {"status": "separable_for_some" if sep else "separable_for_none", "separable_features": sep,
                    "not_separable_features": sorted(set(varying) - set(sep)), "date_ordered_features": dated,
                    "lean_on": ["verified single-change rows", "within-lineage contrasts", "our experiments"],
                    "statement": statement, "rule": RULE},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default="results/interventions.json", help="intervention matrix, e.g. results/interventions.json")
    p.add_argument("--evidence", default=None, help="verified evidence table folder (default: evidence/verified)")
    p.add_argument("--out", default="dags/cycle_0/identifiability.json", help="output JSON path")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from scripts.causal.core.paths import EVIDENCE_DIR
        from scripts.causal.evidence.table import load_table, single_change_entries

        data = read_json(args.input)
        verified = single_change_entries(load_table(args.evidence or EVIDENCE_DIR))
        result = check_identifiability(data.get("records") or [], verified=verified)
        write_json(args.out, result)
        v = result["verdict"]
        print(f"identifiability:{v['status']} separable:{len(v['separable_features'])} "
              f"lineage_contrasts:{result['n_lineage_contrasts']} out:{args.out}")
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
