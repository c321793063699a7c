"""Causal structure stage: expert DAG + FCI with tier knowledge, bootstrap, effects, identifiability, ranking.

``estimate(...)`` is the pure core the pipeline calls in-process; ``write_outputs`` writes
``causal_dag.json``, ``dag.png``, ``identifiability.json``, ``ranking.json`` and (with a previous
cycle) ``dag_diff.json``. Our own experiments enter as rows ``{"intervention", "feature", "value",
"val_bpb", "seed", "arm"}`` with a tier-0 regime variable ``regime_experiment`` (CD-NOD style context).

CLI: python scripts/causal/estimate_dag.py --input results/interventions.json --output-dir dags/cycle_0 \
        [--previous-dag dags/cycle_0/causal_dag.json] [--alpha 0.05] [--bootstrap 100] [--seed 0]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import PagEdge, read_json, write_json
from scripts.causal.dag.effects import (
    adjustment_set,
    causal_graph,
    combine_graphs,
    observational_effect,
    pool_ablations,
    pool_verified,
)
from scripts.causal.dag.expert import DEFAULT_EXPERT, TARGET, ExpertDag, load_expert
from scripts.causal.dag.identifiability import check_identifiability
from scripts.causal.dag.prepare import CONTEXTS, build_matrix, validate_experiment_rows
from scripts.causal.dag.search import (
    CI_TEST,
    bootstrap_fci,
    canonical_edge,
    parse_edge,
    run_fci,
    run_pc,
)
from scripts.causal.select_interventions import (
    as_candidates,
    expert_strengths,
    in_stack_reasons,
    rank_candidates,
    read_transfer,
    registry_candidates,
    registry_classes,
)

STABLE = 0.5
RENDER_MIN_FREQ = 0.2


def _records(matrix: Mapping | Sequence) -> list[dict]:
    if isinstance(matrix, Mapping):
        recs = matrix.get("records")
        if not isinstance(recs, list):
            raise DataFormatError("intervention matrix: field 'records' must be a list (see results/interventions.json)")
        return recs
    return list(matrix)


def _edge_dict(e: PagEdge, freq: float | None = None) -> dict:
    (a, b), text = canonical_edge(e)
    out = {"a": a, "b": b, "type": text}
    if freq is not None:
        out["bootstrap_frequency"] = freq
    return out


def experiment_effects(rows: Iterable) -> dict:
    """Separate analysis of our own rows: per intervention, treatment minus control paired by seed."""
    rows = validate_experiment_rows(rows)
    control = {r.seed: r.val_bpb for r in rows if r.arm == "control"}
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.arm == "treatment" and r.seed in control:
            by[r.intervention].append(r.val_bpb - control[r.seed])
    out = {}
    for name, d in sorted(by.items()):
        arr = np.array(d)
        out[name] = {"n_pairs": len(d), "mean_delta_bpb": float(arr.mean()),
                     "sd_delta": float(arr.std(ddof=1)) if len(d) > 1 else None}
    return out


def estimate(matrix: Mapping | Sequence, *, expert: ExpertDag | None = None, alpha: float = 0.05,
             bootstrap: int = 100, seed: int = 0, previous: Mapping | None = None,
             experiment_rows: Iterable | None = None, candidates: Iterable | None = None,
             ledger: Sequence[Mapping] | None = None, depth: int = 3, transfer: Mapping | None = None,
             verified: Sequence | None = None, stack: str | None = None, preset: str = "fast") -> dict:
    """Run the whole causal stage in memory; returns {"dag", "identifiability", "ranking", "diff"}.

    ``transfer`` (optional) maps a candidate class or name to its measured proxy-to-H100 agreement in [0, 1]
    (see ``select_interventions.rank_candidates``); absent, screen results are not discounted. ``verified``: the
    verified evidence table's entries (``evidence.table``); None reads the committed table (evidence/verified).
    ``stack``: the screens' control stack (``screen.stacks``) at ``preset``: candidates it contains are listed as
    "in the stack", and evidence is discounted by its stack's distance from it.

    The FCI graph and the back-door OLS estimates describe the leaderboard; the OLS figures are written as
    ``associations`` (cross-record, confounded by date and bundles) and never enter the ranking."""
    t0 = time.perf_counter()
    expert = expert or load_expert(DEFAULT_EXPERT)
    records = _records(matrix)
    exp_rows = validate_experiment_rows(experiment_rows or ())
    m = build_matrix(records, expert=expert, experiment_rows=exp_rows)
    if len(m.columns) < 2 or TARGET not in m.columns:
        raise DataFormatError(f"intervention matrix: after cleaning only {list(m.columns)} remain; nothing to search")
    full = run_fci(m.data, m.columns, m.tiers, alpha=alpha, depth=depth)
    pc = run_pc(m.data, m.columns, m.tiers, alpha=alpha, depth=depth)
    boot = bootstrap_fci(m.data, m.columns, list(m.tiers), alpha=alpha, n_boot=bootstrap, seed=seed, depth=depth)
    bfreq = boot["edges"]
    data_edges = {canonical_edge(e)[0]: e for e in full.edges}
    for (a, b), info in bfreq.items():
        if info["frequency"] >= STABLE and (a, b) not in data_edges:
            data_edges[(a, b)] = parse_edge(info["modal_type"])
    stable = [{"a": a, "b": b, "frequency": v["frequency"], "modal_type": v["modal_type"]}
              for (a, b), v in bfreq.items() if v["frequency"] >= STABLE]
    combined = combine_graphs(expert, data_edges.values(), bfreq, feature_of=m.feature_of)
    # Back-door sets use the expert edges and the stable data edges only (a link seen in < 50% of
    # resamples would add a latent confounder on weak evidence and bloat every adjustment set).
    stable_edges = [e for k, e in data_edges.items() if bfreq.get(k, {}).get("frequency", 0.0) >= STABLE]
    g = causal_graph(expert, stable_edges, feature_of=m.feature_of)
    max_adjust = max(1, m.n // 6)
    observed = set(m.feature_of.values())
    cols_of: dict[str, list[str]] = defaultdict(list)
    for c, f in m.feature_of.items():
        cols_of[f].append(c)
    pooled, unmapped = pool_ablations(records)
    if verified is None:
        from scripts.causal.evidence.table import entries, load_table

        verified = entries(load_table())
    control = _control_features(records, stack)
    verified_pool = pool_verified(verified, records, control=control)
    effects = {}
    for col, tier in zip(m.columns, m.tiers, strict=True):
        if tier != 0 or col in CONTEXTS:
            continue
        feat = m.feature_of[col]
        z_feats, valid = adjustment_set(g, feat, observed)
        z_cols = [c for f in z_feats for c in cols_of[f]] + [c for c in cols_of[feat] if c != col]
        z_cols += [c for c in CONTEXTS if c in m.columns]  # context variables are always adjusted for
        eff = observational_effect(m, col, z_cols)
        reliable = valid and eff.get("se") is not None and len(z_cols) <= max_adjust
        eff.update({"feature": feat, "adjustment_features": z_feats, "adjustment_valid": valid,
                    "kind": "cross-record association, not an effect", "used_by_ranking": False,
                    "note": eff.get("note") or (
                        "records with and without this feature differ in date and in many other changes; the "
                        "back-door set adjusts for the graph's other features only" + (
                            "" if reliable else f" (and here it has {len(z_cols)} columns for n={m.n}, limit "
                                                f"{max_adjust}, or is not a valid back-door set)"))})
        effects[col] = eff
    ident = check_identifiability(records, verified=verified)
    exp_eff = experiment_effects(exp_rows)
    ledger_rows = list(ledger or [])
    known = {r.get("intervention") for r in ledger_rows}
    for name, e in exp_eff.items():  # our paired deltas count as evidence until the statistics stage rules
        if name not in known:
            half = 1.96 * (e["sd_delta"] or 0.0) / np.sqrt(e["n_pairs"])
            ledger_rows.append({"intervention": name, "mean_delta_bpb": e["mean_delta_bpb"], "decision": None,
                                "ci_low": e["mean_delta_bpb"] - half if half > 0 else None,
                                "ci_high": e["mean_delta_bpb"] + half if half > 0 else None})
    cands = as_candidates(candidates if candidates is not None else registry_candidates())
    ranking = rank_candidates(cands, ablations=verified_pool, identifiability=ident, ledger=ledger_rows,
                              in_stack=in_stack_reasons(stack, preset, [c.name for c in cands]),
                              prior_strength=expert_strengths(expert), transfer=transfer,
                              classes=registry_classes())
    ranking["control"] = {"stack": stack, "preset": preset if stack else None,
                          "features_from": (f"record {_stack_record(stack)}" if stack else "the naive baseline")}
    note = (f"{len(stable)} data-driven edge(s) appear in >= {STABLE:.0%} of {bootstrap} resamples"
            if stable else f"no edge reaches {STABLE:.0%} of resamples: with n={m.n} rows the rank Fisher-z test at "
            f"alpha={alpha} rarely rejects independence, so adjacencies are unstable")
    dag = {
        "n_rows": m.n, "alpha": alpha, "ci_test": CI_TEST, "seed": seed, "depth": depth,
        "preparation": {"columns": [{"name": c, "tier": t, "feature": m.feature_of[c],
                                     "variance": float(np.var(m.column(c)))} for c, t in zip(m.columns, m.tiers, strict=True)],
                        "dropped": list(m.dropped), "imputed": list(m.imputed), "excluded_rows": list(m.excluded_rows),
                        "n_experiment_rows": len(exp_rows)},
        "background_knowledge": {"tiers": dict(zip(m.columns, m.tiers, strict=True)),
                                 "rules": ["no edge points from a later tier into an earlier one",
                                           f"nothing leaves {TARGET} (the only tier-2 node)",
                                           f"context variables {list(CONTEXTS)} are tier 0 (CD-NOD style)"],
                                 "marks_repaired": full.bk_repairs},
        "fci": {"edges": [_edge_dict(e, bfreq.get(canonical_edge(e)[0], {}).get("frequency", 0.0)) for e in full.edges]},
        "pc": {"edges": [_edge_dict(e) for e in pc.edges], "note": "secondary view (CPDAG), same test and tiers"},
        "bootstrap": {"n_boot": boot["n_boot"], "failures": boot["failures"],
                      "edges": [{"a": a, "b": b, **v} for (a, b), v in bfreq.items()]},
        "stable_edges": stable, "stability_note": note,
        "combined": {"edges": combined, "tiers": {**expert.tiers, **{c: t for c, t in zip(m.columns, m.tiers, strict=True)}}},
        "associations": effects,
        "verified": {"pooled": verified_pool, "n_rows": sum(b["n"] for b in verified_pool.values()),
                     "note": "single-change rows of the verified evidence table (evidence/verified): the ranking's "
                             "leaderboard evidence"},
        "ablations": {"pooled": pooled, "unmapped": unmapped, "n_unmapped": len(unmapped),
                      "note": "rows as the miner typed them (results/interventions.json); descriptive, not used by "
                              "the ranking"},
        "experiments": exp_eff,
    }
    diff = diff_dags(previous, dag) if previous is not None else None
    dag["runtime_s"] = round(time.perf_counter() - t0, 3)
    return {"dag": dag, "identifiability": ident, "ranking": ranking, "diff": diff}


def _stack_record(stack: str | None) -> str | None:
    if stack is None:
        return None
    from scripts.causal.screen.stacks import get_stack

    return get_stack(stack).record


def _control_features(records: Sequence[Mapping], stack: str | None) -> Mapping | None:
    """The control stack's canonical features: the stack record's, or None (the naive baseline)."""
    rid = _stack_record(stack)
    if rid is None:
        return None
    rec = next((r for r in records if r.get("record_id") == rid), None)
    if rec is None or not isinstance(rec.get("features"), Mapping):
        raise DataFormatError(f"stack {stack!r}: its record {rid!r} is not in the intervention matrix; rebuild it "
                              "with scripts/causal/extract_interventions.py")
    return rec["features"]


def diff_dags(previous: Mapping, current: Mapping) -> dict:
    """Edges added, removed, or with a changed mark (type) or source between two causal_dag.json files."""
    def index(d):
        return {(e["a"], e["b"]) if e["a"] <= e["b"] else (e["b"], e["a"]): e
                for e in (d.get("combined") or {}).get("edges", [])}
    old, new = index(previous), index(current)
    changed = []
    for k in sorted(old.keys() & new.keys()):
        o, n = old[k], new[k]
        what = [f for f in ("type", "source") if o.get(f) != n.get(f)]
        if what:
            changed.append({"a": k[0], "b": k[1], "changed": what, "before": {f: o.get(f) for f in what},
                            "after": {f: n.get(f) for f in what}})
    return {"added": [new[k] for k in sorted(new.keys() - old.keys())],
            "removed": [old[k] for k in sorted(old.keys() - new.keys())], "changed": changed}


def write_outputs(result: Mapping, output_dir: str | Path, *, render: bool = True) -> list[Path]:
    """Write the stage's JSON files (and dag.png) into ``output_dir``."""
    from scripts.causal.dag.render import render_dag

    out = Path(output_dir)
    paths = [write_json(out / "causal_dag.json", result["dag"]),
             write_json(out / "identifiability.json", result["identifiability"]),
             write_json(out / "ranking.json", result["ranking"])]
    if result.get("diff") is not None:
        paths.append(write_json(out / "dag_diff.json", result["diff"]))
    if render:
        dag = result["dag"]
        title = (f"Combined causal graph (n={dag['n_rows']} rows, FCI alpha={dag['alpha']}, "
                 f"{dag['bootstrap']['n_boot']} bootstraps; data edges with frequency >= {RENDER_MIN_FREQ} shown)")
        paths.append(render_dag(dag["combined"]["edges"], dag["combined"]["tiers"], out / "dag.png", title=title,
                                min_frequency=RENDER_MIN_FREQ))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default="results/interventions.json", help="intervention matrix, e.g. results/interventions.json")
    p.add_argument("--output-dir", default="dags/cycle_0", help="folder for the outputs, e.g. dags/cycle_0")
    p.add_argument("--expert", default=str(DEFAULT_EXPERT), help="curated expert DAG, e.g. dags/expert.json")
    p.add_argument("--previous-dag", default=None, help="previous cycle's causal_dag.json, e.g. dags/cycle_0/causal_dag.json")
    p.add_argument("--experiment-rows", default=None,
                   help="JSON with 'rows': [{intervention, feature, value, val_bpb, seed, arm}] from our runs")
    p.add_argument("--ledger-results", default=None, help="ablation_results.json of our experiments")
    p.add_argument("--transfer", default=None, metavar="PATH",
                   help="proxy-to-H100 transfer agreement per class, JSON {\"classes\": {\"activation\": 0.8}} "
                        "(absent: screen results are not discounted, and the ranking says so)")
    p.add_argument("--evidence", default=None, help="verified evidence table folder (default: evidence/verified)")
    p.add_argument("--stack", default=None, help="the control stack (screen.stacks), e.g. 11l_ema_leaky")
    p.add_argument("--preset", default="fast", help="the preset the stack is screened at, e.g. fast")
    p.add_argument("--alpha", type=float, default=0.05, help="CI-test level, e.g. 0.05")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples, e.g. 100")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed, e.g. 0")
    p.add_argument("--no-render", action="store_true", help="skip dag.png")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if not 0 < args.alpha < 1:
            raise DataFormatError(f"--alpha {args.alpha} must lie in (0, 1), e.g. 0.05")
        if args.bootstrap < 1:
            raise DataFormatError(f"--bootstrap {args.bootstrap} must be >= 1, e.g. 100")
        matrix = read_json(args.input)
        previous = read_json(args.previous_dag) if args.previous_dag else None
        rows = read_json(args.experiment_rows)["rows"] if args.experiment_rows else None
        ledger = read_json(args.ledger_results)["results"] if args.ledger_results else None
        from scripts.causal.core.paths import EVIDENCE_DIR
        from scripts.causal.evidence.table import entries, load_table

        result = estimate(matrix, expert=load_expert(args.expert), alpha=args.alpha, bootstrap=args.bootstrap,
                          seed=args.seed, previous=previous, experiment_rows=rows, ledger=ledger,
                          transfer=read_transfer(args.transfer) if args.transfer else None,
                          verified=entries(load_table(args.evidence or EVIDENCE_DIR)), stack=args.stack,
                          preset=args.preset)
        digest = hashlib.sha256(Path(args.input).read_bytes()).hexdigest()
        result["dag"]["input"] = {"path": str(args.input), "sha256": digest}
        paths = write_outputs(result, args.output_dir, render=not args.no_render)
        dag = result["dag"]
        print(f"rows:{dag['n_rows']} columns:{len(dag['preparation']['columns'])} fci_edges:{len(dag['fci']['edges'])} "
              f"stable_edges:{len(dag['stable_edges'])} candidates:{len(result['ranking']['candidates'])} "
              f"identifiability:{result['identifiability']['verdict']['status']} runtime_s:{dag['runtime_s']}")
        for p in paths:
            print(f"wrote:{p}")
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
