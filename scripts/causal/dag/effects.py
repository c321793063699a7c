"""Merge expert and data graphs, describe cross-record associations, pool verified and mined ablation rows.

Combined graph: every edge is labelled expert / data / both / conflict with its bootstrap frequency.
Association: OLS of val_bpb on a feature column plus a back-door set chosen from the combined graph (networkx
d-separation; o-o / <-> edges become a latent common cause), HC3 robust SEs. Across leaderboard records this is
an association, confounded by date and by bundles of changes: it is reported, never used as an effect.
``pool_verified`` shapes the verified single-change rows (``evidence/verified``) the ranking reads;
``pool_ablations`` pools the miner's typed rows (descriptive only).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping

import networkx as nx
import numpy as np

from scripts.causal.core.schema import BASELINE_FEATURES, AblationRow, PagEdge
from scripts.causal.dag.expert import TARGET, ExpertDag
from scripts.causal.dag.prepare import PreparedMatrix
from scripts.causal.dag.search import canonical_edge
from scripts.causal.extract.row_types import MAX_ABS_DELTA, map_change, type_rows  # noqa: F401 - map_change re-exported


def record_distance(rec: Mapping, control: Mapping | None = None) -> int | None:
    """Number of canonical features where a record's stack differs from the control (the naive baseline)."""
    feats = rec.get("features")
    if not isinstance(feats, Mapping):
        return None
    control = BASELINE_FEATURES if control is None else control
    return sum(1 for f, v in control.items() if f in feats and feats[f] is not None and feats[f] != v)


def _direction(frm, to, knob: str | None) -> int:
    """+1 when an entry adds / raises / moves to a non-baseline level, -1 for the reverse."""
    if isinstance(to, bool) or isinstance(frm, bool):
        return 1 if to else -1
    if isinstance(frm, (int, float)) and isinstance(to, (int, float)):
        return 1 if to > frm else -1
    base = BASELINE_FEATURES.get(knob or "")
    return -1 if base is not None and str(to).lower() == str(base).lower() else 1


def pool_verified(entries: Iterable, records: Iterable[Mapping], *, control: Mapping | None = None,
                  max_abs_delta: float = MAX_ABS_DELTA) -> dict[str, dict]:
    """Per knob (canonical feature, else trainer field): the verified single-change rows (``EvidenceEntry``) with a
    bpb delta, shaped as the ranking reads them; ``distance`` counts the canonical features where the row's stack
    (its ``stack_record``, else its own record) differs from ``control`` (default: the naive baseline)."""
    by_id = {r.get("record_id"): r for r in records}
    rows_by: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        if not e.is_single_change or e.delta_bpb is None or not e.knob or abs(e.delta_bpb) > max_abs_delta:
            continue
        direction = _direction(e.from_value, e.to_value, e.knob)
        stack = by_id.get(e.stack_record) or by_id.get(e.record_id)
        rows_by[e.knob].append({
            "change": e.change, "delta_bpb": direction * e.delta_bpb, "reported_delta_bpb": e.delta_bpb,
            "direction": direction, "from_value": e.from_value, "to_value": e.to_value, "metric": e.metric,
            "n_seeds": e.seeds, "source_kind": "verified", "record_id": e.record_id, "base": e.reference,
            "track": e.track, "hardware": e.hardware, "entry": e.key, "knob": e.knob, "intervention": e.intervention,
            "quote": e.quote, "distance": record_distance(stack, control) if stack else None})
    return {k: {"n": len(v), "records": sorted({str(r["record_id"]) for r in v}), "rows": v}
            for k, v in sorted(rows_by.items())}


