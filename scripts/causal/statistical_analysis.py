"""Paired-seed statistics and the direction-aware decision gate for a screen (runs.json -> ablation_results.json).

For each intervention, d_i = bpb(treatment, seed i) - bpb(control, seed i) over the seeds where BOTH runs are
valid (status "ok" and a finite metric); negative d = improvement. Per intervention we report:

* ``p_improve``: one-sided paired t, H0: delta >= -margin vs H1: delta < -margin, i.e. t = (mean(d)+margin)/se.
* ``p_harm``: one-sided paired t, H0: delta <= 0 vs H1: delta > 0.
* ``ci_low``/``ci_high``: exact-t two-sided 95% CI of delta. ``ci_consistent_low``/``_high``: the two-sided
  (1 - 2 alpha) interval, whose ends match the unadjusted one-sided tests at level alpha.
* Wilcoxon signed-rank p's (secondary view; zeros dropped; exact null distribution when there are no ties and
  n <= 50, else scipy's ``method="auto"``); its floor is ``2**-n`` (n = non-zero d's), reported as
  ``wilcoxon_min_p`` / ``wilcoxon_can_reach_alpha`` (whether the floor is below the per-test level).
* ``rho``: Pearson correlation of control vs treatment bpb across seeds (None if n < 3 or zero variance).
* ``mde``: smallest true mean improvement (bpb, margin included) that the improvement test detects with
  power 0.8 at the achieved n and the observed sd, exact noncentral t, at per-test level ``power_alpha``.
  ``power``: the exact power of that test for a true improvement of ``margin_bpb + power_effect_bpb``.
  ``power_alpha`` = alpha / K for Holm and BH (K = family size; Bonferroni is a lower bound on both
  procedures' power, so mde is conservative) and alpha for ``correction="none"``.

Multiplicity family: every intervention of the screen with >= 3 valid pairs, in BOTH directions (K = 2 x m
p-values, including the calibration arms ``aa`` and ``sanity_frozen_matrices``). Holm controls the FWER over
that family under any dependence (the shared control makes the tests dependent). Holm is computed here in
numpy (``holm_adjust``; checked against ``statsmodels.multipletests(method="holm")`` and R's
``p.adjust(method="holm")`` in the tests) because statsmodels 0.15 calls ``gc.collect()`` on every Holm call
(~60 ms), which would make the 1000-screen A/A simulation take minutes. BH uses statsmodels ``fdr_bh``.

Decision gate (direction-aware): ``insufficient`` (< 3 valid pairs) > ``confirmed`` (adjusted p_improve < alpha
and mean improvement >= margin) > ``harmful`` (adjusted p_harm < alpha) > ``suggestive`` (unadjusted p < 0.1 in
either direction) > ``null``. ``p_adjusted`` is the adjusted p of the deciding direction (improvement for null;
both are kept in ``p_adjusted_improve``/``p_adjusted_harm``).

Failed runs are never dropped silently: a pair whose control or treatment run failed/diverged (or has no finite
metric) is counted in ``n_failed`` and listed in ``failed_pairs``; a seed with only one arm present is counted in
``n_missing``. A treatment that diverged where its control did not is evidence of instability: it never enters
as a number, it is listed in ``diverged_treatment_seeds``, the message flags possible harm, and it blocks
``confirmed`` (downgraded to ``suggestive``), so an unstable change is never promoted.

Optional pooled sigma (``pool_aa`` / ``aa_sigma``): the variance of each intervention's d is pooled with A/A
differences, s^2 = ((n-1) s_i^2 + df_aa s_aa^2) / (n-1+df_aa) with df = n-1+df_aa (assumes equal Var(d)).
A/A pairs from the same screen share the control runs, so that t is approximate; prefer A/A groups from earlier
screens (``pooled_sigma_from_aa``). Bit-identical A/A runs (sigma = 0, the usual case with deterministic CPU
training) carry no noise information and are refused.

See also: power.py (exact noncentral-t power/MDE), sequential_design.py (group-sequential seed allocation),
confirmation.py (two-stage fresh-seed confirmation, platform transfer, Parameter-Golf claim line).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special, stats

from scripts.causal.core.cli import add_debug_flag, run_cli
from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import PooledSigma, read_json, write_json
from scripts.causal.stats.power import mde_one_sided, power_one_sided

__all__ = [
    "CORRECTIONS", "DECISIONS", "METRICS", "MIN_PAIRS", "adjust_pvalues", "analyze", "bh_adjust", "holm_adjust",
    "load_runs", "main", "paired_deltas", "pooled_sigma_from_aa", "pooled_sigma_from_screens",
]

DECISIONS = ("confirmed", "suggestive", "null", "harmful", "insufficient")
METRICS = ("val_bpb", "post_quant_val_bpb")
MIN_PAIRS = 3
CI_LEVEL = 0.95


# --- multiplicity -------------------------------------------------------------------------------


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


def adjust_pvalues(pvals: Sequence[float], *, method: str) -> np.ndarray:
    """Adjust p-values with a correction from ``CORRECTIONS`` (holm | bh | none)."""
    if method not in CORRECTIONS:
        raise ConfigError(f"unknown correction {method!r}; valid choices: {sorted(CORRECTIONS)}")
    p = np.asarray(pvals, dtype=float)
    if p.size and (np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ConfigError(f"all p-values must lie in [0, 1], got {p.tolist()}")
    return CORRECTIONS[method](p)


# --- input ---------------------------------------------------------------------------------------


def load_runs(path: str | Path) -> dict:
    """Read a runs.json payload (schema_version 1) and check it has a ``runs`` list."""
    data = read_json(path)
    if not isinstance(data.get("runs"), list):
        raise DataFormatError(f"{path}: field 'runs' must be a list of run rows (see runs.json schema)")
    return data


def _valid(row: Mapping | None, metric: str) -> bool:
    if row is None or row.get("status") != "ok":
        return False
    v = row.get(metric)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _index_rows(rows: Sequence[Mapping], backend: str | None) -> tuple[dict, dict]:
    controls: dict[int, Mapping] = {}
    treatments: dict[str, dict[int, Mapping]] = {}
    if backend is None:
        backends = {row.get("backend") for row in rows if isinstance(row, Mapping)}
        if len(backends) > 1:
            raise DataFormatError(
                f"runs mix backends {sorted(map(str, backends))}; analyze one backend at a time "
                "(pass backend=... / --backend) and compare them with confirmation.platform_transfer")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataFormatError(f"runs[{i}]: expected an object, got {type(row).__name__}")
        for field in ("intervention", "arm", "seed"):
            if field not in row:
                raise DataFormatError(f"runs[{i}]: missing field {field!r} (row: {dict(row)!r:.200})")
        if backend is not None and row.get("backend") != backend:
            continue
        arm, seed, name = row["arm"], int(row["seed"]), str(row["intervention"])
        if arm == "control":
            target = controls
        elif arm == "treatment":
            target = treatments.setdefault(name, {})
        else:
            raise DataFormatError(f"runs[{i}]: field 'arm' is {arm!r}; expected 'control' or 'treatment'")
        if seed in target:
            raise DataFormatError(
                f"runs[{i}]: duplicate {arm} row for intervention {name!r}, seed {seed}; "
                "each (intervention, seed) must appear once (rebuild runs.json from the ledger)")
        target[seed] = row
    return controls, treatments


def paired_deltas(runs: Sequence[Mapping] | Mapping, *, metric: str = "val_bpb",
                  backend: str | None = None) -> dict[str, dict]:
    """Pair each treatment with the control of the same seed.

    Returns ``{intervention: {"seeds", "control", "treatment", "delta", "failed_pairs", "missing_seeds",
    "diverged_treatment_seeds"}}`` with arrays over the valid pairs, in seed order.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid choices: {list(METRICS)}")
    rows = runs["runs"] if isinstance(runs, Mapping) else runs
    controls, treatments = _index_rows(rows, backend)
    out: dict[str, dict] = {}
    for name in sorted(treatments):
        trows = treatments[name]
        seeds, c_vals, t_vals, failed, missing, diverged = [], [], [], [], [], []
        for seed in sorted(set(trows) | set(controls)):
            c, t = controls.get(seed), trows.get(seed)
            if c is None or t is None:
                missing.append(seed)
                continue
            c_ok, t_ok = _valid(c, metric), _valid(t, metric)
            if c_ok and t_ok:
                seeds.append(seed)
                c_vals.append(float(c[metric]))
                t_vals.append(float(t[metric]))
                continue
            for arm, row, ok in (("control", c, c_ok), ("treatment", t, t_ok)):
                if not ok:
                    failed.append({"seed": seed, "arm": arm, "status": row.get("status"),
                                   "error": row.get("error") or (None if row.get("status") != "ok"
                                                                  else f"{metric} is not a finite number")})
            if c_ok and not t_ok and (t.get("status") == "diverged" or t.get("status") == "ok"):
                diverged.append(seed)
        c_arr, t_arr = np.asarray(c_vals, float), np.asarray(t_vals, float)
        out[name] = {"seeds": seeds, "control": c_arr, "treatment": t_arr, "delta": t_arr - c_arr,
                     "failed_pairs": failed, "n_failed": len({f["seed"] for f in failed}),
                     "missing_seeds": missing, "diverged_treatment_seeds": diverged}
    return out


