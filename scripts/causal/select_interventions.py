"""Rank the next interventions to run: pooled normal prior per candidate, scored by upper confidence bound.

Evidence per candidate (delta val_bpb of adding it; < 0 = better), combined by precision weighting:
a weak prior N(0, prior_sd^2); the observational estimate from the DAG stage (variance x4 when the
feature is not identified, left out when the verdict is "under_identified"); pooled leaderboard
ablation rows; and our own ledger results (``ablation_results.json`` rows). Score: UCB =
expected improvement + kappa * sd. Candidates already confirmed or refuted (confirmed / harmful / null)
are left out and listed with the reason. Pairs of candidates whose features were never tried together
on the leaderboard are ranked too (sum of means, variances plus an interaction term).

CLI: python scripts/causal/select_interventions.py --dag dags/cycle_0/causal_dag.json --identifiability dags/cycle_0/identifiability.json --out dags/cycle_0/ranking.json
"""
from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import networkx as nx

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.schema import BASELINE_FEATURES, CandidateIntervention, read_json, write_json

SETTLED = {"confirmed": "confirmed by our experiments", "harmful": "refuted: harmful in our experiments",
           "null": "refuted: no effect beyond the margin in our experiments"}
_DECREASE = ("down", "half", "minus", "smaller", "fewer", "less", "lower", "off", "remove", "no_")


def registry_candidates() -> list[CandidateIntervention]:
    """Runnable interventions from the experiment registry (calibration ones excluded).

    Each candidate's ``value`` is its feature's value applied to the baseline config (None when the feature
    has no config mapping).
    """
    from scripts.causal.screen import registry as reg
    from train_gpt import Hyperparameters

    base = Hyperparameters()
    skip = set(reg.CALIBRATION)
    out = []
    for iv in reg.list_interventions():
        if iv.name in skip:
            continue
        value = None
        if iv.feature:
            try:
                value = reg.feature_value(iv.feature, reg.apply(iv.name, base))
            except Exception:  # noqa: BLE001 - a feature without a config mapping has no value
                value = None
        out.append(CandidateIntervention(iv.name, iv.feature or "", iv.description, value))
    return out


def as_candidates(items: Iterable) -> list[CandidateIntervention]:
    """Accept CandidateIntervention, (name, feature, description[, value]) tuples or mappings with those keys."""
    out = []
    for it in items:
        if isinstance(it, CandidateIntervention):
            out.append(it)
        elif isinstance(it, Mapping):
            out.append(CandidateIntervention(str(it["name"]), str(it.get("feature") or ""),
                                             str(it.get("description", "")), it.get("value")))
        else:
            name, feature, *rest = it
            out.append(CandidateIntervention(str(name), str(feature or ""), str(rest[0]) if rest else "",
                                             rest[1] if len(rest) > 1 else None))
    return out


def _level(c: CandidateIntervention) -> str | None:
    """The categorical level a candidate sets: its ``value`` if a string, else a level named in its name."""
    if isinstance(c.value, str):
        return c.value
    return None


def _pick_effect(c: CandidateIntervention, effects: Mapping[str, Mapping]) -> Mapping | None:
    """The observational effect row for this candidate's feature (matching a categorical level)."""
    rows = [e for e in effects.values() if e.get("feature") == c.feature and e.get("estimate") is not None]
    if not rows:
        return None
    level = _level(c)
    if level is not None:
        return next((e for e in rows if e["column"] == f"{c.feature}={level}"), None)
    text = f"{c.name} {c.description}".lower()
    levels = [e for e in rows if "=" in e["column"] and e["column"].split("=", 1)[1].lower() in text]
    if levels:
        return max(levels, key=lambda e: len(e["column"]))
    plain = [e for e in rows if "=" not in e["column"]]
    return plain[0] if plain else None


def _ablation_evidence(c: CandidateIntervention, abl: Mapping | None) -> Mapping | None:
    """Pooled ablations of the feature; for a categorical level only the rows that name that level."""
    if not abl:
        return None
    level = _level(c)
    if level is None:
        return abl
    token = re.split(r"[_\d]", level.lower())[0]
    rows = [r for r in abl.get("rows", []) if token and token in r["change"].lower()]
    if not rows:
        return None
    xs = [r["delta_bpb"] for r in rows]
    mean = sum(xs) / len(xs)
    sd = (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "sd": sd}


