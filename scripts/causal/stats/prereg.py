"""Pre-registration: the analysis uses what the screen fixed before its first run, or says loudly that it did not.

A screen's pre-registration lives in its runs.json header (``screen``) and in the ledger's ``screens`` table
(the same mapping). Fields (``core.schema.Preregistration``): alpha, margin_bpb, effect_bpb / effect_nats (the
effect of interest), correction, metric, family (the interventions in the multiplicity family; a header without
``family`` registers its ``interventions`` minus the calibration arms) and seeds.

``resolve_preregistration`` merges the registered values with values *requested* by the caller (CLI flags, keyword
arguments; None = not requested). A requested value that differs from a registered one is refused with a
ConfigError naming both, unless ``exploratory=True``: then the requested value is used and the deviation is
recorded, and the result and report header say "EXPLORATORY". A field the header does not register takes the
requested value or the default, and is listed in ``unregistered`` (older screens did not register the metric).
``check_runs`` refuses runs on seeds that were not registered and treatments outside the family and the
calibration arms.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import Preregistration
from scripts.causal.stats.calibration import AA_MODES
from scripts.causal.stats.multiplicity import CORRECTIONS
from scripts.causal.stats.pairing import METRICS, run_rows

__all__ = ["PREREG_FIELDS", "ResolvedPrereg", "check_runs", "preregistration_from_header", "prereg_to_dict",
           "resolve_preregistration", "validate_preregistration"]

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


def _norm(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in ("family", "seeds"):
        return tuple(int(v) for v in value) if field == "seeds" else tuple(str(v) for v in value)
    if field in ("alpha", "margin_bpb", "effect_bpb", "effect_nats"):
        return float(value)
    return str(value)


def preregistration_from_header(header: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(registered field values, fields not registered) from a runs.json ``screen`` header or ledger mapping."""
    reg = {f: _norm(f, header[f]) for f in PREREG_FIELDS if header.get(f) is not None}
    if "family" not in reg and header.get("interventions") is not None:
        reg["family"] = tuple(str(n) for n in header["interventions"] if str(n) not in _calibration())
    missing = [f for f in PREREG_FIELDS if f not in reg]
    if "effect_bpb" in reg or "effect_nats" in reg:
        missing = [f for f in missing if f not in ("effect_bpb", "effect_nats")]
    missing = tuple(missing)
    return reg, missing


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
    deviations = [{"field": k, "registered": registered[k], "used": v} for k, v in req.items()
                  if k in registered and registered[k] != v]
    if deviations and not exploratory:
        what = "; ".join(f"{d['field']}: registered {d['registered']!r}, requested {d['used']!r}" for d in deviations)
        raise ConfigError(
            f"the analysis does not match the {source} pre-registration ({what}); drop the flag(s) to use the "
            "registered values, or pass --exploratory (exploratory=True) to deviate, and the result says so")
    p = Preregistration(**{**registered, **req})
    validate_preregistration(p)
    return ResolvedPrereg(prereg=p, source=source, exploratory=bool(exploratory), deviations=tuple(deviations),
                          unregistered=tuple(unregistered))


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


def prereg_to_dict(resolved: ResolvedPrereg) -> dict[str, Any]:
    """JSON-ready description for the ablation_results header."""
    d = dataclasses.asdict(resolved.prereg)
    d["family"] = None if d["family"] is None else list(d["family"])
    d["seeds"] = list(d["seeds"])
    return {**d, "source": resolved.source, "exploratory": resolved.exploratory,
            "deviations": list(resolved.deviations), "unregistered": list(resolved.unregistered)}