# --- per-intervention statistics ---------------------------------------------------------------


def pooled_sigma_from_aa(groups: Sequence[Sequence[float]], *, source: str = "aa") -> PooledSigma:
    """Pool A/A paired differences over groups (screens): sigma^2 = sum_g SS_g / sum_g (n_g - 1)."""
    ss, df, n = 0.0, 0, 0
    for g in groups:
        x = np.asarray(g, dtype=float)
        x = x[np.isfinite(x)]
        if x.size >= 2:
            ss += float(np.sum((x - x.mean()) ** 2))
            df += x.size - 1
            n += x.size
    if df < 1:
        raise ConfigError("pooled A/A sigma needs at least one group with >= 2 finite A/A differences")
    sigma = math.sqrt(ss / df)
    if sigma == 0.0:
        raise ConfigError(
            "A/A differences are all identical (sigma = 0): the A/A runs are bit-identical to their controls, "
            "so they carry no noise information; analyze without pool_aa / aa_sigma")
    return PooledSigma(sigma=sigma, df=df, n_pairs=n, n_groups=len(groups), source=source)


def pooled_sigma_from_screens(screens: Sequence[Sequence[Mapping] | Mapping], *, aa_name: str = "aa",
                              metric: str = "val_bpb") -> PooledSigma:
    """Pooled A/A sigma from earlier screens' runs (one group per screen and backend, honest df)."""
    groups = []
    for runs in screens:
        rows = runs["runs"] if isinstance(runs, Mapping) else runs
        for be in sorted({str(r.get("backend")) for r in rows}):
            sub = [r for r in rows if str(r.get("backend")) == be]
            pairs = paired_deltas(sub, metric=metric)
            if aa_name in pairs:
                groups.append(pairs[aa_name]["delta"])
    return pooled_sigma_from_aa(groups, source=f"{aa_name}:{len(groups)} screen(s)")


