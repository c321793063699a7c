"""Follow-ups to a screen: two-stage confirmation on fresh seeds, and platform transfer.

Two-stage design. Stage one screens many interventions on cheap runs with BH (``analyze(..., correction="bh")``,
FDR control: a screen is for finding candidates). Stage two re-tests only the winners (the screen's
``confirmed`` rows outside the calibration arms) on FRESH seeds with Holm (FWER): ``plan_confirmation`` picks the
winners and the seeds and refuses any seed used before, and ``analyze_confirmation`` re-checks that the confirm
runs use exactly the planned fresh seeds, then analyses them under the plan as the pre-registration (alpha,
margin, metric, effect of interest, Holm, family = the winners, seeds = the fresh seeds). Because stage two uses
new data, its error rate does not depend on how the winners were selected; its result carries
``stage="confirmation"`` and ``screen_correction``, which promote.py accepts as "BH-screened, Holm-confirmed".

Platform transfer. For one intervention measured on a proxy (e.g. the MLX backend or the ``fast`` preset) and a
target, we report sign agreement and the ratio R = target / proxy with a Fieller interval: the set of R with
|a - R b| / sqrt(se_a^2 + R^2 se_b^2) <= q, q = t_{(1+level)/2, min(df_a, df_b)}, where a, b are the target and
proxy mean deltas (independent runs). It is a bounded interval only when the proxy effect is itself significant
at that level (b^2 > q^2 se_b^2); otherwise it is reported as unbounded (``ratio_ci_kind``).

The Parameter Golf claim lines for a confirmed change are in claims.py (the analysis attaches them).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import ConfirmPlan, Preregistration, TransferResult
from scripts.causal.stats.analysis import analyze
from scripts.causal.stats.calibration import CALIBRATION_EXPECTED

__all__ = ["plan_confirmation", "analyze_confirmation", "confirmation_prereg", "platform_transfer", "fieller_ratio"]


def _used_seeds(screen: Mapping) -> set[int]:
    used = set(map(int, (screen.get("screen") or {}).get("seeds") or []))
    for r in screen.get("results", []):
        used |= set(map(int, r.get("seeds") or []))
        used |= {int(f["seed"]) for f in r.get("failed_pairs") or []}
        used |= set(map(int, r.get("missing_seeds") or []))
    return used


def plan_confirmation(screen: Mapping, *, screen_seeds: Sequence[int] = (), confirm_seeds: Sequence[int] | None = None,
                      n_confirm: int = 5, alpha: float | None = None) -> ConfirmPlan:
    """Winners of a screen (its ``confirmed`` rows, calibration arms excluded) and fresh seeds for them.

    Every seed in ``screen_seeds`` or recorded in the screen payload is excluded. ``confirm_seeds`` that overlap
    them are refused; without them, the ``n_confirm`` integers after the largest used seed are taken.
    """
    winners = tuple(r["intervention"] for r in screen.get("results", [])
                    if r.get("decision") == "confirmed" and r["intervention"] not in CALIBRATION_EXPECTED)
    used = _used_seeds(screen) | set(map(int, screen_seeds))
    if confirm_seeds is not None:
        overlap = sorted(used & set(map(int, confirm_seeds)))
        if overlap:
            raise ConfigError(f"confirmation seeds {overlap} were already used by the screen; confirmation must run "
                              f"on fresh seeds (e.g. {max(used) + 1}..{max(used) + len(confirm_seeds)})")
        if len(set(confirm_seeds)) < 3:
            raise ConfigError(f"confirm_seeds={list(confirm_seeds)}: need >= 3 distinct seeds for a decision")
        seeds = tuple(int(s) for s in confirm_seeds)
    else:
        if n_confirm < 3:
            raise ConfigError(f"n_confirm={n_confirm} must be >= 3 (the gate's minimum number of pairs)")
        start = max(used) + 1 if used else 0
        seeds = tuple(range(start, start + n_confirm))
    prereg = screen.get("preregistration") or {}
    return ConfirmPlan(interventions=winners, seeds=seeds, excluded_seeds=tuple(sorted(used)),
                       alpha=float(screen.get("alpha", 0.01) if alpha is None else alpha),
                       margin_bpb=float(screen.get("margin_bpb", 0.0)), correction="holm",
                       screen_correction=str(screen.get("correction", "bh")),
                       metric=str(screen.get("metric", "post_quant_val_bpb")),
                       effect_bpb=prereg.get("effect_bpb"), effect_nats=float(prereg.get("effect_nats") or 0.005))


def confirmation_prereg(plan: ConfirmPlan) -> Preregistration:
    """The plan as the confirmation's pre-registration (Holm over the winners on the fresh seeds)."""
    return Preregistration(alpha=plan.alpha, margin_bpb=plan.margin_bpb, effect_bpb=plan.effect_bpb,
                           effect_nats=plan.effect_nats, correction="holm", metric=plan.metric,
                           family=tuple(plan.interventions), seeds=tuple(plan.seeds))