def pool_ablations(records: Iterable[Mapping], *, max_abs_delta: float = MAX_ABS_DELTA) -> tuple[dict[str, dict], list[dict]]:
    """Per feature: the typed evidence rows (``kind == "ablation"``) and their n, mean, sd, min, max; plus the
    rows that are not evidence, with their class and reason.

    Rows of a schema-1 matrix (untyped) are typed here (``extract.row_types.type_rows``). Each evidence row's
    ``delta_bpb`` is the effect of adding / increasing the feature (``direction`` x the reported delta); it keeps
    what the ranking needs to discount it: ``record_id``, ``base``, ``metric``, ``n_seeds``, ``from_value`` ->
    ``to_value``, ``track`` and ``distance`` (features where the record's stack differs from the baseline).
    """
    rows_by: dict[str, list[dict]] = defaultdict(list)
    unmapped: list[dict] = []
    for rec in records:
        raw = rec.get("ablations") or ()
        typed = [AblationRow.from_dict(a) for a in raw]
        if any(a.kind == "untyped" for a in typed):
            typed = list(type_rows(raw, record_id=rec.get("record_id")))
        dist = record_distance(rec)
        for a in typed:
            d = a.delta_bpb
            if a.is_evidence and d is not None and math.isfinite(float(d)) and abs(float(d)) <= max_abs_delta:
                rows_by[a.features[0]].append({
                    "change": a.change, "delta_bpb": a.direction * float(d), "reported_delta_bpb": float(d),
                    "direction": a.direction, "from_value": a.from_value, "to_value": a.to_value,
                    "metric": a.metric, "n_seeds": a.n_seeds, "source_kind": a.source_kind,
                    "record_id": rec.get("record_id"), "base": a.base, "track": rec.get("track"),
                    "distance": dist, "note": a.note})
            else:
                unmapped.append({"record_id": rec.get("record_id"), "change": a.change, "delta_bpb": d,
                                 "kind": a.kind, "features": list(a.features),
                                 "reason": a.note or f"|delta_bpb| > {max_abs_delta}: compares different setups"})
    pooled = {}
    for f, rows in sorted(rows_by.items()):
        arr = np.array([r["delta_bpb"] for r in rows])
        pooled[f] = {"n": len(rows), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(rows) > 1 else None,
                     "min": float(arr.min()), "max": float(arr.max()),
                     "records": sorted({str(r["record_id"]) for r in rows}), "rows": rows}
    return pooled, unmapped


def combine_graphs(expert: ExpertDag, data_edges: Iterable[PagEdge], bootstrap: Mapping, *,
                   feature_of: Mapping[str, str]) -> list[dict]:
    """Union of expert and data edges on feature names; each edge with source label and frequency."""
    expert_dir = {(e.source, e.target): e for e in expert.edges}
    rows: dict[tuple[str, str], dict] = {}
    for e in data_edges:
        (u, v), text = canonical_edge(e)
        fu, fv = feature_of.get(u, u), feature_of.get(v, v)
        freq = bootstrap.get((u, v), {}).get("frequency", 0.0)
        pair = tuple(sorted((fu, fv)))
        if fu == fv:
            continue
        exp_edge = expert_dir.get((fu, fv)) or expert_dir.get((fv, fu))
        source = "data"
        if exp_edge is not None:
            src, tgt = (u, v) if feature_of.get(u, u) == exp_edge.source else (v, u)
            mark_src = e.mark_a if e.a == src else e.mark_b
            mark_tgt = e.mark_b if e.a == src else e.mark_a
            source = "conflict" if (mark_src == "arrow" and mark_tgt == "tail") else "both"
        row = rows.get(pair)
        if row is None or freq > row["bootstrap_frequency"]:
            rows[pair] = {"a": fu, "b": fv, "columns": [u, v], "type": text, "source": source,
                          "bootstrap_frequency": freq,
                          "strength": exp_edge.strength if exp_edge else None,
                          "rationale": exp_edge.rationale if exp_edge else None}
    for e in expert.edges:
        pair = tuple(sorted((e.source, e.target)))
        if pair not in rows:
            rows[pair] = {"a": e.source, "b": e.target, "columns": [], "type": f"{e.source} --> {e.target}",
                          "source": "expert", "bootstrap_frequency": 0.0, "strength": e.strength,
                          "rationale": e.rationale}
    return [rows[k] for k in sorted(rows)]