def _t_pvalue(num: float, se: float, df: int, *, lower: bool) -> tuple[float, float]:
    """(t, one-sided p) for t = num / se; se == 0 gives t = +-inf (p 0/1) or, for num == 0, p = 1.

    ``scipy.special.stdtr`` is the Student-t CDF (the same as ``stats.t.cdf``, ~50x cheaper per call).
    """
    if se > 0:
        t = num / se
    elif num == 0:
        return float("nan"), 1.0
    else:
        t = math.copysign(math.inf, num)
    p = special.stdtr(df, t) if lower else special.stdtr(df, -t)
    return float(t), float(p)


@lru_cache(maxsize=128)
def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0..n(n+1)/2 under H0 (no ties): DP over ranks, each in W+ with prob 1/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts) / 2.0 ** n


def _wilcoxon_p(x: np.ndarray, alternative: str) -> float:
    """One-sided Wilcoxon signed-rank p (zeros dropped, as scipy's zero_method="wilcox").

    Without ties and n <= 50 this is the exact null distribution (equal to ``scipy.stats.wilcoxon(...,
    method="exact")``, checked in the tests); with ties it defers to scipy's ``method="auto"``.
    """
    nz = x[x != 0]
    if nz.size == 0:
        return 1.0
    a = np.abs(nz)
    if nz.size > 50 or np.unique(a).size < a.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.wilcoxon(nz, alternative=alternative, method="auto").pvalue)
    ranks = np.empty(a.size)
    ranks[np.argsort(a)] = np.arange(1, a.size + 1)
    w_plus = int(round(ranks[nz > 0].sum()))
    cdf = _signed_rank_null(int(nz.size))
    if alternative == "less":
        return float(cdf[w_plus])
    return float(1.0 - cdf[w_plus - 1]) if w_plus > 0 else 1.0