def analyze_confirmation(runs: Sequence[Mapping] | Mapping, plan: ConfirmPlan, **kwargs) -> dict:
    """Analyze confirm runs with Holm over the planned winners, after checking the seeds are the planned fresh ones."""
    rows = runs["runs"] if isinstance(runs, Mapping) else runs
    seeds = {int(r["seed"]) for r in rows}
    reused = sorted(seeds & set(plan.excluded_seeds))
    if reused:
        raise ConfigError(f"confirm runs use screening seeds {reused}; never reuse screening seeds for confirmation")
    extra = sorted(seeds - set(plan.seeds))
    if extra:
        raise DataFormatError(f"confirm runs use seeds {extra} that are not in the plan {list(plan.seeds)}")
    if not plan.interventions:
        raise ConfigError("the confirmation plan has no winners to confirm")
    out = analyze(runs, prereg=confirmation_prereg(plan), prereg_source="confirmation plan", **kwargs)
    out["stage"] = "confirmation"
    out["screen_correction"] = plan.screen_correction
    out["confirm_seeds"] = list(plan.seeds)
    return out


def fieller_ratio(a: float, se_a: float, b: float, se_b: float, *, q: float) -> tuple[float | None, float | None, str]:
    """Fieller interval for a / b with independent estimates; returns (low, high, kind)."""
    qa, qb = q * q * se_a * se_a, q * q * se_b * se_b
    A, B, C = b * b - qb, -2.0 * a * b, a * a - qa
    disc = B * B - 4.0 * A * C
    if A > 0 and disc >= 0:
        r = math.sqrt(disc)
        return (-B - r) / (2 * A), (-B + r) / (2 * A), "bounded"
    if A < 0 and disc >= 0:
        return None, None, "exclusive"  # the complement of a finite interval
    return None, None, "unbounded"


def platform_transfer(proxy: Mapping, target: Mapping, *, level: float = 0.95) -> list[TransferResult]:
    """Per intervention present in both ablation_results payloads: sign agreement and target/proxy ratio."""
    p_rows = {r["intervention"]: r for r in proxy.get("results", [])}
    out = []
    for t in target.get("results", []):
        name = t["intervention"]
        p = p_rows.get(name)
        if p is None or p.get("se_delta") is None or t.get("se_delta") is None:
            continue
        a, b = float(t["mean_delta_bpb"]), float(p["mean_delta_bpb"])
        q = float(stats.t.ppf(0.5 + level / 2.0, min(int(t["df"]), int(p["df"]))))
        lo, hi, kind = fieller_ratio(a, float(t["se_delta"]), b, float(p["se_delta"]), q=q)
        out.append(TransferResult(intervention=name, proxy_mean=b, target_mean=a,
                                  sign_agree=bool(np.sign(a) == np.sign(b) and a != 0),
                                  ratio=a / b if b != 0 else None, ratio_ci_low=lo, ratio_ci_high=hi,
                                  ratio_ci_kind=kind, level=level))
    return out
