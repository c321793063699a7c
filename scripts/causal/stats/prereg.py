"""Pre-registration: the analysis uses what the screen fixed before its first run, or says loudly that it did not.

A screen's pre-registration lives in its runs.json header (``screen``) and in the ledger's ``screens`` table
(the same mapping). Fields (``core.schema.Preregistration``): alpha, margin_bpb, effect_bpb / effect_nats (the
effect of interest), correction, metric, family (the interventions in the multiplicity family; a header without
``family`` registers its ``interventions`` minus the calibration arms), seeds, aa_mode, pool_aa (pooling the
variance with the A/A pairs), sequential (the group-sequential design) and stack. The control itself (preset,
stack and base overrides: ``base_config``) and each arm's overrides are checked against the ledger's copy
(``ledger_deviations``). Everything that can change a verdict is covered.

A header key that is present registers its value, None included: ``effect_bpb: null`` registers the record bar
(0.005 nats), ``sequential: null`` a fixed-n design, ``stack: null`` the bare preset; a header written by the
runner (it has ``base_config``) registers ``pool_aa`` False unless it says true.

``resolve_preregistration`` merges the registered values with values *requested* by the caller (CLI flags, keyword
arguments; None = not requested). A requested value that differs from a registered one is refused with a
ConfigError naming both, unless ``exploratory=True``: then the requested value is used and the deviation is
recorded, and the result and report header say "EXPLORATORY". A requested value for a field the header does not
register is a choice made after the data: it is a deviation too. Fields neither registered nor requested take the
default and are listed in ``unregistered`` (older screens did not register the metric); the report shows them.
``check_runs`` refuses runs on seeds that were not registered and treatments outside the family and the
calibration arms; ``missing_runs`` lists registered runs that are absent (a dropped seed), which makes the
analysis exploratory. ``ledger_deviations`` compares the runs.json header with the ledger's copy (an edited header
is a deviation).
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import Preregistration
from scripts.causal.stats.calibration import AA_MODES
from scripts.causal.stats.multiplicity import CORRECTIONS
from scripts.causal.stats.pairing import METRICS, run_rows

__all__ = ["PREREG_FIELDS", "ResolvedPrereg", "check_runs", "ledger_deviations", "missing_runs",
           "preregistration_from_header", "prereg_to_dict", "resolve_preregistration", "validate_preregistration"]

PREREG_FIELDS = tuple(f.name for f in dataclasses.fields(Preregistration))


@dataclasses.dataclass(frozen=True)
class ResolvedPrereg:
    """The settings the analysis uses, where they came from and how they deviate from the registration."""

    prereg: Preregistration
    source: str  # "runs.json header" | "ledger" | "argument" | "none"
    exploratory: bool
    deviations: tuple[dict, ...] = ()
    unregistered: tuple[str, ...] = ()


def _calibration() -> tuple[str, ...]:
    from scripts.causal.screen.registry import CALIBRATION

    return tuple(CALIBRATION)


_NULLABLE = ("effect_bpb", "sequential", "stack")  # a present key with value None registers "none"


def _norm(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in ("family", "seeds"):
        return tuple(int(v) for v in value) if field == "seeds" else tuple(str(v) for v in value)
    if field in ("alpha", "margin_bpb", "effect_bpb", "effect_nats"):
        return float(value)
    if field == "pool_aa":
        return bool(value)
    if field == "sequential":
        return json.loads(json.dumps(dict(value), sort_keys=True, default=str))
    return str(value)


def preregistration_from_header(header: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(registered field values, fields not registered) from a runs.json ``screen`` header or ledger mapping."""
    reg = {f: _norm(f, header[f]) for f in PREREG_FIELDS
           if header.get(f) is not None or (f in _NULLABLE and f in header)}
    if "family" not in reg and header.get("interventions") is not None:
        reg["family"] = tuple(str(n) if isinstance(n, str) else str(n["name"]) for n in header["interventions"]
                              if (n if isinstance(n, str) else n["name"]) not in _calibration())
    if "effect_bpb" in reg and "effect_nats" not in reg:
        reg["effect_nats"] = Preregistration.effect_nats  # effect_bpb null registers the record bar
    if "pool_aa" not in reg and "base_config" in header:
        reg["pool_aa"] = False  # the runner registers pooling only when it is on
    missing = [f for f in PREREG_FIELDS if f not in reg]
    if "effect_nats" in reg and "effect_bpb" in missing:
        missing.remove("effect_bpb")
    return reg, tuple(missing)


