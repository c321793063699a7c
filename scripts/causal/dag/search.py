"""Data-driven structure: FCI (causal-learn) with tier background knowledge, bootstrap stability, PC view.

CI test: Fisher-z on column ranks (partial Spearman correlation). It suits binary flags next to a
continuous ``val_bpb``; chi-square/G-square would treat every continuous value as its own category.
Background knowledge: tiers (nothing points from a later tier into an earlier one; ``val_bpb`` is the
only tier-2 node, so nothing leaves it). After FCI the marks are checked against the tiers; any mark that
would still contradict them (causal-learn only orients what its rules reach) is repaired and counted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings
import zlib
from collections import Counter

import numpy as np

from scripts.causal.core.schema import PagEdge
from scripts.causal.dag.prepare import clean_columns, rank_transform

CI_TEST = "rank_fisherz: Fisher-z on column ranks (partial Spearman correlation; nonparanormal Fisher-z)"
_MARK = {-1: "tail", 1: "arrow", 2: "circle"}
_TEST_NAME = "rank_fisherz"
_registered = False


def _register_test() -> None:
    """One-time causal-learn setup: register the rank Fisher-z test (a plain FisherZ on ranks, with a
    cheap p-value via erfc instead of scipy's norm.cdf, which dominated the runtime) and make node and
    edge hashes independent of PYTHONHASHSEED."""
    global _registered
    if _registered:
        return
    from causallearn.graph.Edge import Edge
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.cit import CIT_Base, register_ci_test

    # causal-learn iterates over sets of nodes (possible-dsep, orientation rules) and GraphNode/Edge hash
    # their names with Python's per-process randomised str hash, so marks changed between runs with the
    # same seed. A content hash (crc32, consistent with their name-based __eq__) makes runs reproducible.
    GraphNode.__hash__ = lambda self: zlib.crc32(self.get_name().encode("utf-8"))
    Edge.__hash__ = lambda self: zlib.crc32(str(self).encode("utf-8"))

    class RankFisherZ(CIT_Base):
        def __init__(self, data, **kwargs):
            super().__init__(data, **kwargs)
            self.method = _TEST_NAME
            self.correlation_matrix = np.corrcoef(rank_transform(data).T)
            self._cache: dict = {}

        def __call__(self, X, Y, condition_set=None):
            x, y = (int(X), int(Y)) if X < Y else (int(Y), int(X))
            cond = tuple(sorted({int(c) for c in (condition_set or ())}))
            key = (x, y, cond)
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            c = self.correlation_matrix
            if not cond:
                r = c[x, y]
            elif len(cond) == 1:
                z = cond[0]
                den = (1 - c[x, z] ** 2) * (1 - c[y, z] ** 2)
                r = (c[x, y] - c[x, z] * c[y, z]) / math.sqrt(den) if den > 1e-12 else 0.0
            else:
                idx = [x, y, *cond]
                try:
                    inv = np.linalg.inv(c[np.ix_(idx, idx)])
                except np.linalg.LinAlgError as exc:
                    raise ValueError("rank correlation matrix is singular; clean_columns should have removed "
                                     "the collinear column") from exc
                r = -inv[0, 1] / math.sqrt(abs(inv[0, 0] * inv[1, 1]))
            r = max(min(r, 1 - 1e-12), -1 + 1e-12)
            dof = self.sample_size - len(cond) - 3
            stat = math.sqrt(max(dof, 1)) * abs(0.5 * math.log((1 + r) / (1 - r)))
            p = math.erfc(stat / math.sqrt(2.0))
            self._cache[key] = p
            return p

    register_ci_test(_TEST_NAME, RankFisherZ)
    _registered = True


@dataclasses.dataclass(frozen=True)
class SearchResult:
    edges: tuple[PagEdge, ...]
    columns: tuple[str, ...]
    bk_repairs: int = 0


def _background(columns, tiers):
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.PCUtils.BackgroundKnowledge import BackgroundKnowledge

    bk = BackgroundKnowledge()
    for name, tier in zip(columns, tiers, strict=True):
        bk.add_node_to_tier(GraphNode(name), int(tier))
    return bk


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _enforce_tiers(edges: list[PagEdge], tier_of: dict[str, int]) -> tuple[list[PagEdge], int]:
    """Make every mark agree with the tiers: later-tier end gets an arrowhead, earlier end no arrowhead."""
    out, repairs = [], 0
    for e in edges:
        ta, tb = tier_of[e.a], tier_of[e.b]
        if ta == tb:
            out.append(e)
            continue
        a, b, ma, mb = (e.a, e.b, e.mark_a, e.mark_b) if ta < tb else (e.b, e.a, e.mark_b, e.mark_a)
        new_ma = "circle" if ma == "arrow" else ma
        new_mb = "arrow"
        repairs += (new_ma != ma) + (new_mb != mb)
        out.append(PagEdge(a, b, new_ma, new_mb))
    return out, repairs


def _edges_from_graph(g, columns) -> list[PagEdge]:
    m = g.graph
    edges = []
    p = len(columns)
    for i in range(p):
        for j in range(i + 1, p):
            if m[i, j] == 0 and m[j, i] == 0:
                continue
            # causal-learn: graph[i, j] is the mark at i on the i-j edge (i --> j: [i,j]=-1, [j,i]=1).
            edges.append(PagEdge(columns[i], columns[j], _MARK[int(m[i, j])], _MARK[int(m[j, i])]))
    return edges


def run_fci(data: np.ndarray, columns, tiers, *, alpha: float = 0.05, depth: int = 3) -> SearchResult:
    """One FCI run on ``data`` (rank-transformed inside); returns PAG edges obeying the tiers."""
    from causallearn.search.ConstraintBased.FCI import fci

    columns, tiers = list(columns), [int(t) for t in tiers]
    _register_test()
    g, _ = _quiet(fci, np.asarray(data, dtype=float), _TEST_NAME, alpha, depth=depth, max_path_length=4,
                  background_knowledge=_background(columns, tiers), show_progress=False, node_names=columns)
    edges, repairs = _enforce_tiers(_edges_from_graph(g, columns), dict(zip(columns, tiers, strict=True)))
    return SearchResult(tuple(edges), tuple(columns), repairs)


def run_pc(data: np.ndarray, columns, tiers, *, alpha: float = 0.05, depth: int = 3) -> SearchResult:
    """PC (CPDAG) as a secondary view, same CI test and tiers. Marks: tail/arrow only."""
    from causallearn.search.ConstraintBased.PC import pc

    columns, tiers = list(columns), [int(t) for t in tiers]
    _register_test()
    cg = _quiet(pc, np.asarray(data, dtype=float), alpha=alpha, indep_test=_TEST_NAME, stable=True, uc_rule=0, uc_priority=2,
                background_knowledge=_background(columns, tiers), show_progress=False, node_names=columns,
                max_k=depth)
    edges = _edges_from_graph(cg.G, columns)
    edges, repairs = _enforce_tiers(edges, dict(zip(columns, tiers, strict=True)))
    return SearchResult(tuple(edges), tuple(columns), repairs)


def bootstrap_fci(data: np.ndarray, columns, tiers, *, alpha: float = 0.05, n_boot: int = 100, seed: int = 0,
                  depth: int = 3, protect=("val_bpb",)) -> dict:
    """Re-run FCI on ``n_boot`` row resamples; per edge (unordered pair) its frequency and mark-type counts.

    A resample can make a column constant or duplicate another: such columns are dropped for that
    resample only (the edge then counts as absent), so a resample never fails on a singular matrix.
    """
    rng = np.random.default_rng(seed)
    n = data.shape[0]
    adjacency: Counter = Counter()
    types: dict[tuple[str, str], Counter] = {}
    failures = 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        sample = data[idx]
        keep, _ = clean_columns(sample, list(columns), min_minority=1, max_mode_frac=1.0, protect=())
        if len(keep) < 2:
            failures += 1
            continue
        cols_idx = [list(columns).index(c) for c in keep]
        try:
            res = run_fci(sample[:, cols_idx], keep, [tiers[k] for k in cols_idx], alpha=alpha, depth=depth)
        except (ValueError, np.linalg.LinAlgError):
            failures += 1
            continue
        for e in res.edges:
            key, canon = canonical_edge(e)
            adjacency[key] += 1
            types.setdefault(key, Counter())[canon] += 1
    out = {}
    for key in sorted(adjacency):
        counts = types[key]
        out[key] = {"frequency": adjacency[key] / n_boot,
                    "types": {t: c / n_boot for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))},
                    "modal_type": max(sorted(counts), key=lambda t: counts[t])}
    return {"n_boot": n_boot, "failures": failures, "edges": out}


def parse_edge(text: str) -> PagEdge:
    """Inverse of ``PagEdge.text``: 'a o-> b' -> PagEdge('a', 'b', 'circle', 'arrow')."""
    a, mid, b = text.split(" ")
    return PagEdge(a, b, {"<": "arrow", "o": "circle", "-": "tail"}[mid[0]],
                   {">": "arrow", "o": "circle", "-": "tail"}[mid[-1]])


def canonical_edge(e: PagEdge) -> tuple[tuple[str, str], str]:
    """Key (sorted pair) and the mark text written in that order, e.g. ('a','b'), 'a o-> b'."""
    if e.a <= e.b:
        return (e.a, e.b), PagEdge(e.a, e.b, e.mark_a, e.mark_b).text
    return (e.b, e.a), PagEdge(e.b, e.a, e.mark_b, e.mark_a).text