def causal_graph(expert: ExpertDag, data_edges: Iterable[PagEdge], *,
                 feature_of: Mapping[str, str] | None = None) -> nx.DiGraph:
    """A DAG on feature names (with explicit latent nodes) for back-door checks.

    Expert edges keep their direction; data edges ``-->``/``o->`` are directed (unless that would close a
    cycle); ``o-o``/``<->`` become a latent ``L[a|b]`` pointing into both ends. Data columns are mapped
    to their feature (``activation=gelu`` -> ``activation``) through ``feature_of``.
    """
    fmap = dict(feature_of or {})
    g = nx.DiGraph()
    for n in expert.nodes:
        g.add_node(n.name)
    for e in expert.edges:
        g.add_edge(e.source, e.target)
    for e in data_edges:
        a, b, ma, mb = fmap.get(e.a, e.a), fmap.get(e.b, e.b), e.mark_a, e.mark_b
        if a == b:
            continue
        if mb == "arrow" and ma in ("tail", "circle"):
            _add_acyclic(g, a, b)
        elif ma == "arrow" and mb in ("tail", "circle"):
            _add_acyclic(g, b, a)
        else:
            lat = f"L[{a}|{b}]"
            g.add_edge(lat, a)
            g.add_edge(lat, b)
    return g


def _add_acyclic(g: nx.DiGraph, u: str, v: str) -> None:
    if g.has_edge(u, v):
        return
    g.add_edge(u, v)
    if not nx.is_directed_acyclic_graph(g):
        g.remove_edge(u, v)
        lat = f"L[{u}|{v}]"
        g.add_edge(lat, u)
        g.add_edge(lat, v)


def _is_d_separator(g: nx.DiGraph, x: set, y: set, z: set) -> bool:
    fn = getattr(nx, "is_d_separator", None) or nx.d_separated
    return bool(fn(g, x, y, z))


def adjustment_set(g: nx.DiGraph, treatment: str, observed: Iterable[str], *,
                   target: str = TARGET) -> tuple[list[str], bool]:
    """Smallest back-door set found for ``treatment`` -> ``target`` and whether it is valid.

    Grows the set from the empty set outwards (observed parents and latent-sharing partners of the
    treatment, then of those, ...) until the treatment and target are d-separated in the graph without
    the treatment's outgoing edges; falls back to all observed non-descendant ancestors.
    """
    observed = set(observed) - {treatment, target}
    if treatment not in g or target not in g:
        return [], True
    g2 = g.copy()
    g2.remove_edges_from(list(g.out_edges(treatment)))
    desc = nx.descendants(g, treatment)

    def neighbours(node: str) -> set[str]:
        out = set(g.predecessors(node))
        for lat in [p for p in g.predecessors(node) if p.startswith("L[")]:
            out |= set(g.successors(lat))
        return out

    z: set[str] = set()
    frontier = {treatment}
    while True:
        if _is_d_separator(g2, {treatment}, {target}, z):
            return sorted(z), True
        grow = set()
        for node in frontier:
            grow |= (neighbours(node) & observed) - desc - z - {treatment}
        if not grow:
            break
        z |= grow
        frontier = grow
    anc = (nx.ancestors(g, treatment) | nx.ancestors(g, target))
    full = (anc & observed) - desc
    return sorted(full), _is_d_separator(g2, {treatment}, {target}, full)


def observational_effect(m: PreparedMatrix, column: str, adjust: list[str]) -> dict:
    """OLS val_bpb ~ column + adjust (HC3 SEs). Numeric columns are standardised (effect per 1 SD)."""
    import statsmodels.api as sm

    y = m.column(TARGET)
    x = m.column(column).astype(float)
    scale = 1.0 if set(np.unique(x)) <= {0.0, 1.0} else float(np.std(x)) or 1.0
    cols = [x / scale] + [m.column(c) for c in adjust]
    design = sm.add_constant(np.column_stack(cols), has_constant="add")
    n, k = design.shape
    out = {"column": column, "n": int(n), "adjustment_set": list(adjust), "scale": scale,
           "unit": "0 -> 1" if scale == 1.0 else f"+1 SD ({scale:.4g})"}
    if n - k < 3:
        return {**out, "estimate": None, "se": None, "ci_low": None, "ci_high": None, "p_value": None,
                "note": f"too few rows ({n}) for {k} coefficients"}
    fit = sm.OLS(y, design).fit(cov_type="HC3")
    est, se = float(fit.params[1]), float(fit.bse[1])
    lo, hi = (float(v) for v in fit.conf_int()[1])
    if not math.isfinite(se):
        return {**out, "estimate": est, "se": None, "ci_low": None, "ci_high": None, "p_value": None,
                "note": "robust SE undefined (a leverage-1 row); treat as unidentified"}
    return {**out, "estimate": est, "se": se, "ci_low": lo, "ci_high": hi, "p_value": float(fit.pvalues[1])}
