"""How well a proxy screen's effects agree with H100: sign agreement, rank correlation and slope, per class.

Inputs: the calibration set (``CalibrationItem``: an H100 delta per leaderboard row) and one proxy screen's
paired results per intervention (``mean_delta_bpb`` and its CI from ``stats.analysis``). Per transfer class and
overall:

- **sign agreement** on the rows whose |H100 delta| >= ``MIN_ABS_H100`` (0.002 bpb: smaller H100 rows are within
  a few seed SDs of zero): k of n rows where the proxy's mean delta has the same sign, with a Clopper-Pearson 95%
  interval on k/n. Rows are the unit here, as leaderboard evidence is counted elsewhere; rows of one intervention
  share one proxy value, so k/n is not n independent trials (the interval is optimistic when n_interventions < n).
- **Spearman** rank correlation and an **OLS slope** (H100 delta on proxy delta, 95% t interval), over
  interventions: each intervention's H100 rows are averaged first, so one heavily reported change (18 sliding-eval
  rows) does not count 18 times. Left out (None) below 3 interventions.
- a **ceiling**: the most rows any proxy could agree with. A screen gives one delta per intervention, so when
  the H100 rows of one intervention disagree in sign among themselves (``num_layers_plus2`` measured on different
  stacks: -0.070 and +0.091), at most the larger side can agree. A target above the ceiling cannot be reached on
  this set by any proxy, and a proxy at the ceiling is as good as the set can show.
- a **verdict**: ``good`` (agreement >= ``TARGET`` on >= ``MIN_ROWS`` rows), ``poor`` (below the target),
  ``too_few_rows``, or ``unmeasured``; a report flags every class that is not ``good`` as not to be trusted from
  the proxy.

``overall`` pools the 8xH100 rows only (rows on other hardware are scored in their own ``class [hardware]``).
The same statistics are repeated over the rows of the 10-minute record track alone (``record_track``): the
non-record studies (binary and ternary nets, other architectures) measure their changes on stacks far from the
ones a competitor screens.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from scripts.causal.core.schema import CalibrationItem
from scripts.causal.transfer.calibration_set import TARGET_HARDWARE

__all__ = ["MIN_ABS_H100", "MIN_ROWS", "RECORD_TRACK", "TARGET", "score", "agreement_sentence"]

MIN_ABS_H100 = 0.002
MIN_ROWS = 3
TARGET = 0.8
RECORD_TRACK = "track_10min_16mb"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    decisive = [r for r in rows if abs(r["h100_delta"]) >= MIN_ABS_H100]
    k = sum(1 for r in decisive if _sign(r["proxy_delta"]) == _sign(r["h100_delta"]))
    n = len(decisive)
    out: dict[str, Any] = {"n_rows": len(rows), "n_decisive": n, "k_agree": k,
                           "agreement": k / n if n else None, "agreement_ci": None,
                           "n_interventions": 0, "spearman": None, "spearman_p": None,
                           "slope": None, "slope_ci": None}
    sides: dict[str, list[int]] = {}
    for r in decisive:
        sides.setdefault(r["intervention"], [0, 0])[r["h100_delta"] > 0] += 1
    out["ceiling_k"] = sum(max(s) for s in sides.values())
    out["ceiling"] = out["ceiling_k"] / n if n else None
    if n:
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        out["agreement_ci"] = [float(ci.low), float(ci.high)]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["intervention"], []).append(r)
    proxy = np.array([g[0]["proxy_delta"] for g in by.values()])
    h100 = np.array([np.mean([r["h100_delta"] for r in g]) for g in by.values()])
    out["n_interventions"] = len(by)
    if len(by) >= 3 and np.ptp(proxy) > 0 and np.ptp(h100) > 0:
        rho = stats.spearmanr(proxy, h100)
        out["spearman"], out["spearman_p"] = float(rho.statistic), float(rho.pvalue)
        fit = stats.linregress(proxy, h100)
        q = float(stats.t.ppf(0.975, len(by) - 2))
        out["slope"] = float(fit.slope)
        out["slope_ci"] = [float(fit.slope - q * fit.stderr), float(fit.slope + q * fit.stderr)]
    if n == 0:
        out["verdict"] = "unmeasured"
    elif n < MIN_ROWS:
        out["verdict"] = "too_few_rows"
    else:
        out["verdict"] = "good" if k / n >= TARGET else "poor"
    return out


def score(items: Sequence[CalibrationItem], proxy: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per class and overall agreement of ``proxy`` (intervention -> analysis row) with the calibration set.

    Items whose intervention the proxy did not screen (refused at its scale, or failed) are counted in
    ``not_screened`` and left out of every statistic."""
    rows, not_screened = [], []
    for it in items:
        p = proxy.get(it.intervention)
        if p is None or p.get("mean_delta_bpb") is None or not math.isfinite(float(p["mean_delta_bpb"])):
            not_screened.append(it.intervention)
            continue
        rows.append({"intervention": it.intervention, "transfer_class": it.transfer_class,
                     "record_id": it.record_id, "change": it.change, "h100_delta": it.h100_delta,
                     "proxy_delta": float(p["mean_delta_bpb"]), "proxy_ci": [p.get("ci_low"), p.get("ci_high")],
                     "proxy_decision": p.get("decision"), "in_range": it.in_range, "metric": it.metric,
                     "track": it.track, "hardware": it.hardware, "quote": it.quote, "source": it.source,
                     "entry": it.entry, "reversed": it.reversed,
                     "agree": (_sign(float(p["mean_delta_bpb"])) == _sign(it.h100_delta)
                               if abs(it.h100_delta) >= MIN_ABS_H100 else None)})
    classes = sorted({r["transfer_class"] for r in rows} | {it.transfer_class for it in items})
    target = [r for r in rows if r["hardware"] == TARGET_HARDWARE]
    record = [r for r in target if r["track"] == RECORD_TRACK]
    return {"overall": _block(target),
            "classes": {c: _block([r for r in rows if r["transfer_class"] == c]) for c in classes},
            "record_track": {"overall": _block(record),
                             "classes": {c: _block([r for r in record if r["transfer_class"] == c]) for c in classes}},
            "rows": rows, "not_screened": sorted(set(not_screened)),
            "min_abs_h100": MIN_ABS_H100, "target": TARGET}


def agreement_sentence(klass: str, block: Mapping[str, Any] | None, preset: str) -> str:
    """One line a report quotes for an intervention of ``klass`` screened at ``preset``."""
    if not block or not block.get("n_decisive"):
        return (f"{klass}: proxy-to-H100 agreement at `{preset}` not measured (no verified calibration rows with |H100 delta| "
                f">= {MIN_ABS_H100}): **untested against H100**, do not take the proxy's verdict as a prediction")
    k, n = block["k_agree"], block["n_decisive"]
    lo, hi = block["agreement_ci"]
    text = (f"{klass} changes agreed in sign with H100 in {k} of {n} verified calibration rows at `{preset}` "
            f"(95% CI {lo:.0%}-{hi:.0%})")
    if block.get("ceiling_k") is not None and block["ceiling_k"] < n:
        text += (f"; no proxy can agree with more than {block['ceiling_k']} of these {n} rows (one intervention's "
                 f"H100 rows disagree in sign)")
    if block.get("verdict") != "good":
        why = "too few rows" if block.get("verdict") == "too_few_rows" else f"below the {TARGET:.0%} target"
        text += f": **not to be trusted from the proxy** ({why})"
    return text
