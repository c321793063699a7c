"""Load and validate the curated expert DAG (``dags/expert.json``): tiered nodes, edges with rationale.

Tier 0 holds interventions named exactly like the canonical features of ``results/interventions.json``,
tier 1 the mediators, tier 2 ``val_bpb``. Edges may only go forward in tier order (or within tier 1),
nothing leaves ``val_bpb`` and the graph must be acyclic.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.paths import DAGS_DIR
from scripts.causal.core.schema import INTERVENTION_FEATURES, read_json

DEFAULT_EXPERT = DAGS_DIR / "expert.json"
TARGET = "val_bpb"
KINDS = ("binary", "numeric", "categorical")

# Canonical feature keys of the intervention matrix (issue 3); tier-0 nodes must be among them.
CANONICAL_FEATURES: tuple[str, ...] = INTERVENTION_FEATURES


@dataclasses.dataclass(frozen=True)
class ExpertNode:
    name: str
    tier: int
    kind: str
    observed: bool = True
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ExpertEdge:
    source: str
    target: str
    strength: float
    rationale: str


@dataclasses.dataclass(frozen=True)
class ExpertDag:
    nodes: tuple[ExpertNode, ...]
    edges: tuple[ExpertEdge, ...]
    path: str = ""

    def tier(self, name: str) -> int | None:
        for node in self.nodes:
            if node.name == name:
                return node.tier
        return None

    @property
    def tiers(self) -> dict[str, int]:
        return {n.name: n.tier for n in self.nodes}

    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, tier=n.tier, observed=n.observed)
        for e in self.edges:
            g.add_edge(e.source, e.target, strength=e.strength, rationale=e.rationale)
        return g


def parse_expert(data: dict, *, source: str = "<expert>") -> ExpertDag:
    """Validate a decoded expert.json; every error names the file, the field and the offending value."""
    raw_nodes = data.get("nodes")
    raw_edges = data.get("edges")
    if not isinstance(raw_nodes, list) or not isinstance(raw_edges, list):
        raise DataFormatError(f"{source}: expected lists 'nodes' and 'edges' at top level")
    nodes: list[ExpertNode] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_nodes):
        name, tier, kind = raw.get("name"), raw.get("tier"), raw.get("kind", "numeric")
        if not isinstance(name, str) or not name:
            raise DataFormatError(f"{source}: nodes[{i}].name must be a non-empty string, got {name!r}")
        if name in seen:
            raise DataFormatError(f"{source}: node {name!r} is listed twice; keep one entry")
        if tier not in (0, 1, 2):
            raise DataFormatError(f"{source}: node {name!r} has tier {tier!r}; allowed tiers are 0, 1, 2")
        if kind not in KINDS:
            raise DataFormatError(f"{source}: node {name!r} has kind {kind!r}; allowed kinds are {list(KINDS)}")
        if tier == 0 and name not in CANONICAL_FEATURES:
            raise DataFormatError(
                f"{source}: tier-0 node {name!r} is not a canonical feature of the intervention matrix; "
                f"use one of {list(CANONICAL_FEATURES)}"
            )
        if tier == 2 and name != TARGET:
            raise DataFormatError(f"{source}: tier 2 holds only {TARGET!r}, got {name!r}")
        seen.add(name)
        nodes.append(ExpertNode(name, int(tier), kind, bool(raw.get("observed", True)), raw.get("description", "")))
    if TARGET not in seen:
        raise DataFormatError(f"{source}: node {TARGET!r} (tier 2) is missing")
    tiers = {n.name: n.tier for n in nodes}
    edges: list[ExpertEdge] = []
    for i, raw in enumerate(raw_edges):
        s, t = raw.get("source"), raw.get("target")
        for end in (s, t):
            if end not in tiers:
                raise DataFormatError(f"{source}: edges[{i}] names unknown node {end!r}; add it to 'nodes' first")
        strength, rationale = raw.get("strength"), raw.get("rationale")
        if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
            raise DataFormatError(f"{source}: edge {s}->{t} strength {strength!r} must be a number in [0, 1]")
        if not isinstance(rationale, str) or not rationale.strip():
            raise DataFormatError(f"{source}: edge {s}->{t} needs a one-line 'rationale'")
        if s == TARGET:
            raise DataFormatError(f"{source}: edge {s}->{t} leaves {TARGET!r}; nothing may leave the target")
        if tiers[t] < tiers[s] or (tiers[s] == tiers[t] == 0):
            raise DataFormatError(
                f"{source}: edge {s}->{t} goes from tier {tiers[s]} to tier {tiers[t]}; edges must go to a later "
                "tier (or stay within tier 1)"
            )
        edges.append(ExpertEdge(s, t, float(strength), rationale.strip()))
    dag = ExpertDag(tuple(nodes), tuple(edges), source)
    cycle = _find_cycle(dag.graph())
    if cycle:
        raise DataFormatError(f"{source}: edges form a cycle {' -> '.join(cycle)}; remove one of them")
    return dag


def _find_cycle(g: nx.DiGraph) -> list[str]:
    try:
        return [u for u, _ in nx.find_cycle(g)]
    except nx.NetworkXNoCycle:
        return []


def load_expert(path: str | Path = DEFAULT_EXPERT) -> ExpertDag:
    """Read and validate ``dags/expert.json`` (or another file of the same shape)."""
    return parse_expert(read_json(path), source=str(path))
