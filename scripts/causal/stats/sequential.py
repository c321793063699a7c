"""Group-sequential seed allocation: start with n0 pairs, add pairs to undecided interventions up to n_max.

Boundaries. Each intervention is tested in both directions (improvement against the margin, harm against 0)
at looks n_1 = n0 < n_2 < ... < n_K = n_max valid pairs. Type-I error is spent with the Lan-DeMets
O'Brien-Fleming-type function ``alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))`` at information fraction
``t_k = n_k / n_max`` (alpha(1) = alpha). The boundary is on the paired t statistic itself: under H0 (normal d,
mean on the null boundary) the joint law of (T_{n_1}, ..., T_{n_K}) does not depend on sigma, so we calibrate the
per-look critical values c_k by Monte Carlo: simulate ``n_sim`` N(0, 1) paths (seeded), and choose c_k so that
the fraction of paths that first cross at look k is ``alpha(t_k) - alpha(t_{k-1})``. This is exact up to MC error
even at n0 = 3 (df = 2), where normal-theory boundaries would be badly off. A look whose spend is below one
simulated path gets c_k = +inf (it spends nothing, which is conservative).

Futility (optional, non-binding). With ``futility_effect_sd`` (the planned effect, in sigma_d units) an
interim look also stops an intervention when |T_k| <= f_k: f_k is calibrated on simulated paths with the planned
effect so that the probability of such a stop follows the OBF-type spending of ``beta_futility``. Because the
efficacy boundaries ignore it (non-binding), futility can only remove rejections: the type-I error stays
<= alpha whether or not it is obeyed; the power drops by at most ``beta_futility``.

Family. Holm's step-down does not carry over to sequential looks without a graphical procedure, so across the
screen we use Bonferroni: each of the 2m one-sided tests gets level alpha / (2m) (``screen_design``); the FWER is
then <= alpha by the union bound, whatever the dependence between interventions (they share controls).

Allocation for the runner (which arms stop, which get more seeds, at the looks actually taken) is in
sequential_plan.py; ``design_at_looks`` gives the boundaries for any sequence of looks.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import special

from scripts.causal.core.errors import ConfigError
from scripts.causal.core.schema import GroupSequentialDesign
from scripts.causal.stats.pairing import MIN_PAIRS

__all__ = ["obf_spending", "design_group_sequential", "design_at_looks", "screen_design", "t_paths",
           "first_crossing", "simulate_sequential"]


def obf_spending(t: float | np.ndarray, alpha: float) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))."""
    t = np.asarray(t, dtype=float)
    z = special.ndtri(1.0 - alpha / 2.0)
    with np.errstate(divide="ignore"):
        return np.where(t > 0, 2.0 - 2.0 * special.ndtr(z / np.sqrt(np.where(t > 0, t, 1.0))), 0.0)


