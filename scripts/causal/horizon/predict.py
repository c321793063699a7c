"""Predict the H100 sign of a change from its Δ-along-the-horizon curve, and choose the predictor honestly.

Candidates (each maps one curve, the mean Δ per horizon, to a predicted H100 Δ whose sign is the prediction):
- ``h=<H>``: the single-horizon proxy, the mean Δ at horizon H (one per horizon screened);
- ``longest``: the mean Δ at the longest horizon;
- ``trend``: the OLS line of mean Δ on log(training tokens per parameter) over all horizons, evaluated at the
  target regime's tokens per parameter (8xH100 baseline, ``target_tpp``);
- ``trend_last2``: the line through the last two horizons, extrapolated the same way (a rule on the last few).

Agreement is counted on calibration rows with |H100 Δ| >= ``MIN_ABS_H100`` (0.002 bpb), as the transfer
calibration does, with a Clopper-Pearson 95% interval on k/n. Rows of one intervention share one prediction, so
k/n is not n independent trials: the interval is optimistic when a class has few interventions.

**Choice by leave-one-intervention-out (LOO), per transfer class**: for each intervention i of class c, the
candidate with the best agreement on c's other interventions (ties: the order of ``CANDIDATE_ORDER``) predicts
i's rows. The LOO agreement counts those held-out predictions only, so it is not inflated by the choice. A class
with one intervention has nothing to choose on: its held-out prediction uses the first candidate in order
(``longest``) and the table says "no choice possible".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from scripts.causal.core.schema import CalibrationItem

__all__ = ["CANDIDATE_ORDER", "MIN_ABS_H100", "candidate_values", "loo_choice", "predictor_table"]

MIN_ABS_H100 = 0.002
CANDIDATE_ORDER = ("longest", "trend_last2", "trend")


def _line_at(x: Sequence[float], y: Sequence[float], x0: float) -> float:
    fit = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(np.polyval(fit, x0))


def candidate_values(curve: Sequence[Mapping[str, Any]], tpp: Mapping[int, float], target_tpp: float
                     ) -> dict[str, float]:
    """{candidate: predicted H100 Δ} for one curve (points with a mean Δ, ascending horizon). ``tpp`` maps each
    horizon to its training tokens per parameter; ``target_tpp`` is the target regime's."""
    pts = [p for p in curve if p["mean_delta_bpb"] is not None]
    out = {f"h={p['horizon']}": float(p["mean_delta_bpb"]) for p in pts}
    if not pts:
        return out
    out["longest"] = float(pts[-1]["mean_delta_bpb"])
    x = [math.log(tpp[p["horizon"]]) for p in pts]
    y = [p["mean_delta_bpb"] for p in pts]
    if len(pts) >= 2:
        out["trend"] = _line_at(x, y, math.log(target_tpp))
        out["trend_last2"] = _line_at(x[-2:], y[-2:], math.log(target_tpp))
    return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _cp(k: int, n: int) -> list[float] | None:
    if not n:
        return None
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def _agree(rows: Sequence[CalibrationItem], values: Mapping[str, Mapping[str, float]], cand: str) -> tuple[int, int]:
    decisive = [r for r in rows if abs(r.h100_delta) >= MIN_ABS_H100 and cand in values.get(r.intervention, {})]
    k = sum(1 for r in decisive if _sign(values[r.intervention][cand]) == _sign(r.h100_delta))
    return k, len(decisive)


def _order(candidates: Sequence[str]) -> list[str]:
    singles = sorted((c for c in candidates if c.startswith("h=")), key=lambda c: -int(c[2:]))
    return [c for c in CANDIDATE_ORDER if c in candidates] + singles


def loo_choice(rows: Sequence[CalibrationItem], values: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The LOO-chosen predictor of one class (see the module docstring): held-out k/n, its interval, and which
    candidate each held-out intervention was predicted with."""
    names = sorted({r.intervention for r in rows if r.intervention in values})
    cands = _order(sorted({c for n in names for c in values[n]}))
    k = n = 0
    picks: dict[str, str] = {}
    for held in names:
        train = [r for r in rows if r.intervention != held and r.intervention in values]
        scored = [(_agree(train, values, c), i, c) for i, c in enumerate(cands)]
        best = max(scored, key=lambda s: ((s[0][0] / s[0][1]) if s[0][1] else -1.0, -s[1]))
        pick = best[2] if best[0][1] else cands[0]
        picks[held] = pick
        kk, nn = _agree([r for r in rows if r.intervention == held], values, pick)
        k, n = k + kk, n + nn
    return {"k": k, "n": n, "agreement": k / n if n else None, "ci": _cp(k, n), "picks": picks,
            "n_interventions": len(names), "choice_possible": len(names) >= 2}


def predictor_table(items: Sequence[CalibrationItem], values: Mapping[str, Mapping[str, float]]
                    ) -> dict[str, Any]:
    """Per transfer class: each candidate's in-sample agreement (k, n, Clopper-Pearson CI) and the LOO choice.
    ``values``: {intervention: candidate_values(...)} for the interventions screened along the horizon; rows of
    other interventions are listed as unscreened."""
    by_class: dict[str, list[CalibrationItem]] = {}
    for it in items:
        by_class.setdefault(it.transfer_class, []).append(it)
    out: dict[str, Any] = {}
    for klass, rows in sorted(by_class.items()):
        screened = [r for r in rows if r.intervention in values]
        cands = _order(sorted({c for r in screened for c in values[r.intervention]}))
        cells = {}
        for c in cands:
            k, n = _agree(screened, values, c)
            cells[c] = {"k": k, "n": n, "agreement": k / n if n else None, "ci": _cp(k, n)}
        out[klass] = {"n_rows": len(rows), "n_decisive": sum(abs(r.h100_delta) >= MIN_ABS_H100 for r in rows),
                      "unscreened": sorted({r.intervention for r in rows} - set(values)),
                      "interventions": sorted({r.intervention for r in screened}), "candidates": cells,
                      "loo": loo_choice(screened, values)}
    return out