def pool(evidence: list[tuple[str, float, float]], *, prior_sd: float) -> tuple[float, float]:
    """Precision-weighted mean and sd of N(0, prior_sd^2) and the (name, mean, sd) evidence items."""
    prec = 1.0 / prior_sd**2
    acc = 0.0
    for _, mu, sd in evidence:
        w = 1.0 / max(sd, 1e-6) ** 2
        prec += w
        acc += w * mu
    return acc / prec, math.sqrt(1.0 / prec)


def _evidence(c: CandidateIntervention, *, effects, ablations, identifiability, ledger,
              default_ablation_sd: float) -> tuple[list[tuple[str, float, float]], list[str]]:
    ev, words = [], []
    verdict = (identifiability or {}).get("verdict", {})
    status = verdict.get("status", "identified")
    feat_ident = ((identifiability or {}).get("per_feature", {}).get(c.feature) or {}).get("identifiable", True)
    eff = _pick_effect(c, effects)
    if eff is not None and eff.get("se"):
        mu, sd = float(eff["estimate"]), float(eff["se"])
        if eff.get("unit", "0 -> 1") != "0 -> 1":
            base = BASELINE_FEATURES.get(c.feature)
            if isinstance(c.value, (int, float)) and isinstance(base, (int, float)) and eff.get("scale"):
                steps = (float(c.value) - float(base)) / float(eff["scale"])
                words.append(f"observational {mu:+.4f} per SD x {steps:+.2f} SD ({c.feature} {base} -> {c.value})")
            else:
                steps = -1.0 if any(k in c.name.lower() for k in _DECREASE) else 1.0
                words.append(f"observational {mu:+.4f} per SD of {c.feature} ({'decrease' if steps < 0 else 'increase'} of 1 SD assumed)")
            mu, sd = mu * steps, sd * abs(steps)
        if status == "under_identified":
            words.append(f"observational {mu:+.4f} ±{sd:.4f} ignored (matrix under-identified)")
        else:
            if not eff.get("reliable", True):
                words.append(f"observational {mu:+.4f} not used ({eff.get('note', 'unreliable')})")
                eff = None
            elif not feat_ident or not eff.get("adjustment_valid", True):
                sd *= 2.0
                words.append(f"observational {mu:+.4f} (sd doubled: {c.feature} not identified)")
            else:
                words.append(f"observational {mu:+.4f} ±{sd:.4f} (n={eff.get('n')})")
            if eff is not None:
                ev.append(("observational", mu, sd))
    abl = _ablation_evidence(c, (ablations or {}).get(c.feature))
    base = BASELINE_FEATURES.get(c.feature)
    if abl and isinstance(base, (int, float)) and not isinstance(base, bool):
        words.append(f"{abl['n']} ablation row(s) of numeric {c.feature} not used (direction of change unknown)")
        abl = None
    if abl:
        sd = (abl["sd"] if abl.get("sd") else default_ablation_sd) / math.sqrt(abl["n"])
        ev.append(("ablations", float(abl["mean"]), sd))
        words.append(f"{abl['n']} leaderboard ablation(s) mean {abl['mean']:+.4f}")
    row = (ledger or {}).get(c.name)
    if row and row.get("mean_delta_bpb") is not None:
        lo, hi = row.get("ci_low"), row.get("ci_high")
        sd = (hi - lo) / (2 * 1.96) if lo is not None and hi is not None and hi > lo else default_ablation_sd
        ev.append(("experiments", float(row["mean_delta_bpb"]), sd))
        words.append(f"our experiments {row['mean_delta_bpb']:+.4f} ({row.get('decision') or 'paired runs, no decision yet'})")
    if not ev:
        words.append("no evidence yet: prior only (worth a first look)")
    return ev, words


def expert_strengths(expert, *, target: str = "val_bpb") -> dict[str, float]:
    """Per node: the strongest path to ``target`` in the expert DAG (product of edge strengths)."""
    g = expert.graph()
    best: dict[str, float] = {target: 1.0}
    for node in reversed(list(nx.topological_sort(g))):
        vals = [g.edges[node, v]["strength"] * best[v] for v in g.successors(node) if v in best]
        if vals:
            best[node] = max(vals)
    best.pop(target, None)
    return best