def _rho(c: np.ndarray, t: np.ndarray) -> float | None:
    if c.size < MIN_PAIRS or np.ptp(c) == 0 or np.ptp(t) == 0:
        return None
    r = float(np.corrcoef(c, t)[0, 1])
    return r if math.isfinite(r) else None


def _describe(pair: dict, *, alpha: float, margin: float, pooled: PooledSigma | None) -> dict:
    d, n = pair["delta"], int(pair["delta"].size)
    row: dict[str, Any] = {
        "n_pairs": n, "n_failed": pair["n_failed"], "n_missing": len(pair["missing_seeds"]),
        "seeds": list(pair["seeds"]), "failed_pairs": pair["failed_pairs"],
        "diverged_treatment_seeds": pair["diverged_treatment_seeds"], "missing_seeds": pair["missing_seeds"],
        "mean_delta_bpb": float(d.mean()) if n else None,
        "mean_control_bpb": float(pair["control"].mean()) if n else None,
        "mean_treatment_bpb": float(pair["treatment"].mean()) if n else None,
    }
    keys = ("sd_delta", "se_delta", "df", "t_improve", "t_harm", "p_improve", "p_harm", "ci_low", "ci_high",
            "ci_consistent_low", "ci_consistent_high", "wilcoxon_p_improve", "wilcoxon_p_harm", "sigma_used")
    row.update(dict.fromkeys(keys))
    row["sigma_source"] = "own"
    row["rho"] = _rho(pair["control"], pair["treatment"])
    nz = int(np.count_nonzero(d))
    row["wilcoxon_min_p"] = 2.0 ** -nz if nz else 1.0
    if n < 2:
        return row
    sd = float(d.std(ddof=1))
    var, df = sd * sd, n - 1
    if pooled is not None:
        var = ((n - 1) * var + pooled.df * pooled.sigma ** 2) / (n - 1 + pooled.df)
        df = n - 1 + pooled.df
        row["sigma_source"] = f"pooled_{pooled.source}"
    se = math.sqrt(var / n)
    mean = float(d.mean())
    row.update(sd_delta=sd, se_delta=se, df=df, sigma_used=math.sqrt(var))
    row["t_improve"], row["p_improve"] = _t_pvalue(mean + margin, se, df, lower=True)
    row["t_harm"], row["p_harm"] = _t_pvalue(mean, se, df, lower=False)
    for prefix, level in (("ci", CI_LEVEL), ("ci_consistent", 1.0 - 2.0 * alpha)):
        half = float(special.stdtrit(df, 0.5 + level / 2.0)) * se
        row[f"{prefix}_low"], row[f"{prefix}_high"] = mean - half, mean + half
    row["wilcoxon_p_improve"] = _wilcoxon_p(d + margin, "less")
    row["wilcoxon_p_harm"] = _wilcoxon_p(d, "greater")
    return row


