"""Multiplicity corrections: Holm (FWER), Benjamini-Hochberg (FDR) and none, behind one entry point.

Holm is computed here in numpy (checked against ``statsmodels.multipletests(method="holm")`` and R's
``p.adjust(method="holm")`` in the tests) because statsmodels 0.15 calls ``gc.collect()`` on every Holm call
(~60 ms), which would make the 1000-screen A/A simulations take minutes. BH uses statsmodels ``fdr_bh``.

``FWER_CORRECTIONS`` names the corrections under which a ``confirmed`` may be promoted (promote.py): Holm, and
the Bonferroni split of the group-sequential design (sequential.py). BH controls only the false discovery rate:
a BH result is a screen, to be confirmed with Holm on fresh seeds (confirmation.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scripts.causal.core.errors import ConfigError

__all__ = ["CORRECTIONS", "FWER_CORRECTIONS", "adjust_pvalues", "bh_adjust", "holm_adjust"]


def holm_adjust(pvals: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values: p_(i) -> max_{j<=i} min(1, (K - j + 1) p_(j))."""
    p = np.asarray(pvals, dtype=float)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="mergesort")
    k = p.size
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(k, 0, -1)))
    out = np.empty_like(p)
    out[order] = adj_sorted
    return out


def bh_adjust(pvals: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests(method="fdr_bh")``)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvals, dtype=float)
    if p.size == 0:
        return p.copy()
    return np.asarray(multipletests(p, alpha=0.05, method="fdr_bh")[1], dtype=float)


def _no_adjust(pvals: Sequence[float]) -> np.ndarray:
    return np.asarray(pvals, dtype=float).copy()


CORRECTIONS = {"holm": holm_adjust, "bh": bh_adjust, "none": _no_adjust}
FWER_CORRECTIONS = ("holm", "group_sequential_bonferroni")


def adjust_pvalues(pvals: Sequence[float], *, method: str) -> np.ndarray:
    """Adjust p-values with a correction from ``CORRECTIONS`` (holm | bh | none)."""
    if method not in CORRECTIONS:
        raise ConfigError(f"unknown correction {method!r}; valid choices: {sorted(CORRECTIONS)}")
    p = np.asarray(pvals, dtype=float)
    if p.size and (np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ConfigError(f"all p-values must lie in [0, 1], got {p.tolist()}")
    return CORRECTIONS[method](p)