def rank_candidates(candidates: Iterable, *, effects: Mapping[str, Mapping] | None = None,
                    ablations: Mapping[str, Mapping] | None = None, identifiability: Mapping | None = None,
                    ledger: Mapping[str, Mapping] | Sequence[Mapping] | None = None, kappa: float = 1.0,
                    prior_sd: float = 0.01, default_ablation_sd: float = 0.004, interaction_sd: float = 0.003,
                    max_pair_parents: int = 6, prior_strength: Mapping[str, float] | None = None) -> dict:
    """Score each candidate and never-tried pair by UCB; return ranked and excluded lists (pure).

    ``prior_strength`` (feature -> 0..1, e.g. ``expert_strengths(expert)``) widens the prior of features the
    expert DAG links strongly to val_bpb: prior sd = prior_sd * (0.5 + strength); unknown features use 0.5.
    """
    cands = as_candidates(candidates)
    effects = effects or {}
    if isinstance(ledger, Sequence):
        ledger = {r["intervention"]: r for r in ledger}
    ledger = ledger or {}
    ranked, excluded = [], []
    for c in cands:
        row = ledger.get(c.name)
        if row and row.get("decision") in SETTLED:
            excluded.append({"name": c.name, "feature": c.feature, "reason": SETTLED[row["decision"]],
                             "mean_delta_bpb": row.get("mean_delta_bpb")})
            continue
        ev, words = _evidence(c, effects=effects, ablations=ablations, identifiability=identifiability,
                              ledger=ledger, default_ablation_sd=default_ablation_sd)
        strength = (prior_strength or {}).get(c.feature, 0.5)
        if prior_strength is not None:
            words.insert(0, f"expert path strength to val_bpb {strength:.2f}")
        mu, sd = pool(ev, prior_sd=prior_sd * (0.5 + strength))
        ranked.append(_scored(c.name, [c.feature], c.description, mu, sd, kappa, ev, words))
    never = {tuple(sorted(p)) for p in (identifiability or {}).get("never_tried_pairs", [])}
    singles = sorted(ranked, key=lambda r: -r["ucb"])[:max_pair_parents]
    for a, b in itertools.combinations(singles, 2):
        fa, fb = a["features"][0], b["features"][0]
        if fa == fb or not fa or not fb:
            continue
        if tuple(sorted((fa, fb))) not in never:
            continue
        mu = a["mean_delta_bpb"] + b["mean_delta_bpb"]
        sd = math.sqrt(a["sd"] ** 2 + b["sd"] ** 2 + interaction_sd**2)
        words = [f"never tried together on the leaderboard; sum of the two means, +{interaction_sd} interaction sd"]
        ranked.append(_scored(f"{a['name']}+{b['name']}", [fa, fb], "pairwise combination", mu, sd, kappa, [], words))
    ranked.sort(key=lambda r: (-r["ucb"], r["name"]))
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return {"kappa": kappa, "prior_sd": prior_sd, "score": "ucb = -mean_delta_bpb + kappa * sd",
            "candidates": ranked, "excluded": excluded}


def _scored(name, features, description, mu, sd, kappa, ev, words) -> dict:
    imp = -mu
    p_improve = 0.5 * (1 + math.erf(imp / (sd * math.sqrt(2))))
    reason = (f"expected improvement {imp:+.4f} bpb (sd {sd:.4f}, P(better)={p_improve:.2f}); " + "; ".join(words))
    return {"name": name, "features": features, "description": description, "mean_delta_bpb": mu, "sd": sd,
            "expected_improvement": imp, "ucb": imp + kappa * sd, "p_improve": p_improve,
            "evidence": [{"source": s, "mean": m, "sd": d} for s, m, d in ev], "reason": reason}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dag", default="dags/cycle_0/causal_dag.json", help="causal_dag.json from estimate_dag.py")
    p.add_argument("--identifiability", default=None, help="identifiability.json (default: beside --dag)")
    p.add_argument("--ledger-results", default=None, help="ablation_results.json of our experiments, e.g. results/ablation_results.json")
    p.add_argument("--kappa", type=float, default=1.0, help="UCB exploration weight, e.g. 1.0")
    p.add_argument("--out", default=None, help="output JSON (default: ranking.json beside --dag)")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        dag = read_json(args.dag)
        ident = read_json(args.identifiability or Path(args.dag).with_name("identifiability.json"))
        ledger = read_json(args.ledger_results)["results"] if args.ledger_results else None
        result = rank_candidates(registry_candidates(), effects=dag.get("effects", {}),
                                 ablations=dag.get("ablations", {}).get("pooled", {}), identifiability=ident,
                                 ledger=ledger, kappa=args.kappa)
        out = args.out or Path(args.dag).with_name("ranking.json")
        write_json(out, result)
        print(f"ranking:{len(result['candidates'])} excluded:{len(result['excluded'])} out:{out}")
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