def validate_preregistration(p: Preregistration) -> None:
    """Range checks with the allowed values in the message."""
    if not (0.0 < p.alpha < 0.5):
        raise ConfigError(f"alpha={p.alpha!r} must lie in (0, 0.5)")
    if not (math.isfinite(p.margin_bpb) and p.margin_bpb >= 0):
        raise ConfigError(f"margin_bpb={p.margin_bpb!r} must be a finite number >= 0 (bpb of improvement required)")
    if p.effect_bpb is not None and not (math.isfinite(p.effect_bpb) and p.effect_bpb > 0):
        raise ConfigError(f"effect_bpb={p.effect_bpb!r} must be a finite number > 0")
    if not p.effect_nats > 0:
        raise ConfigError(f"effect_nats={p.effect_nats!r} must be > 0")
    if p.correction not in CORRECTIONS:
        raise ConfigError(f"unknown correction {p.correction!r}; valid choices: {sorted(CORRECTIONS)}")
    if p.metric not in METRICS:
        raise ConfigError(f"unknown metric {p.metric!r}; valid choices: {list(METRICS)}")
    if p.aa_mode not in AA_MODES:
        raise ConfigError(f"unknown aa_mode {p.aa_mode!r}; valid choices: {list(AA_MODES)}")


def resolve_preregistration(registered: Mapping[str, Any] | None, requested: Mapping[str, Any], *,
                            exploratory: bool = False, source: str = "runs.json header",
                            unregistered: Sequence[str] = ()) -> ResolvedPrereg:
    """Merge requested values into the registered ones; a conflict is an error unless ``exploratory``."""
    unknown = sorted(set(requested) - set(PREREG_FIELDS))
    if unknown:
        raise ConfigError(f"unknown pre-registration field(s) {unknown}; valid: {list(PREREG_FIELDS)}")
    req = {k: _norm(k, v) for k, v in requested.items() if v is not None}
    if registered is None:
        values = {**req}
        p = Preregistration(**values)
        validate_preregistration(p)
        return ResolvedPrereg(prereg=p, source="none", exploratory=True,
                              unregistered=tuple(f for f in PREREG_FIELDS if f not in req))
    deviations = [{"field": k, "registered": registered[k] if k in registered else "not registered", "used": v}
                  for k, v in req.items() if k not in registered or registered[k] != v]
    validate_preregistration(Preregistration(**{**registered, **req}))  # a bad value is named before a conflict
    if deviations and not exploratory:
        what = "; ".join(f"{d['field']}: registered {d['registered']!r}, requested {d['used']!r}" for d in deviations)
        raise ConfigError(
            f"the analysis does not match the {source} pre-registration ({what}); drop the flag(s) to use the "
            "registered values, or pass --exploratory (exploratory=True) to deviate, and the result says so")
    p = Preregistration(**{**registered, **req})
    validate_preregistration(p)
    return ResolvedPrereg(prereg=p, source=source, exploratory=bool(exploratory), deviations=tuple(deviations),
                          unregistered=tuple(f for f in unregistered if f not in req))


def check_runs(rows: Sequence[Mapping] | Mapping, resolved: ResolvedPrereg, *, source: str = "runs") -> None:
    """Refuse runs on unregistered seeds, and treatments outside the family and the calibration arms."""
    p = resolved.prereg
    rows = run_rows(rows)
    if p.seeds:
        extra = sorted({int(r["seed"]) for r in rows if isinstance(r, Mapping) and r.get("seed") is not None}
                       - set(p.seeds))
        if extra and not resolved.exploratory:
            raise DataFormatError(f"{source}: runs on seeds {extra} that were not pre-registered "
                                  f"(registered: {list(p.seeds)}); analyze with --exploratory to include them")
    if p.family is not None:
        names = {str(r.get("intervention")) for r in rows if isinstance(r, Mapping) and r.get("arm") == "treatment"}
        extra = sorted(names - set(p.family) - set(_calibration()))
        if extra and not resolved.exploratory:
            raise DataFormatError(f"{source}: treatments {extra} are neither in the pre-registered family "
                                  f"{list(p.family)} nor calibration arms; analyze with --exploratory to include them")