def t_paths(x: np.ndarray, looks: Sequence[int]) -> np.ndarray:
    """One-sample t statistics (mean / (sd/sqrt n)) of each row of ``x`` at each look; shape (rows, looks)."""
    looks = np.asarray(looks)
    s1 = np.cumsum(x, axis=1)[:, looks - 1]
    s2 = np.cumsum(x * x, axis=1)[:, looks - 1]
    mean = s1 / looks
    var = np.maximum(s2 - s1 * mean, 0.0) / (looks - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return mean / np.sqrt(var / looks)


def _looks(n0: int, n_max: int, step: int) -> tuple[int, ...]:
    if n0 < MIN_PAIRS:
        raise ConfigError(f"n0={n0} must be >= {MIN_PAIRS} (the gate's minimum number of valid pairs)")
    if n_max < n0 or step < 1:
        raise ConfigError(f"need n_max >= n0 and step >= 1, got n0={n0}, n_max={n_max}, step={step}")
    looks = list(range(n0, n_max + 1, step))
    if looks[-1] != n_max:
        looks.append(n_max)
    return tuple(looks)


def design_group_sequential(*, n0: int, n_max: int, alpha: float, step: int = 1, n_sim: int = 200_000,
                            seed: int = 0, futility_effect_sd: float | None = None,
                            beta_futility: float = 0.05) -> GroupSequentialDesign:
    """Per-look one-sided t boundaries for ONE test at level ``alpha`` (OBF spending, MC-calibrated).

    Planned looks n0, n0 + step, ..., n_max. With ``futility_effect_sd`` also non-binding futility bounds f_k
    (see the module docstring).
    """
    return design_at_looks(_looks(n0, n_max, step), n_max=n_max, alpha=alpha, n_sim=n_sim, seed=seed,
                           futility_effect_sd=futility_effect_sd, beta_futility=beta_futility)


@lru_cache(maxsize=256)
def design_at_looks(looks: tuple[int, ...], *, n_max: int, alpha: float, n_sim: int = 200_000, seed: int = 0,
                    futility_effect_sd: float | None = None, beta_futility: float = 0.05) -> GroupSequentialDesign:
    """Boundaries at the looks actually taken (valid pairs, increasing, last <= n_max), spending at n_k / n_max.

    The boundary of look k depends only on looks 1..k (the same seeded paths are calibrated look by look), so
    boundaries already used never change when a later look is added; a final look below n_max leaves the
    unspent alpha unspent (conservative).
    """
    if not (0.0 < alpha < 0.5):
        raise ConfigError(f"alpha={alpha!r} must lie in (0, 0.5)")
    looks = tuple(int(n) for n in looks)
    if not looks or looks[0] < MIN_PAIRS or any(b <= a for a, b in zip(looks, looks[1:], strict=False)) or looks[-1] > n_max:
        raise ConfigError(f"looks={list(looks)} must be increasing valid-pair counts in [{MIN_PAIRS}, n_max={n_max}]")
    rng = np.random.default_rng(seed)
    t = t_paths(rng.standard_normal((n_sim, n_max)), looks)
    spent = obf_spending(np.asarray(looks) / n_max, alpha)
    alive = np.ones(n_sim, dtype=bool)
    bounds = []
    prev = 0.0
    for k in range(len(looks)):
        inc = (spent[k] - prev) * n_sim
        prev = spent[k]
        cand = np.sort(t[alive, k])[::-1]
        m = int(math.floor(inc))
        if m < 1:
            c = math.inf
        else:
            # the m-th largest alive t crosses; place the boundary between the m-th and (m+1)-th values
            c = float(cand[m - 1] if m >= cand.size else 0.5 * (cand[m - 1] + cand[m]))
        bounds.append(c)
        alive &= ~(t[:, k] >= c)
    f_bounds: tuple[float, ...] = ()
    if futility_effect_sd is not None:
        if not (futility_effect_sd > 0 and 0 < beta_futility < 0.5):
            raise ConfigError(f"futility needs futility_effect_sd > 0 and 0 < beta_futility < 0.5, got "
                              f"{futility_effect_sd!r}, {beta_futility!r}")
        f_bounds = _futility_bounds(looks, tuple(bounds), n_max=n_max, effect_sd=futility_effect_sd,
                                    beta=beta_futility, n_sim=n_sim, rng=rng)
    return GroupSequentialDesign(looks=looks, alpha=float(alpha), spent=tuple(float(s) for s in spent),
                                 t_bounds=tuple(bounds), n_sim=int(n_sim), seed=int(seed), f_bounds=f_bounds,
                                 futility_effect_sd=futility_effect_sd,
                                 beta_futility=float(beta_futility) if f_bounds else 0.0)


def _futility_bounds(looks: tuple[int, ...], bounds: tuple[float, ...], *, n_max: int, effect_sd: float,
                     beta: float, n_sim: int, rng: np.random.Generator) -> tuple[float, ...]:
    """f_k with P_H1(first stop for |T_k| <= f_k at look k) = beta(t_k) - beta(t_{k-1}); f_k = 0 at n_max."""
    t = -t_paths(rng.standard_normal((n_sim, n_max)) - effect_sd, looks)  # improvement side, positive = better
    spent = obf_spending(np.asarray(looks) / n_max, beta)
    alive = np.ones(n_sim, dtype=bool)
    out, prev = [], 0.0
    for k in range(len(looks)):
        alive &= ~(t[:, k] >= bounds[k])
        if looks[k] >= n_max:
            out.append(0.0)
            break
        m = int(math.floor((spent[k] - prev) * n_sim))
        prev = spent[k]
        cand = np.sort(np.abs(t[alive, k]))
        f = 0.0 if m < 1 or cand.size == 0 else float(cand[min(m, cand.size) - 1])
        out.append(f)
        alive &= ~(np.abs(t[:, k]) <= f)
    return tuple(out)


def screen_design(*, n_interventions: int, alpha: float = 0.01, n0: int = 3, n_max: int = 10, step: int = 1,
                  n_sim: int = 200_000, seed: int = 0) -> GroupSequentialDesign:
    """Design for a screen: each of the 2 x m one-sided tests at alpha / (2m) (Bonferroni, see docstring)."""
    if n_interventions < 1:
        raise ConfigError(f"n_interventions={n_interventions} must be >= 1")
    return design_group_sequential(n0=n0, n_max=n_max, step=step, alpha=alpha / (2 * n_interventions),
                                   n_sim=n_sim, seed=seed)


def first_crossing(t: np.ndarray, design: GroupSequentialDesign) -> tuple[np.ndarray, np.ndarray]:
    """For t statistics at the design's looks (rows x looks): (look index of the first crossing or -1, sign).

    sign is -1 for improvement (t <= -c), +1 for harm (t >= c), 0 for none or a futility stop (first >= 0);
    the improvement t must already include
    the margin shift. With a margin the two directions use different statistics: use sequential_plan.
    """
    c = np.asarray(design.t_bounds)
    hit_lo, hit_hi = t <= -c, t >= c
    f = np.asarray(design.f_bounds) if design.f_bounds else np.zeros_like(c)
    futile = (np.abs(t) <= f) & (f > 0) & ~hit_lo & ~hit_hi
    stop = hit_lo | hit_hi | futile
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), -1)
    rows, k = np.arange(t.shape[0]), np.maximum(first, 0)
    sign = np.where(first >= 0, np.where(hit_lo[rows, k], -1, np.where(hit_hi[rows, k], 1, 0)), 0)
    return first, sign


def simulate_sequential(design: GroupSequentialDesign, *, effect_sd: float, n_paths: int,
                        seed: int) -> dict:
    """Monte Carlo operating characteristics for one intervention with true mean d = -effect_sd * sigma.

    Returns {"p_confirm", "p_harm", "mean_n", "n_max"}; mean_n counts valid pairs spent (stop at crossing).
    """
    rng = np.random.default_rng(seed)
    looks = np.asarray(design.looks)
    x = rng.standard_normal((n_paths, looks[-1])) - effect_sd
    first, sign = first_crossing(t_paths(x, looks), design)
    n_used = np.where(first >= 0, looks[np.maximum(first, 0)], looks[-1])
    return {"p_confirm": float(np.mean(sign == -1)), "p_harm": float(np.mean(sign == 1)),
            "mean_n": float(n_used.mean()), "n_max": int(looks[-1])}
