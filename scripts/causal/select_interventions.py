"""Rank the next interventions to run by the probability that each beats the effect of interest at target scale.

Per candidate (delta val_bpb of adding it; < 0 = better) the evidence is combined by precision
(``dag.evidence`` says how each item is discounted):

- a weak prior N(0, prior_sd^2), wider for features the expert DAG links strongly to val_bpb;
- verified single-change H100 rows of its knob (the verified evidence table; the candidate's exact change at full
  weight, other stretches of a numeric knob discounted), discounted by seeds, metric, hardware and the distance
  of the row's stack from the control stack;
- within-lineage contrasts (a record against its stated base, differing in the candidate's feature alone), with
  their Welch interval widened for changes no canonical feature names;
- our own screen results, whatever the decision (``inconclusive`` rows stay in as data: only the data of a
  ``null`` or ``harmful`` result lowers a candidate; ``confirmed`` ones leave the list, as settled), discounted
  by the class's proxy-to-H100 transfer agreement once it is measured (``transfer``).

No cross-record association enters (records with and without a feature differ in date and in many other changes;
``dag.identifiability``). The ranking is stack-aware: a candidate the control stack already contains (or that
changes nothing on it) is listed under ``excluded`` as "in the stack", never recommended.

Score: ``p_beats`` = P(delta < -effect_of_interest) under the posterior, plus a bounded exploration bonus
(``bonus_cap`` x posterior sd / prior sd). The bonus never lifts a candidate above one with consistent evidence
of gain: candidates are ordered first by that flag (the evidence alone, without the prior, gives
P(delta < 0) >= ``CONSISTENT_P`` and most items agree in sign), then by score. Pairs of candidates whose
features were never tried together on the leaderboard are ranked in ``combinations`` (a part is the feature's
best candidate, or "add_<feature>" from its leaderboard rows when no registry intervention exists: ``runnable``
false).

CLI: python scripts/causal/select_interventions.py --dag dags/cycle_0/causal_dag.json --identifiability dags/cycle_0/identifiability.json --out dags/cycle_0/ranking.json
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import networkx as nx

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import BASELINE_FEATURES, CandidateIntervention, read_json, write_json
from scripts.causal.dag.evidence import (
    SCALE_LIMITED,
    EvidenceItem,
    leaderboard_items,
    lineage_items,
    screen_item,
)

SETTLED = {"confirmed": "confirmed by our experiments: promote, no further screening"}
IN_STACK = "in the stack"
LOWERING = ("null", "harmful")  # decisions whose data stays in and lowers the candidate
EFFECT_OF_INTEREST = 0.001  # bpb: the smallest gain worth a screen slot (about a third of the 0.005-nat record bar)
BONUS_CAP = 0.05
CONSISTENT_P = 0.8
OVERLAP = 0.25


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


def pool(evidence: Sequence, *, prior_sd: float) -> tuple[float, float]:
    """Precision-weighted mean and sd of N(0, prior_sd^2) and the evidence items ((name, mean, sd) or
    ``EvidenceItem``)."""
    prec = 1.0 / prior_sd**2
    acc = 0.0
    for it in evidence:
        mu, sd = (it.mean, it.sd) if isinstance(it, EvidenceItem) else (it[1], it[2])
        w = 1.0 / max(sd, 1e-6) ** 2
        prec += w
        acc += w * mu
    return acc / prec, math.sqrt(1.0 / prec)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def consistent_gain(items: Sequence[EvidenceItem]) -> bool:
    """The evidence alone (no prior) says P(delta < 0) >= CONSISTENT_P and at most a third of items disagree."""
    if not items:
        return False
    prec = sum(1 / it.sd**2 for it in items)
    mean = sum(it.mean / it.sd**2 for it in items) / prec
    against = sum(it.mean > 0 for it in items)
    return _phi(-mean * math.sqrt(prec)) >= CONSISTENT_P and against <= len(items) / 3


def _concordant_gain(evidence: Sequence[Mapping]) -> bool:
    """Some leaderboard rows, and every one of them an improvement (however weak)."""
    rows = [e for e in evidence if e.get("source") == "leaderboard"]
    return bool(rows) and all(e["mean"] < 0 for e in rows)


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


def candidate_knobs(c: CandidateIntervention) -> list[str]:
    """The knobs whose verified rows can speak about ``c``: its canonical feature and the trainer fields that set it
    (``muon_weight_decay`` and ``muon_wd``), and the fields its registry entry sets on the baseline (``matrix_lr``
    for ``matrix_lr_half``)."""
    from scripts.causal.screen import registry as reg
    from train_gpt import Hyperparameters

    knobs = {c.feature} | {f for f, feat in reg.FIELD_FEATURE.items() if feat == c.feature} if c.feature else set()
    try:
        knobs |= set(reg.resolve_overrides(c.name, Hyperparameters()))
    except Exception:  # noqa: BLE001 - an ad-hoc candidate without a registry entry
        pass
    return sorted(knobs)


def _gather(c: CandidateIntervention, *, ablations, lineage, ledger, transfer, klass,
            default_ablation_sd) -> tuple[list[EvidenceItem], list[str]]:
    items, words = [], []
    rows = [r for k in candidate_knobs(c) for r in ((ablations or {}).get(k) or {}).get("rows", [])]
    lb, notes = leaderboard_items(c, {"rows": rows})
    items += lb
    words += notes
    items += lineage_items(c, lineage or ())
    exp, note = screen_item(c, ledger.get(c.name), transfer=transfer, klass=klass, default_sd=default_ablation_sd)
    if exp is not None:
        items.append(exp)
    if note and exp is not None:
        words.append(note)
    return items, words


def rank_candidates(candidates: Iterable, *, ablations: Mapping[str, Mapping] | None = None,
                    lineage: Sequence[Mapping] | None = None, identifiability: Mapping | None = None,
                    in_stack: Mapping[str, str] | None = None,
                    ledger: Mapping[str, Mapping] | Sequence[Mapping] | None = None, kappa: float = 1.0,
                    prior_sd: float = 0.01, default_ablation_sd: float = 0.004, interaction_sd: float = 0.003,
                    max_pair_parents: int = 6, prior_strength: Mapping[str, float] | None = None,
                    effect_of_interest: float = EFFECT_OF_INTEREST, bonus_cap: float = BONUS_CAP,
                    transfer: Mapping | None = None, classes: Mapping[str, str] | None = None,
                    overlap: float = OVERLAP) -> dict:
    """Score each candidate and each never-tried pair; return ranked, excluded and combination lists (pure).

    ``ablations``: verified rows by knob (``dag.effects.pool_verified``); ``lineage``: within-lineage contrasts
    (``dag.identifiability.lineage_contrasts``); ``in_stack`` maps a candidate the control stack already contains
    to the reason (it is excluded as "in the stack").

    ``prior_strength`` (feature -> 0..1, e.g. ``expert_strengths(expert)``) widens the prior of features the
    expert DAG links strongly to val_bpb: prior sd = prior_sd * (0.5 + strength); unknown features use 0.5.
    ``transfer`` maps a class (registry category) or a candidate name to its proxy-to-H100 agreement in
    [0, 1] (a number or ``{"agreement": a}``); ``classes`` maps candidate names to classes (default: the
    registry's categories, else the feature). ``kappa`` scales the exploration bonus (0 = none).
    """
    cands = as_candidates(candidates)
    if lineage is None:
        lineage = (identifiability or {}).get("lineage_contrasts") or ()
    if isinstance(ledger, Sequence):
        ledger = {r["intervention"]: r for r in ledger}
    ledger = ledger or {}
    classes = dict(classes or {})
    ranked, excluded = [], []
    for c in cands:
        row = ledger.get(c.name)
        if c.name in (in_stack or {}):
            excluded.append({"name": c.name, "feature": c.feature, "reason": f"{IN_STACK}: {in_stack[c.name]}",
                             "in_stack": True, "mean_delta_bpb": None})
            continue
        if row and row.get("decision") in SETTLED:
            excluded.append({"name": c.name, "feature": c.feature, "reason": SETTLED[row["decision"]],
                             "mean_delta_bpb": row.get("mean_delta_bpb")})
            continue
        klass = classes.get(c.name) or c.feature or c.name
        items, words = _gather(c, ablations=ablations, lineage=lineage, ledger=ledger, transfer=transfer,
                               klass=klass, default_ablation_sd=default_ablation_sd)
        strength = (prior_strength or {}).get(c.feature, 0.5)
        psd = prior_sd * (0.5 + strength)
        if prior_strength is not None:
            words.insert(0, f"expert path strength to val_bpb {strength:.2f}")
        if row and row.get("decision") in LOWERING:
            words.append(f"our screen says {row['decision']}: its data lowers the candidate")
        if c.feature in SCALE_LIMITED and any(it.source == "leaderboard" for it in items):
            words.append(f"scale caveat: {SCALE_LIMITED[c.feature]}")
        mu, sd = pool(items, prior_sd=psd)
        entry = _scored(c.name, [c.feature], c.description, mu, sd, items, words, prior_sd=psd,
                        eoi=effect_of_interest, bonus=kappa * bonus_cap)
        entry["class"] = klass
        entry["consistent_gain"] = consistent_gain(items)
        ranked.append(entry)
    # tiers: evidence that alone says "gain"; then leaderboard rows that all point to a gain (weak but concordant);
    # then everything else, prior-only candidates included. The score orders each tier.
    ranked.sort(key=lambda r: (not r["consistent_gain"], not _concordant_gain(r["evidence"]), -r["score"], r["name"]))
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    never = [tuple(p) for p in (identifiability or {}).get("never_tried_pairs", [])]
    parts = feature_parts(ranked, {f for p in never for f in p}, ablations=ablations, prior_sd=prior_sd,
                          prior_strength=prior_strength, eoi=effect_of_interest)
    combos = rank_combinations(parts, never, interaction_sd=interaction_sd, overlap=overlap,
                               max_parents=max_pair_parents, eoi=effect_of_interest)
    return {"schema": "p_beats = P(delta_bpb < -effect_of_interest); score = p_beats + exploration bonus "
                      "(<= kappa * bonus_cap, proportional to posterior sd / prior sd); candidates with consistent "
                      "evidence of gain first",
            "effect_of_interest": effect_of_interest, "kappa": kappa, "bonus_cap": bonus_cap, "prior_sd": prior_sd,
            "transfer": "measured for " + ", ".join(sorted(transfer)) if transfer else
                        "not measured: screen results not discounted for proxy-to-H100 transfer",
            "score": "p_beats + bonus", "candidates": ranked, "excluded": excluded, "combinations": combos}


def feature_parts(ranked: Sequence[Mapping], features: set[str], *, ablations: Mapping | None, prior_sd: float,
                  prior_strength: Mapping[str, float] | None, eoi: float) -> list[dict]:
    """One scored part per feature of a never-tried pair: the best-ranked candidate of that feature, else (a
    boolean feature with no runnable candidate) "add_<feature>" scored on its leaderboard rows and the prior."""
    out, seen = [], set()
    for r in ranked:
        f = r["features"][0] if r["features"] else ""
        if f in features and f not in seen:
            out.append({**r, "runnable": True})
            seen.add(f)
    for f in sorted(features - seen):
        if BASELINE_FEATURES.get(f) is not False:
            continue  # only presence features can be "added" without a registry value
        c = CandidateIntervention(f"add_{f}", f, f"add {f} (no registry intervention yet)", True)
        items, words = leaderboard_items(c, (ablations or {}).get(f))
        psd = prior_sd * (0.5 + (prior_strength or {}).get(f, 0.5))
        mu, sd = pool(items, prior_sd=psd)
        out.append({**_scored(c.name, [f], c.description, mu, sd, items, words, prior_sd=psd, eoi=eoi, bonus=0.0),
                    "runnable": False})
    return out


def rank_combinations(singles: Sequence[Mapping], never_tried: Iterable, *, interaction_sd: float, overlap: float,
                      max_parents: int, eoi: float) -> list[dict]:
    """Pairs of parts (``feature_parts``) whose features were never tried together on the leaderboard; the
    best ``max_parents * (max_parents - 1) / 2`` by P(beats the effect of interest) are kept.

    Interaction prior: when both parts are expected to help, the pair keeps all but ``overlap`` of the smaller
    gain (gains of tricks aimed at the same weakness overlap); sd ``interaction_sd``. Mean = mu_a + mu_b +
    interaction mean; variance = sd_a^2 + sd_b^2 + interaction_sd^2.
    """
    never = {tuple(sorted(p)) for p in never_tried}
    top = [r for r in singles if r["features"] and r["features"][0]]
    out = []
    for a, b in itertools.combinations(top, 2):
        fa, fb = a["features"][0], b["features"][0]
        if fa == fb or tuple(sorted((fa, fb))) not in never:
            continue
        ma, mb = a["mean_delta_bpb"], b["mean_delta_bpb"]
        inter = overlap * min(-ma, -mb) if ma < 0 and mb < 0 else 0.0
        mu = ma + mb + inter
        sd = math.sqrt(a["sd"] ** 2 + b["sd"] ** 2 + interaction_sd**2)
        p = _phi((-eoi - mu) / sd)
        out.append({"name": f"{a['name']}+{b['name']}", "features": [fa, fb], "mean_delta_bpb": mu, "sd": sd,
                    "runnable": bool(a.get("runnable", True) and b.get("runnable", True)),
                    "p_beats": p, "interaction_prior": {"mean": inter, "sd": interaction_sd},
                    "parts": [{"name": r["name"], "mean_delta_bpb": r["mean_delta_bpb"], "sd": r["sd"],
                               "evidence": [e["label"] for e in r["evidence"]] or ["prior only"]} for r in (a, b)],
                    "reason": (f"never tried together on the leaderboard; {a['name']} {ma:+.4f} + {b['name']} {mb:+.4f}"
                               f" + interaction {inter:+.4f} (overlap {overlap:.0%} of the smaller gain, sd "
                               f"{interaction_sd}) = {mu:+.4f} ±{sd:.4f}, P(beats {eoi} bpb)={p:.2f}")})
    out.sort(key=lambda r: (-r["p_beats"], r["name"]))
    out = out[: max_parents * (max_parents - 1) // 2]
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _scored(name, features, description, mu, sd, items, words, *, prior_sd, eoi, bonus) -> dict:
    imp = -mu
    p_beats = _phi((-eoi - mu) / sd)
    p_improve = _phi(imp / sd)
    explore = bonus * min(1.0, sd / prior_sd)
    lb = [it for it in items if it.source == "leaderboard"]
    head = (f"P(beats {eoi} bpb)={p_beats:.2f}, expected improvement {imp:+.4f} bpb (sd {sd:.4f}), "
            f"exploration bonus {explore:.3f}")
    if not items:
        words = words + ["no evidence yet: prior only (worth a first look)"]
    elif lb:
        words = [f"{len(lb)} leaderboard row(s): " + "; ".join(it.label for it in lb)] + words
    words = words + [it.label for it in items if it.source != "leaderboard"]
    return {"name": name, "features": features, "description": description, "mean_delta_bpb": mu, "sd": sd,
            "expected_improvement": imp, "p_improve": p_improve, "p_beats": p_beats, "exploration_bonus": explore,
            "score": p_beats + explore,
            "evidence": [{"source": it.source, "mean": it.mean, "sd": it.sd, "label": it.label} for it in items],
            "reason": head + "; " + "; ".join(words)}


def in_stack_reasons(stack: str | None, preset: str, names: Iterable[str]) -> dict[str, str]:
    """Candidate -> why the control ``stack`` already has it (part of the stack, its feature set by another of the
    stack's entries, or no change there); empty for the bare preset."""
    if stack is None:
        return {}
    from scripts.causal.screen import registry as reg
    from scripts.causal.screen.stacks import stack_config, stack_conflict

    control = stack_config(stack, preset)
    out = {}
    for name in names:
        why = stack_conflict(stack, name, preset)
        if why is not None and reg.representable(name, control) is None:  # not "cannot be expressed here"
            out[name] = why
    return out


def registry_classes() -> dict[str, str]:
    """Candidate name -> registry category (the class whose proxy-to-H100 transfer is measured)."""
    from scripts.causal.screen import registry as reg

    return {iv.name: iv.category for iv in reg.list_interventions()}


def read_transfer(path: str | Path) -> dict:
    """``{"classes": {class_or_name: agreement | {"agreement": a, ...}}}`` from a transfer JSON."""
    data = read_json(path)
    classes = data.get("classes")
    if not isinstance(classes, Mapping):
        raise DataFormatError(f"{path}: needs a 'classes' object mapping a class or intervention name to its "
                              "proxy-to-H100 agreement in [0, 1], e.g. {\"classes\": {\"activation\": 0.8}}")
    return dict(classes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dag", default="dags/cycle_0/causal_dag.json", help="causal_dag.json from estimate_dag.py")
    p.add_argument("--identifiability", default=None, help="identifiability.json (default: beside --dag)")
    p.add_argument("--ledger-results", default=None, help="ablation_results.json of our experiments, e.g. results/ablation_results.json")
    p.add_argument("--transfer", default=None, metavar="PATH",
                   help="proxy-to-H100 transfer agreement per class, JSON {\"classes\": {\"activation\": 0.8}} "
                        "(absent: screen results are not discounted, and the ranking says so)")
    p.add_argument("--effect-of-interest", type=float, default=EFFECT_OF_INTEREST,
                   help=f"bpb gain the score asks for: P(delta < -this), e.g. {EFFECT_OF_INTEREST}")
    p.add_argument("--kappa", type=float, default=1.0,
                   help=f"exploration bonus weight (bonus <= kappa x {BONUS_CAP}), e.g. 1.0; 0 = none")
    p.add_argument("--stack", default=None, help="the control is this leaderboard stack (screen.stacks), e.g. "
                                                 "11l_ema_leaky: what it contains is listed 'in the stack'")
    p.add_argument("--preset", default="fast", help="the preset the stack is screened at, e.g. fast")
    p.add_argument("--out", default=None, help="output JSON (default: ranking.json beside --dag)")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        dag = read_json(args.dag)
        ident = read_json(args.identifiability or Path(args.dag).with_name("identifiability.json"))
        ledger = read_json(args.ledger_results)["results"] if args.ledger_results else None
        cands = registry_candidates()
        result = rank_candidates(cands, ablations=dag.get("verified", {}).get("pooled", {}), identifiability=ident,
                                 in_stack=in_stack_reasons(args.stack, args.preset, [c.name for c in cands]),
                                 ledger=ledger, kappa=args.kappa, effect_of_interest=args.effect_of_interest,
                                 transfer=read_transfer(args.transfer) if args.transfer else None,
                                 classes=registry_classes())
        out = args.out or Path(args.dag).with_name("ranking.json")
        write_json(out, result)
        print(f"ranking:{len(result['candidates'])} excluded:{len(result['excluded'])} "
              f"combinations:{len(result['combinations'])} out:{out}")
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
