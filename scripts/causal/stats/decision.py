"""The decision gate: what one intervention's paired data show, and nothing more.

Decisions (``DECISIONS``), in order of precedence:

* ``confirmed``: the adjusted improvement p (H0: delta >= -margin) is below alpha, the mean improvement is at
  least the margin, and no treatment run failed or diverged where its control trained fine.
* ``harmful``: the adjusted harm p (H0: delta <= 0) is below alpha.
* ``null``: the data rule out an improvement of the pre-registered effect of interest: the adjusted
  non-superiority p (H0: improvement >= effect) is below alpha. With ``correction="none"`` this is exactly
  "the one-sided (1 - alpha) upper confidence bound on the improvement is below the effect". A ``null`` is an
  equivalence-type statement, so it is safe to drop a ``null`` candidate from later rankings.
* ``inconclusive``: everything else, including fewer than ``MIN_PAIRS`` valid pairs and pairs that are all
  exactly equal (zero variance: no test, the result is stated in words). The row states the MDE at
  the achieved n and how many more seeds would give power 0.8 at the effect of interest (``seeds_needed``,
  exact noncentral t at the observed sd, which is a planning estimate, not a guarantee). An inconclusive
  candidate stays in the ranking: more seeds on it are worth something.

A treatment that failed where the control did not blocks ``confirmed`` (the row becomes ``inconclusive`` with
that reason): a change that sometimes breaks training must not be promoted on the strength of its good seeds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from scripts.causal.stats.pairing import MIN_PAIRS
from scripts.causal.stats.power import power_one_sided

__all__ = ["DECISIONS", "MAX_SEEDS_SEARCH", "TARGET_POWER", "decide", "describe_need", "seeds_needed"]

DECISIONS = ("confirmed", "harmful", "null", "inconclusive")
TARGET_POWER = 0.8
MAX_SEEDS_SEARCH = 100_000


def seeds_needed(*, sigma: float, effect: float, alpha: float, margin: float = 0.0,
                 power: float = TARGET_POWER) -> int | None:
    """Smallest n (>= MIN_PAIRS) with exact one-sided power >= ``power`` for a true improvement ``effect``.

    None when ``effect <= margin`` (no n reaches it) or n would exceed ``MAX_SEEDS_SEARCH``. Power is monotone
    in n, so an exponential then binary search finds the smallest n.
    """
    if effect <= margin:
        return None
    def ok(n: int) -> bool:
        return power_one_sided(effect=effect, sigma=sigma, n=n, alpha=alpha, margin=margin) >= power
    lo, hi = MIN_PAIRS, MIN_PAIRS
    while not ok(hi):
        lo, hi = hi + 1, hi * 2
        if hi > MAX_SEEDS_SEARCH:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return int(hi)


def decide(row: Mapping, *, alpha: float, margin: float) -> tuple[str, str | None, str]:
    """(decision, direction, reason) for a row holding ``describe_pairs`` fields and the adjusted p's."""
    n = row["n_pairs"]
    if n < MIN_PAIRS:
        return "inconclusive", None, f"only {n} valid pair(s); a decision needs >= {MIN_PAIRS}"
    if row.get("zero_variance"):
        return "inconclusive", None, (f"all {n} pairs equal: Δ = {row['mean_delta_bpb']:+.6g} bpb exactly, no "
                                      "variance; no test (the metric may not see this change)")
    pi, ph, pn = row["p_adjusted_improve"], row["p_adjusted_harm"], row["p_adjusted_null"]
    if pi < alpha and -row["mean_delta_bpb"] >= margin:
        if row["failed_treatment_seeds"]:
            return ("inconclusive", "improve",
                    f"improvement is significant on the valid pairs, but the treatment failed on seeds "
                    f"{row['failed_treatment_seeds']} where the control trained fine; not confirmable")
        return "confirmed", "improve", f"adjusted p_improve {pi:.3g} < alpha {alpha}"
    if ph < alpha:
        return "harmful", "harm", f"adjusted p_harm {ph:.3g} < alpha {alpha}"
    if pn < alpha:
        return "null", None, (f"an improvement of the effect of interest is ruled out (adjusted non-superiority "
                              f"p {pn:.3g} < alpha {alpha})")
    return "inconclusive", None, "neither an improvement, a harm nor the absence of the effect is shown"


def describe_need(row: Mapping) -> str:
    """One sentence on what an inconclusive row would need (MDE and more seeds)."""
    mde, need = row.get("mde"), row.get("seeds_needed")
    if mde is None or not math.isfinite(mde):
        return "too few pairs to estimate the noise"
    more = "no finite number of seeds" if need is None else f"{max(need - row['n_pairs'], 0)} more seed(s) (n={need})"
    return f"MDE {mde:.4f} bpb at n={row['n_pairs']}; power 0.8 at the effect of interest needs {more}"