def missing_runs(rows: Sequence[Mapping] | Mapping, p: Preregistration) -> list[str]:
    """Registered runs that are absent from ``rows`` (no row at all, not a failed row), in words.

    Every registered seed needs a control row, and every family and calibration arm a row on each registered seed
    (``aa`` in repeat mode: the first seed only). A sequential arm may stop early: its seeds must be a prefix of
    the registered order, of at least n0 seeds, with a control on each.
    """
    if not p.seeds:
        return []
    rows = [r for r in run_rows(rows) if isinstance(r, Mapping)]
    seeds = list(p.seeds)
    controls = {int(r["seed"]) for r in rows if r.get("arm") == "control"}
    ran: dict[str, set[int]] = {}
    for r in rows:
        if r.get("arm") == "treatment":
            ran.setdefault(str(r.get("intervention")), set()).add(int(r["seed"]))
    arms = list(p.family or []) + [n for n in _calibration() if n in ran]
    out = []
    if p.sequential:
        n0 = int(p.sequential.get("n0", 3))
        for name in p.family or []:
            got = ran.get(name, set())
            if got != set(seeds[:len(got)]) or len(got) < n0:
                out.append(f"arm {name!r} ran seeds {sorted(got)}, not a prefix of >= {n0} of {seeds}")
        need = set().union(*ran.values()) if ran else set()
        lost = sorted(need - controls)
        if lost:
            out.append(f"no control run on seeds {lost}")
        return out
    lost = [s for s in seeds if s not in controls]
    if lost:
        out.append(f"no control run on registered seeds {lost}")
    repeat = p.aa_mode == "repeat" or (p.aa_mode == "auto" and len(ran.get("aa", ())) <= 1)
    for name in arms:
        expected = seeds[:1] if name == "aa" and repeat else seeds
        lost = [s for s in expected if s not in ran.get(name, set())]
        if lost:
            out.append(f"arm {name!r} has no run on registered seeds {lost}")
    return out


def _interventions(header: Mapping[str, Any]) -> list:
    items = header.get("interventions") or []
    if items and isinstance(items[0], Mapping):  # the ledger's form: [{"name", "overrides"}]
        return [[str(i["name"]), dict(i.get("overrides") or {})] for i in items]
    overrides = header.get("treatment_overrides") or {}
    return [[str(n), dict(overrides.get(n) or {})] for n in items]


def ledger_deviations(header: Mapping[str, Any], ledger_prereg: Mapping[str, Any]) -> list[dict]:
    """Where a runs.json header differs from the ledger's stored pre-registration (the durable copy)."""
    out = []
    keys = sorted((set(ledger_prereg) | {k for k in header if k in PREREG_FIELDS}) - {"interventions", "design"})
    for k in keys:
        a, b = ledger_prereg.get(k), header.get(k)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                diff = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
                a, b = {f: a.get(f) for f in diff}, {f: b.get(f) for f in diff}
            out.append({"field": k, "registered": a, "used": b, "note": "runs.json header differs from the ledger"})
    if _interventions(header) != _interventions(ledger_prereg):
        out.append({"field": "interventions", "registered": _interventions(ledger_prereg),
                    "used": _interventions(header), "note": "runs.json header differs from the ledger"})
    return out


def prereg_to_dict(resolved: ResolvedPrereg) -> dict[str, Any]:
    """JSON-ready description for the ablation_results header."""
    d = dataclasses.asdict(resolved.prereg)
    d["family"] = None if d["family"] is None else list(d["family"])
    d["seeds"] = list(d["seeds"])
    return {**d, "source": resolved.source, "exploratory": resolved.exploratory,
            "deviations": list(resolved.deviations), "unregistered": list(resolved.unregistered)}