def _message(row: dict, *, alpha: float, k: int, bar: float, metric: str) -> str:
    parts = []
    n = row["n_pairs"]
    if n < MIN_PAIRS:
        why = (f" (at n=2 the paired t has df=1: one-sided critical t = {stats.t.ppf(1 - alpha, 1):.1f} "
               f"at alpha={alpha}, a Cauchy-tailed test with almost no power)" if n == 2 else "")
        parts.append(f"only {n} valid pair(s), need >= {MIN_PAIRS}: no decision can reach alpha{why}; "
                     "run more seeds")
    if row["n_failed"]:
        desc = ", ".join(f"seed {f['seed']} {f['arm']} {f['status']}" for f in row["failed_pairs"])
        parts.append(f"{row['n_failed']} failed pair(s) counted, not used as numbers: {desc}")
    if row["diverged_treatment_seeds"]:
        parts.append(f"treatment has no finite {metric} on seeds {row['diverged_treatment_seeds']} where the "
                     "control trained fine: possible harm (instability); never confirmable")
    if row["n_missing"]:
        parts.append(f"{row['n_missing']} seed(s) with only one arm present: {row['missing_seeds']}")
    if n >= MIN_PAIRS and not row["wilcoxon_can_reach_alpha"]:
        need = math.floor(math.log2(1.0 / bar)) + 1
        nz = round(-math.log2(row["wilcoxon_min_p"]))
        parts.append(f"Wilcoxon floor 2^-{nz} = {row['wilcoxon_min_p']:.3g} cannot reach the per-test level {bar:.3g} "
                     f"(alpha={alpha}, K={k}); it is shown as a secondary view only (needs >= {need} non-zero pairs)")
    return "; ".join(parts)


# --- the screen ------------------------------------------------------------------------------


def analyze(runs: Sequence[Mapping] | Mapping, *, alpha: float = 0.01, margin_bpb: float = 0.0,
            correction: str = "holm", metric: str = "val_bpb", backend: str | None = None,
            power_effect_bpb: float = 0.005, suggestive_p: float = 0.1, pool_aa: bool = False,
            aa_sigma: PooledSigma | None = None, aa_name: str = "aa",
            interventions: Sequence[str] | None = None) -> dict:
    """Analyze a screen's runs (a runs.json payload or its ``runs`` list); return the ablation_results payload.

    See the module docstring for the tests, the multiplicity family and the decision gate.
    ``interventions`` restricts the analysis (and the family) to those names.
    """
    if correction not in CORRECTIONS:
        raise ConfigError(f"unknown correction {correction!r}; valid choices: {sorted(CORRECTIONS)}")
    if not (0.0 < alpha < 0.5):
        raise ConfigError(f"alpha={alpha!r} must lie in (0, 0.5)")
    if not (math.isfinite(margin_bpb) and margin_bpb >= 0):
        raise ConfigError(f"margin_bpb={margin_bpb!r} must be a finite number >= 0 (bpb of improvement required)")
    if power_effect_bpb <= 0:
        raise ConfigError(f"power_effect_bpb={power_effect_bpb!r} must be > 0")
    pairs = paired_deltas(runs, metric=metric, backend=backend)
    if interventions is not None:
        unknown = sorted(set(interventions) - set(pairs))
        if unknown:
            raise DataFormatError(f"interventions {unknown} have no treatment rows; present: {sorted(pairs)}")
        pairs = {k: pairs[k] for k in interventions}
    pooled = aa_sigma
    if pool_aa and pooled is None:
        if aa_name not in pairs:
            raise ConfigError(f"pool_aa=True but the screen has no {aa_name!r} intervention; pass aa_sigma=")
        pooled = pooled_sigma_from_aa([pairs[aa_name]["delta"]], source=aa_name)
    rows = {name: {"intervention": name, **_describe(p, alpha=alpha, margin=margin_bpb,
                                                       pooled=None if name == aa_name else pooled)}
            for name, p in pairs.items()}
    tested = [name for name, r in rows.items() if r["n_pairs"] >= MIN_PAIRS]
    k = 2 * len(tested)
    adj = adjust_pvalues([rows[nm][f] for nm in tested for f in ("p_improve", "p_harm")], method=correction)
    power_alpha = alpha if correction == "none" else alpha / max(k, 1)
    for row in rows.values():
        row["p_adjusted_improve"] = row["p_adjusted_harm"] = None
        row["p_adjusted"] = row["mde"] = row["power"] = None
    for i, name in enumerate(tested):
        row = rows[name]
        row["p_adjusted_improve"], row["p_adjusted_harm"] = float(adj[2 * i]), float(adj[2 * i + 1])
    for row in rows.values():
        n = row["n_pairs"]
        row["can_reach_alpha"] = n >= MIN_PAIRS
        row["wilcoxon_can_reach_alpha"] = bool(row["wilcoxon_min_p"] < power_alpha) if n else False
        if n >= 2 and row["sd_delta"] is not None:
            sigma, df = row["sigma_used"], row["df"]
            row["mde"] = mde_one_sided(sigma=sigma, n=n, df=df, alpha=power_alpha, margin=margin_bpb)
            row["power"] = power_one_sided(effect=margin_bpb + power_effect_bpb, sigma=sigma, n=n, df=df,
                                           alpha=power_alpha, margin=margin_bpb)
        row["decision"], row["direction"] = _decide(row, alpha=alpha, margin=margin_bpb, suggestive_p=suggestive_p)
        if row["decision"] in ("confirmed", "suggestive") and row["direction"] == "improve":
            row["p_adjusted"] = row["p_adjusted_improve"]
        elif row["direction"] == "harm":
            row["p_adjusted"] = row["p_adjusted_harm"]
        else:
            row["p_adjusted"] = row["p_adjusted_improve"]
        row["message"] = _message(row, alpha=alpha, k=k, bar=power_alpha, metric=metric)
    screen = runs.get("screen", {}) if isinstance(runs, Mapping) else {}
    return {
        "schema_version": 1, "alpha": alpha, "margin_bpb": margin_bpb, "correction": correction,
        "metric": metric, "backend": backend, "family_size": k, "power_alpha": power_alpha,
        "power_effect_bpb": power_effect_bpb, "ci_level": CI_LEVEL, "ci_consistent_level": 1.0 - 2.0 * alpha,
        "pooled_sigma": None if pooled is None else {"sigma": pooled.sigma, "df": pooled.df,
                                                     "n_pairs": pooled.n_pairs, "source": pooled.source},
        "screen": {"screen_id": screen.get("screen_id"), "seeds": screen.get("seeds")} if screen else {},
        "results": [rows[name] for name in pairs],
    }


