"""The gate for arms whose seeds do not match the control's: Welch's unpaired t, same family and decision rule.

Pairing by seed removes the seed's share of the noise; when the runs of two arms were made on different seeds
(imported logs), there is nothing to pair, and treating them as pairs would be wrong. ``welch_gate`` tests each
treatment against the control with Welch's t (unequal variances, Welch-Satterthwaite df) in the three
directions of the paired gate (``paired_tests``): improvement beyond the margin, harm, and non-superiority at
the effect of interest; adjusts them over the family exactly as ``analysis.analyze`` does (2 x |family| for
improve/harm, |family| for null); and decides with the same ``decision.decide``. ``n_pairs`` is reported as the
smaller arm's size (the gate's minimum of 3 applies to each arm). Welch ignores any positive correlation that
common seeds would have brought, so it is less powerful than the paired test, never anti-conservative for it.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import special

from scripts.causal.stats.decision import decide
from scripts.causal.stats.multiplicity import adjust_pvalues
from scripts.causal.stats.paired_tests import CI_LEVEL, t_pvalue
from scripts.causal.stats.pairing import MIN_PAIRS, metric_value, valid_run

__all__ = ["SCHEMA_VERSION", "welch_gate", "welch_row"]

SCHEMA_VERSION = 2


def welch_row(control: Sequence[float], treatment: Sequence[float], *, margin: float, effect: float) -> dict:
    """Welch statistics of treatment - control: means, delta, se, df, CI, one-sided p's (paired_tests' names)."""
    c, t = np.asarray(control, float), np.asarray(treatment, float)
    row = {"n_control": int(c.size), "n_treatment": int(t.size), "n_pairs": int(min(c.size, t.size)),
           "mean_control_bpb": float(c.mean()) if c.size else None,
           "mean_treatment_bpb": float(t.mean()) if t.size else None}
    if c.size < 2 or t.size < 2:
        return {**row, "mean_delta_bpb": None, "se_delta": None, "df": None, "ci_low": None, "ci_high": None,
                "p_improve": 1.0, "p_harm": 1.0, "p_null": 1.0}
    vc, vt = c.var(ddof=1) / c.size, t.var(ddof=1) / t.size
    se = math.sqrt(vc + vt)
    df = (vc + vt) ** 2 / (vc ** 2 / (c.size - 1) + vt ** 2 / (t.size - 1)) if se > 0 else float(c.size + t.size - 2)
    mean = float(t.mean() - c.mean())
    q = float(special.stdtrit(df, 0.5 + CI_LEVEL / 2))
    _, p_improve = t_pvalue(mean + margin, se, df, lower=True)
    _, p_harm = t_pvalue(mean, se, df, lower=False)
    _, p_null = t_pvalue(mean + effect, se, df, lower=False)
    return {**row, "mean_delta_bpb": mean, "se_delta": se, "df": float(df), "ci_low": mean - q * se,
            "ci_high": mean + q * se, "p_improve": p_improve, "p_harm": p_harm, "p_null": p_null}


def welch_gate(rows: Sequence[Mapping], *, family: Sequence[str], metric: str, alpha: float, margin_bpb: float,
               correction: str, effect_bpb: float, why: str) -> dict:
    """The ablation payload of an unpaired screen: one Welch row per family arm, adjusted and decided.

    ``why`` says why the seeds could not be paired; it is repeated in every row's message."""
    ctrl = [metric_value(r, metric) for r in rows if r["arm"] == "control" and valid_run(r, metric)]
    results = {}
    for name in family:
        arm = [r for r in rows if r["intervention"] == name]
        vals = [metric_value(r, metric) for r in arm if valid_run(r, metric)]
        row = {"intervention": name, "in_family": True, "calibration": False, "test": "Welch t (unpaired)",
               "failed_treatment_seeds": sorted(r["seed"] for r in arm if not valid_run(r, metric))}
        row.update(welch_row(ctrl, vals, margin=margin_bpb, effect=effect_bpb))
        results[name] = row

    def p_or_1(name: str, field: str) -> float:
        r = results[name]
        return r[field] if r["n_control"] >= MIN_PAIRS and r["n_treatment"] >= MIN_PAIRS else 1.0

    adj = adjust_pvalues([p_or_1(n, f) for n in family for f in ("p_improve", "p_harm")], method=correction)
    adj_null = adjust_pvalues([p_or_1(n, "p_null") for n in family], method=correction)
    for i, name in enumerate(family):
        r = results[name]
        r.update(p_adjusted_improve=float(adj[2 * i]), p_adjusted_harm=float(adj[2 * i + 1]),
                 p_adjusted_null=float(adj_null[i]))
        if r["mean_delta_bpb"] is None:
            r["decision"], r["direction"], r["reason"] = "inconclusive", None, "fewer than 2 runs in an arm"
        else:
            r["decision"], r["direction"], r["reason"] = decide(r, alpha=alpha, margin=margin_bpb)
        r["p_adjusted"] = r["p_adjusted_harm"] if r["direction"] == "harm" else r["p_adjusted_improve"]
        delta = "n/a" if r["mean_delta_bpb"] is None else f"{r['mean_delta_bpb']:+.5f}"
        r["message"] = (f"{r['decision']} (unpaired, seeds differ from the control's: Welch t, delta {delta} bpb on {metric}, "
                        f"n = {r['n_treatment']} vs {r['n_control']} control runs; {r['reason']})")
    return {"schema_version": SCHEMA_VERSION, "pairing": "unpaired", "test": "Welch t (unpaired)",
            "pairing_note": f"seeds do not match ({why}): the runs cannot be paired by seed, so each arm is "
                            "compared with the control by Welch's unpaired t",
            "alpha": alpha, "margin_bpb": margin_bpb, "correction": correction, "metric": metric,
            "effect": {"bpb": effect_bpb}, "family": list(family), "family_size": 2 * len(family),
            "ci_level": CI_LEVEL, "results": [results[n] for n in family]}
