"""Exact power and minimum detectable effect (MDE) for the one-sided paired t-test (noncentral t).

The paired differences d_i = bpb(treatment) - bpb(control) are modelled as iid N(delta, sigma^2).
The improvement test rejects H0: delta >= -margin when

    T = (mean(d) + margin) / (s / sqrt(n)) < -t_{1-a, n-1}.

For a true improvement ``effect`` (bpb, positive = better, measured from 0, so it includes the margin),
T + ... follows a noncentral t with df = n - 1 and noncentrality lambda = (effect - margin) * sqrt(n) / sigma,
so the power is ``1 - F_nct(t_{1-a, n-1}; n-1, lambda)`` exactly (no normal approximation).
This matches ``statsmodels.stats.power.TTestPower().power(effect_size, nobs, alpha, alternative="larger")``
with ``effect_size = (effect - margin) / sigma`` (checked in the tests).

The MDE is the smallest true improvement with power >= ``power`` at level ``alpha``; it scales with sigma, so
the standardised MDE (in units of sigma) depends only on (n, alpha, power) and is cached.
"""
from __future__ import annotations

import math
from functools import lru_cache

from scipy import optimize, special

from scripts.causal.core.errors import ConfigError

__all__ = ["power_one_sided", "mde_one_sided", "standardized_mde"]


def _check(n: int, alpha: float) -> None:
    if not (0.0 < alpha < 1.0):
        raise ConfigError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    if int(n) < 2:
        raise ConfigError(f"n={n!r} pairs: a paired t-test needs at least 2 pairs (df = n - 1 >= 1)")


def _power_std(es: float, n: int, alpha: float, df: int | None = None) -> float:
    """Power of the one-sided one-sample t-test at standardised effect ``es`` (sigma units, >0 = H1 side).

    ``df`` defaults to n - 1; a pooled variance estimate (A/A pooling) has more degrees of freedom.
    """
    df = n - 1 if df is None else int(df)
    crit = special.stdtrit(df, 1.0 - alpha)  # = stats.t.ppf(1 - alpha, df)
    return float(1.0 - special.nctdtr(df, es * math.sqrt(n), crit))  # = stats.nct.sf(crit, df, lambda)


def power_one_sided(*, effect: float, sigma: float, n: int, alpha: float, margin: float = 0.0,
                    df: int | None = None) -> float:
    """Exact power of the one-sided paired t-test for a true improvement ``effect`` (bpb, > 0 = better).

    ``margin`` is the non-inferiority margin of the test (H1: delta < -margin). ``sigma == 0`` gives
    1.0 when ``effect > margin`` and ``alpha`` otherwise (a degenerate, noise-free comparison).
    """
    _check(n, alpha)
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma={sigma!r} must be a finite number >= 0")
    if sigma == 0.0:
        return 1.0 if effect > margin else float(alpha)
    return _power_std((effect - margin) / sigma, int(n), alpha, df)


@lru_cache(maxsize=4096)
def standardized_mde(n: int, alpha: float, power: float = 0.8, df: int | None = None) -> float:
    """Smallest standardised effect (effect - margin) / sigma reaching ``power`` at ``n`` pairs."""
    _check(n, alpha)
    if not (alpha < power < 1.0):
        raise ConfigError(f"power={power!r} must lie strictly between alpha={alpha} and 1")
    hi = 1.0
    while _power_std(hi, n, alpha, df) < power:
        hi *= 2.0
        if hi > 1e6:  # pragma: no cover - only for absurd (n, alpha) combinations
            raise ConfigError(f"no finite MDE for n={n}, alpha={alpha}, power={power}")
    return float(optimize.brentq(lambda es: _power_std(es, n, alpha, df) - power, 0.0, hi, xtol=1e-10))


def mde_one_sided(*, sigma: float, n: int, alpha: float, power: float = 0.8, margin: float = 0.0,
                  df: int | None = None) -> float:
    """Minimum detectable true improvement (bpb, from 0, margin included) at power ``power``."""
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma={sigma!r} must be a finite number >= 0")
    return float(margin + sigma * standardized_mde(int(n), float(alpha), float(power), None if df is None else int(df)))