def _decide(row: dict, *, alpha: float, margin: float, suggestive_p: float) -> tuple[str, str | None]:
    if row["n_pairs"] < MIN_PAIRS:
        return "insufficient", None
    pi, ph = row["p_adjusted_improve"], row["p_adjusted_harm"]
    if pi < alpha and -row["mean_delta_bpb"] >= margin:
        if not row["diverged_treatment_seeds"]:
            return "confirmed", "improve"
        return "suggestive", "improve"
    if ph < alpha:
        return "harmful", "harm"
    if min(row["p_improve"], row["p_harm"]) < suggestive_p:
        return "suggestive", "improve" if row["p_improve"] <= row["p_harm"] else "harm"
    return "null", None


# --- CLI --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="runs.json from experiment_runner, e.g. results/s1/runs.json")
    ap.add_argument("--output", required=True, help="where to write ablation_results.json")
    ap.add_argument("--alpha", type=float, default=0.01, help="family-wise alpha (default 0.01)")
    ap.add_argument("--margin-bpb", type=float, default=0.0, help="required improvement in bpb, e.g. 0.002")
    ap.add_argument("--correction", default="holm", help="holm (default) | bh | none")
    ap.add_argument("--metric", default="val_bpb", help="val_bpb (default) | post_quant_val_bpb")
    ap.add_argument("--backend", default=None, help="analyze only rows of this backend, e.g. torch")
    ap.add_argument("--pool-aa", action="store_true", help="pool the d variance with the screen's aa pairs")
    add_debug_flag(ap)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        payload = analyze(load_runs(args.input), alpha=args.alpha, margin_bpb=args.margin_bpb,
                          correction=args.correction, metric=args.metric, backend=args.backend,
                          pool_aa=args.pool_aa)
        write_json(args.output, payload)
        for r in payload["results"]:
            mean = "n/a" if r["mean_delta_bpb"] is None else f"{r['mean_delta_bpb']:+.5f}"
            padj = "n/a" if r["p_adjusted"] is None else f"{r['p_adjusted']:.3g}"
            print(f"{r['intervention']:<28} n={r['n_pairs']} failed={r['n_failed']} delta={mean} "
                  f"p_adj={padj} decision={r['decision']}")
        return 0

    return run_cli(body, debug=args.debug, prog="statistical_analysis.py")


if __name__ == "__main__":
    sys.exit(main())
