"""Analyze one screen: paired statistics, the multiplicity family, power at the effect of interest, decisions.

``analyze(runs, ...)`` takes a runs.json payload (its ``screen`` header is the pre-registration) or a bare list of
run rows (no pre-registration: the result is marked exploratory) and returns the ablation_results payload
(schema_version 2). Every setting comes from the pre-registration; keyword arguments are *requests* that must
match it (prereg.py) unless ``exploratory=True``.

Family. The multiplicity family is the pre-registered ``family`` (default: every intervention except the
calibration arms ``aa`` and ``sanity_frozen_matrices``), with THREE one-sided tests per arm: improvement (behind
``confirmed``), harm (``harmful``) and non-superiority (``null``), K = 3 x |family| p-values adjusted together
(Holm controls the FWER under any dependence; the shared control makes the tests dependent). So one statement
covers the whole report: the probability that any confirmed, harmful or null call is wrong is <= alpha. A family
member with fewer than ``MIN_PAIRS`` valid pairs, or with zero variance (no test), enters with p = 1 (K stays the
registered size, which is conservative). Calibration arms are judged at the unadjusted level alpha and are
reported in ``calibration`` (calibration.py). A registered sequential design decides with its own Bonferroni
split over the 2 x |family| improvement and harm tests (sequential_plan.py; no null there).

Scored stage. Each arm is paired on its decision metric; under ``final_val_bpb`` each arm's scored stage comes from
its config (``pairing.arm_stages``), and a run whose scored stage is missing or NaN is a failed run. A metric that
cannot see an evaluation-only arm is refused (metric_fit.py).

Labels. ``label`` words each decision as the rule reads: a ``confirmed`` gain smaller than the effect of interest
is "real, but below the record bar" (promotion refuses it by default); the A/A repeat on a bit-reproducible
backend is a determinism check (``CHECK_DECISION``), not a null.

Power. ``mde`` is the smallest true improvement (bpb, from 0) detected with power 0.8 at the achieved n and the
observed sd (exact noncentral t) at the per-test level ``power_alpha`` = alpha / K (Bonferroni, a lower bound on
Holm's and BH's power, so the MDE is conservative; alpha for ``correction="none"``). ``power`` is the power at
the effect of interest, and ``seeds_needed`` the n that would give power 0.8 there.

Effect of interest (``effect``): the pre-registered ``effect_bpb``, or by default the record bar (0.005 nats per
token) converted with the measured bytes per token of the val split (effect.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import PooledSigma, Preregistration
from scripts.causal.stats import calibration as cal
from scripts.causal.stats.claims import claim_lines
from scripts.causal.stats.decision import decide, describe_need, seeds_needed
from scripts.causal.stats.effect import bytes_per_token_from_runs, record_bar_bpb
from scripts.causal.stats.metric_fit import check_metric_fits, eval_only
from scripts.causal.stats.multiplicity import adjust_pvalues
from scripts.causal.stats.paired_tests import CI_LEVEL, describe_pairs, pooled_sigma_from_aa
from scripts.causal.stats.pairing import MIN_PAIRS, arm_stages, paired_deltas, run_rows
from scripts.causal.stats.power import mde_one_sided, power_one_sided
from scripts.causal.stats.prereg import (
    check_runs,
    ledger_deviations,
    missing_runs,
    prereg_to_dict,
    preregistration_from_header,
    resolve_preregistration,
)

__all__ = ["CHECK_DECISION", "SCHEMA_VERSION", "analyze", "effect_of_interest", "label", "record_decisions"]

SCHEMA_VERSION = 2


def effect_of_interest(p: Preregistration, rows: Sequence[Mapping], *, bytes_per_token: float | None = None,
                       registered: bool = True) -> dict[str, Any]:
    """{"bpb", "name", "bytes_per_token", "nats", "registered"}: the effect, or the record bar in bpb.
    ``registered`` False (chosen at analysis time, or no pre-registration) is said in the name."""
    bpt = bytes_per_token
    if bpt is None:
        try:
            bpt = bytes_per_token_from_runs(rows)
        except DataFormatError:
            if p.effect_bpb is None:
                raise
    how = "pre-registered" if registered else "NOT pre-registered (chosen at analysis)"
    if p.effect_bpb is not None:
        return {"bpb": p.effect_bpb, "nats": None, "bytes_per_token": bpt, "registered": registered,
                "name": f"{how} effect of interest {p.effect_bpb:.4g} bpb"}
    bpb = record_bar_bpb(bpt, nats=p.effect_nats)
    return {"bpb": bpb, "nats": p.effect_nats, "bytes_per_token": bpt, "registered": registered,
            "name": f"record bar {p.effect_nats} nats/token = {bpb:.5f} bpb at {bpt:.4f} bytes/token ({how})"}


def _registered(runs: Sequence[Mapping] | Mapping, prereg: Preregistration | None, prereg_source: str | None):
    if prereg is not None:
        reg = {k: v for k, v in dataclasses.asdict(prereg).items() if v is not None}
        return reg, (), prereg_source or "argument"
    header = runs.get("screen") if isinstance(runs, Mapping) else None
    if not header:
        return None, (), "none"
    reg, missing = preregistration_from_header(header)
    return reg, missing, prereg_source or "runs.json header"


def _secondary(rows: Sequence[Mapping], metric: str, backend: str | None) -> dict[str, dict]:
    """Pre-quant delta and quantization gap beside the decision metric (over that metric's own valid pairs)."""
    out: dict[str, dict] = {}
    other = "val_bpb" if metric != "val_bpb" else "post_quant_val_bpb"  # pre-quant beside any post-quant score
    pre = paired_deltas(rows, metric="val_bpb", backend=backend)
    post = paired_deltas(rows, metric="post_quant_val_bpb", backend=backend)
    for name in set(pre) | set(post):
        a, b = pre.get(name), post.get(name)
        common = sorted(set(a["seeds"]) & set(b["seeds"])) if a and b else []
        ia = [a["seeds"].index(s) for s in common] if a else []
        ib = [b["seeds"].index(s) for s in common] if b else []
        row = {f"mean_delta_{other}": None, "mean_quant_gap_control": None, "mean_quant_gap_treatment": None,
               "mean_quant_gap_delta": None}
        src = pre if other == "val_bpb" else post
        if name in src and src[name]["delta"].size:
            row[f"mean_delta_{other}"] = float(src[name]["delta"].mean())
        if common:
            gc = b["control"][ib] - a["control"][ia]
            gt = b["treatment"][ib] - a["treatment"][ia]
            row.update(mean_quant_gap_control=float(gc.mean()), mean_quant_gap_treatment=float(gt.mean()),
                       mean_quant_gap_delta=float((gt - gc).mean()))
        out[name] = row
    return out


def _check_metric(runs, family: Sequence[str], metric: str, source: str) -> None:
    """Refuse a metric that cannot see an evaluation-only family arm (metric_fit.py)."""
    header = runs.get("screen") if isinstance(runs, Mapping) else None
    overrides = dict((header or {}).get("treatment_overrides") or {})
    base = (header or {}).get("base_config")
    if isinstance(base, Mapping):
        check_metric_fits({n: overrides.get(n, {}) for n in family}, base, metric, source=source)
    elif metric in ("val_bpb", "post_quant_val_bpb"):  # no configs: the registry alone says evaluation-only
        check_metric_fits({n: {} for n in family if eval_only(n, {})}, {}, metric, source=source)


def _ledger_prereg(ledger: Any, screen_id: str | None) -> Mapping:
    """The ledger's stored pre-registration of ``screen_id`` (``ledger``: a path or an open Ledger)."""
    from scripts.causal.screen.ledger import Ledger

    if not screen_id:
        raise ConfigError("checking against the ledger needs the runs.json header's screen_id; the runs have none")
    if isinstance(ledger, Ledger):
        screen = ledger.get_screen(screen_id)
    else:
        with Ledger(ledger) as led:
            screen = led.get_screen(screen_id)
    if screen is None:
        raise ConfigError(f"{ledger}: the ledger has no screen {screen_id!r}; pass the ledger the screen ran in")
    return screen["preregistration"]


def _resolve(runs, rows_in, requested: dict, *, prereg, prereg_source, exploratory: bool, ledger: Any):
    """The resolved pre-registration, with missing runs and ledger differences recorded as deviations."""
    registered, missing, source = _registered(runs, prereg, prereg_source)
    resolved = resolve_preregistration(registered, requested, exploratory=exploratory, source=source,
                                       unregistered=missing)
    check_runs(rows_in, resolved, source=source)
    extra = [{"field": "seeds", "registered": list(resolved.prereg.seeds), "used": note,
              "note": "registered runs are missing"} for note in missing_runs(rows_in, resolved.prereg)]
    if ledger is not None:
        header = runs.get("screen") if isinstance(runs, Mapping) else {}
        extra += ledger_deviations(header or {}, _ledger_prereg(ledger, (header or {}).get("screen_id")))
    if extra:
        resolved = dataclasses.replace(resolved, exploratory=True, deviations=(*resolved.deviations, *extra))
    return resolved, source


def analyze(runs: Sequence[Mapping] | Mapping, *, alpha: float | None = None, margin_bpb: float | None = None,
            correction: str | None = None, metric: str | None = None, effect_bpb: float | None = None,
            effect_nats: float | None = None, interventions: Sequence[str] | None = None,
            seeds: Sequence[int] | None = None, aa_mode: str | None = None, exploratory: bool = False,
            prereg: Preregistration | None = None, prereg_source: str | None = None, backend: str | None = None,
            pool_aa: bool | None = None, aa_sigma: PooledSigma | None = None, aa_name: str = "aa",
            bytes_per_token: float | None = None, record_values_bpb: Sequence[float] | None = None,
            record_label: str = "previous record", ledger: Any = None) -> dict:
    """Analyze a screen's runs; return the ablation_results payload (see the module docstring).

    Keyword settings left None come from the pre-registration (``prereg``, else the runs.json header); given
    ones must match it unless ``exploratory``. ``interventions`` requests the family; ``pool_aa=True`` or
    ``aa_sigma`` request pooling. ``ledger`` (a path or an open Ledger): check the runs.json header against the
    ledger's copy of the pre-registration. Missing registered runs and any difference make the result
    exploratory. ``record_values_bpb``: the previous record's per-seed scores, for the Welch claim line.
    A registered sequential design is applied (``sequential_plan``): its decisions replace the fixed-n ones.
    """
    rows_in = run_rows(runs)
    requested = {"alpha": alpha, "margin_bpb": margin_bpb, "correction": correction, "metric": metric,
                 "effect_bpb": effect_bpb, "effect_nats": effect_nats, "family": interventions, "seeds": seeds,
                 "aa_mode": aa_mode, "pool_aa": True if (pool_aa or aa_sigma is not None) else pool_aa}
    resolved, source = _resolve(runs, rows_in, requested, prereg=prereg, prereg_source=prereg_source,
                                exploratory=exploratory, ledger=ledger)
    p = resolved.prereg
    header = runs.get("screen", {}) if isinstance(runs, Mapping) else {}
    rows_in = [r for r in rows_in if not p.seeds or int(r["seed"]) in p.seeds or resolved.exploratory]
    stages = arm_stages(header)
    pairs = paired_deltas(rows_in, metric=p.metric, backend=backend, stages=stages)
    family = list(p.family) if p.family is not None else [n for n in pairs if n not in cal.CALIBRATION_EXPECTED]
    _check_metric(runs, family, p.metric, source)
    effect = effect_of_interest(p, rows_in, bytes_per_token=bytes_per_token, registered=not any(
        d["field"] in ("effect_bpb", "effect_nats") for d in resolved.deviations) and source != "none")
    calibration_names = [n for n in cal.CALIBRATION_EXPECTED if n in pairs]
    empty = {"seeds": [], "control": np.zeros(0), "treatment": np.zeros(0), "delta": np.zeros(0), "failed_pairs": [],
             "n_failed": 0, "missing_seeds": [], "failed_treatment_seeds": []}
    pooled = aa_sigma
    if p.pool_aa and pooled is None:
        if aa_name not in pairs:
            raise ConfigError(f"pool_aa=True but the screen has no {aa_name!r} intervention; pass aa_sigma=")
        pooled = pooled_sigma_from_aa([pairs[aa_name]["delta"]], source=aa_name)
    names = family + [n for n in calibration_names if n not in family]
    secondary = _secondary(rows_in, p.metric, backend)
    rows = {}
    for name in names:
        row = {"intervention": name, "in_family": name in family, "calibration": name in cal.CALIBRATION_EXPECTED,
               "scored_stage": pairs.get(name, {}).get("stage", p.metric)}
        row.update(describe_pairs(pairs.get(name, empty), alpha=p.alpha, margin=p.margin_bpb, effect=effect["bpb"],
                                  pooled=None if name == aa_name else pooled))
        row.update(secondary.get(name, {}))
        rows[name] = row
    k = 3 * len(family)

    def p_or_1(name: str, field: str) -> float:
        v = rows[name][field]
        return v if rows[name]["n_pairs"] >= MIN_PAIRS and v is not None else 1.0

    # ONE family: improvement, harm and non-superiority (null) of every family arm, adjusted together, so the
    # FWER over every statement the report makes (confirmed, harmful, null) is <= alpha.
    adj = adjust_pvalues([p_or_1(n, f"p_{f}") for n in family for f in _FAMILY_TESTS], method=p.correction)
    power_alpha = p.alpha if p.correction == "none" else p.alpha / max(k, 1)
    for i, name in enumerate(family):
        rows[name].update({f"p_adjusted_{t}": float(adj[3 * i + j]) for j, t in enumerate(("improve", "harm", "null"))})
    for name in calibration_names:
        if name not in family:
            rows[name].update(p_adjusted_improve=p_or_1(name, "p_improve"), p_adjusted_harm=p_or_1(name, "p_harm"),
                              p_adjusted_null=p_or_1(name, "p_null"))
    for row in rows.values():
        level = power_alpha if row["in_family"] else p.alpha
        _power_fields(row, p, effect["bpb"], level)
        row["wilcoxon_can_reach_alpha"] = bool(row["n_pairs"] and row["wilcoxon_min_p"] < level)
        row["decision"], row["direction"], row["reason"] = decide(row, alpha=p.alpha, margin=p.margin_bpb)
        row["p_adjusted"] = row["p_adjusted_harm"] if row["direction"] == "harm" else row["p_adjusted_improve"]
        row["message"] = _message(row, metric=p.metric)
    calibration = _calibration_check(runs, rows, p.aa_mode, aa_name, backend)
    repeat = calibration.get(aa_name)
    if repeat is not None and repeat.get("mode") == "repeat":  # a check, not a test: its verdict is the decision
        rows[aa_name].update(decision=CHECK_DECISION, direction=None, reason=(
            f"bit-identical repeat of the control (seed {', '.join(map(str, repeat['seeds']))}): a determinism "
            "check, not a test of the noise" if repeat["passed"] else "the repeat run differs from its control: "
            "the backend is not bit-reproducible here, so the gate's noise model is in doubt"))
        rows[aa_name].update(message=rows[aa_name]["reason"], p_adjusted=None)  # no test was run
    payload = {
        "schema_version": SCHEMA_VERSION, "exploratory": resolved.exploratory,
        "preregistration": prereg_to_dict(resolved),
        "alpha": p.alpha, "margin_bpb": p.margin_bpb, "correction": p.correction, "metric": p.metric,
        "effect": effect, "backend": backend, "family": family, "family_size": k, "power_alpha": power_alpha,
        "family_tests": list(_FAMILY_TESTS),
        "ci_level": CI_LEVEL, "ci_consistent_level": 1.0 - 2.0 * p.alpha,
        "pooled_sigma": None if pooled is None else dataclasses.asdict(pooled),
        "calibration": calibration,
        "screen": {k2: header.get(k2) for k2 in ("screen_id", "seeds", "preset", "backend", "treatment_overrides",
                                                  "base_config", "stack", "sequential") if k2 in header},
        "results": [rows[name] for name in names],
    }
    if p.sequential:
        payload = _sequential(payload, rows_in, p, family, backend, stages)
    for row in payload["results"]:
        row["label"] = label(row, effect["bpb"])
    caveat = _proxy_caveat(header, backend)
    bpt = effect["bytes_per_token"]
    for row in payload["results"]:
        row["claims"] = (claim_lines(pairs[row["intervention"]], bytes_per_token=bpt, record_values_bpb=record_values_bpb,
                                     record_label=record_label, caveat=caveat)
                         if row["decision"] == "confirmed" and bpt is not None else None)
    flags = _horizon_flags(rows_in, p.metric)  # branched-cooldown runs: is each change stable along the horizon?
    for row in payload["results"]:
        if row["intervention"] in flags:
            row.update(horizon_unstable=flags[row["intervention"]]["unstable"],
                       horizon_reason=flags[row["intervention"]]["reason"])
    return payload


_FAMILY_TESTS = ("improve", "harm", "null")
CHECK_DECISION = "determinism_check"


def label(row: Mapping, effect_bpb: float) -> str:
    """The decision in words, exactly as the rule reads (report.md shows it): a confirmed gain below the effect
    of interest is "real, but below the record bar"; a null whose mean points to harm says so."""
    d, mean = row.get("decision"), row.get("mean_delta_bpb")
    if d == CHECK_DECISION:
        return "bit-identical repeat" if "bit-identical" in str(row.get("reason")) else "repeat differs"
    if d == "confirmed" and mean is not None and -mean < effect_bpb:
        return "confirmed: real, but below the record bar"
    if d == "null" and mean is not None and mean > 0:
        return "null: no gain of the effect; leans harmful (not significant)"
    if d == "null":
        return "null: a gain of the effect is ruled out"
    return str(d)


def _proxy_caveat(header: Mapping, backend: str | None) -> str:
    preset, be = header.get("preset") or "unknown", backend or header.get("backend") or "unknown"
    stack = f", stack {header['stack']}" if header.get("stack") else ""
    return (f"proxy result: preset {preset}{stack} on {be}, not the 8xH100 record setting; a record claim needs "
            "the same test on the record's own runs")


def _sequential(payload: dict, rows_in, p: Preregistration, family: list, backend, stages) -> dict:
    """The registered group-sequential design applied to the runs (its decisions replace the fixed-n ones)."""
    from scripts.causal.stats.sequential_plan import sequential_payload, sequential_plan

    seq = dict(p.sequential or {})
    plan = sequential_plan(rows_in, seeds=p.seeds, family=family, alpha=p.alpha, n0=int(seq.get("n0", 3)),
                           step=int(seq.get("step", 1)), margin_bpb=p.margin_bpb, metric=p.metric, backend=backend,
                           futility_effect_sd=seq.get("futility_effect_sd"), stages=stages)
    out = sequential_payload(payload, plan)
    out["family_size"] = 2 * len(family)
    out["family_tests"] = ["improve", "harm"]
    return out


def _power_fields(row: dict, p: Preregistration, effect: float, level: float) -> None:
    row.update(mde=None, power=None, seeds_needed=None, power_level=level)
    if row["n_pairs"] >= 2 and row["sigma_used"] is not None:
        sigma, n, df = row["sigma_used"], row["n_pairs"], row["df"]
        row["mde"] = mde_one_sided(sigma=sigma, n=n, df=df, alpha=level, margin=p.margin_bpb)
        row["power"] = power_one_sided(effect=effect, sigma=sigma, n=n, df=df, alpha=level, margin=p.margin_bpb)
        row["seeds_needed"] = seeds_needed(sigma=sigma, effect=effect, alpha=level, margin=p.margin_bpb)


def _horizon_flags(runs: Sequence[Mapping] | Mapping, metric: str) -> dict[str, dict]:
    """{intervention: horizon.curves.stability(...)} when every run carries horizon_metrics; {} otherwise."""
    from scripts.causal.horizon.curves import delta_curves, stability

    rows = run_rows(runs)
    if not rows or not all(r.get("horizon_metrics") for r in rows):
        return {}
    return {name: stability(curve) for name, curve in delta_curves(runs, metric=metric).items()}


def _calibration_check(runs, rows: Mapping[str, dict], aa_mode: str, aa_name: str, backend: str | None) -> dict:
    out: dict[str, Any] = {}
    if aa_name in rows:
        aa = rows[aa_name]
        mode = cal.choose_aa_mode(aa_mode, n_aa_pairs=aa["n_pairs"], all_zero=aa["n_pairs"] > 0 and aa["sd_delta"] == 0
                                  and aa["mean_delta_bpb"] == 0)
        out[aa_name] = cal.aa_repeat_check(runs, aa_name=aa_name, backend=backend) if mode == "repeat" \
            else cal.aa_arm_check(aa)
    for name, expected in cal.CALIBRATION_EXPECTED.items():
        if name in rows and name != aa_name:
            out[name] = {"mode": "arm", "decision": rows[name]["decision"], "passed": rows[name]["decision"] in expected,
                         "expected": list(expected)}
    return out


def _message(row: dict, *, metric: str) -> str:
    parts = [row["reason"]]
    if row["decision"] == "inconclusive":
        parts.append(describe_need(row))
    if row["n_failed"]:
        desc = ", ".join(f"seed {f['seed']} {f['arm']} {f['status']}" for f in row["failed_pairs"])
        parts.append(f"{row['n_failed']} failed pair(s) counted, not used as numbers: {desc}")
    if row["failed_treatment_seeds"] and row["decision"] != "inconclusive":
        parts.append(f"treatment has no finite {metric} on seeds {row['failed_treatment_seeds']} where the control "
                     "trained fine: possible harm (instability)")
    if row["n_missing"]:
        parts.append(f"{row['n_missing']} seed(s) with only one arm present: {row['missing_seeds']}")
    if row["n_pairs"] >= MIN_PAIRS and not row["wilcoxon_can_reach_alpha"]:
        need = math.floor(math.log2(1.0 / row["power_level"])) + 1
        nz = round(-math.log2(row["wilcoxon_min_p"]))
        parts.append(f"Wilcoxon floor 2^-{nz} = {row['wilcoxon_min_p']:.3g} cannot reach the per-test level "
                     f"{row['power_level']:.3g}; it is shown as a secondary view only (needs >= {need} non-zero pairs)")
    return "; ".join(parts)


def record_decisions(ledger: Any, payload: Mapping, *, screen_id: str | None = None) -> int:
    """Write each result row's decision, with the analysis settings, to the ledger's ``decisions`` table."""
    sid = screen_id or (payload.get("screen") or {}).get("screen_id")
    if not sid:
        raise ConfigError("record_decisions needs a screen_id (the payload's screen header has none)")
    settings = {k: payload.get(k) for k in ("alpha", "margin_bpb", "correction", "metric", "effect", "exploratory",
                                            "family_size", "schema_version")}
    return ledger.record_decisions(sid, [{**r, "analysis": settings} for r in payload["results"]])
