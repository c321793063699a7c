"""Sequential seeds for the runner: which arms stop (efficacy, harm, futility) and which get more seeds.

The design is pre-registered: an ordered seed list (its length is n_max), the first look after ``n0`` seeds and
one look every ``step`` seeds after that, alpha, margin, metric and the family. ``sequential_plan(runs, ...)`` is
stateless: it re-derives every arm's looks from the runs so far, so the runner can call it after each round.

Looks actually taken. An arm's k-th round ends after seed number ``n0 + (k-1) step`` of the list; its look at that
round uses its valid pairs among those seeds. A failed seed adds no pair, so two rounds with the same count are
one look, and a count below ``MIN_PAIRS`` is no look. The boundaries are computed for the sequence of looks the
arm actually had (``sequential.design_at_looks``, Lan-DeMets O'Brien-Fleming spending at n_k / n_max): the
boundary of a look depends only on the looks before it, so a decision once taken never changes, and the
type-I error of each one-sided test stays <= its level at any sequence of looks.

Family. Each of the 2m one-sided tests (improvement against the margin, harm against 0) of the m family arms gets
alpha / (2m) (Bonferroni across arms: Holm's step-down has no simple group-sequential form), so the FWER is
<= alpha. Calibration arms are not allocated sequentially (they are checked once, see calibration.py).

Futility (optional, non-binding): with ``futility_effect_sd`` (the planned effect in sigma_d units; e.g. the effect
of interest over an earlier screen's pooled sigma) an arm whose |t| in both directions is below f_k stops. The
efficacy bounds ignore it, so stopping or not never raises the type-I error.

Statuses: ``confirmed`` / ``harmful`` (crossed), ``futile``, ``continue`` (the runner adds ``next[arm]``), and
``undecided`` (reached n_max). A treatment that failed where its control trained blocks ``confirmed`` (status
``blocked``). ``sequential_payload`` turns a finished plan and the usual analysis into an ablation_results payload
with correction ``group_sequential_bonferroni`` (promotable) and gate decisions (futile / undecided / blocked ->
inconclusive).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.stats.pairing import DEFAULT_METRIC, MIN_PAIRS, paired_deltas, run_rows
from scripts.causal.stats.sequential import design_at_looks

__all__ = ["SEQUENTIAL_CORRECTION", "round_ends", "sequential_payload", "sequential_plan"]

SEQUENTIAL_CORRECTION = "group_sequential_bonferroni"


def round_ends(n_max: int, n0: int, step: int) -> list[int]:
    """Number of seeds run at the end of each round: n0, n0 + step, ..., n_max."""
    if n0 < MIN_PAIRS or step < 1 or n_max < n0:
        raise ConfigError(f"need n0 >= {MIN_PAIRS}, step >= 1 and n_max >= n0; got n0={n0}, step={step}, n_max={n_max}")
    ends = list(range(n0, n_max + 1, step))
    return ends if ends[-1] == n_max else ends + [n_max]


def _t(d: np.ndarray, shift: float) -> float:
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    num = float(d.mean()) + shift
    return num / se if se > 0 else (0.0 if num == 0 else math.copysign(math.inf, num))


def _arm(name: str, pair: Mapping | None, ran: list[int], seeds: list[int], ends: list[int], *, alpha_test: float,
         margin: float, n_sim: int, sim_seed: int, futility_effect_sd: float | None, beta_futility: float) -> dict:
    n_max = len(seeds)
    by_seed = dict(zip(pair["seeds"], pair["delta"], strict=True)) if pair else {}
    failed_t = list(pair["failed_treatment_seeds"]) if pair else []
    looks: list[int] = []
    out = {"status": "continue", "looks": looks, "look": None, "n_run": len(ran), "t_improve": None, "t_harm": None,
           "bound": None, "futility_bound": None, "failed_treatment_seeds": failed_t}
    for end in (e for e in ends if e <= len(ran)):
        d = np.asarray([by_seed[s] for s in seeds[:end] if s in by_seed], float)
        if d.size < MIN_PAIRS or (looks and d.size == looks[-1]):
            continue
        looks.append(int(d.size))
        design = design_at_looks(tuple(looks), n_max=n_max, alpha=alpha_test, n_sim=n_sim, seed=sim_seed,
                                 futility_effect_sd=futility_effect_sd, beta_futility=beta_futility)
        c, f = design.t_bounds[-1], (design.f_bounds[-1] if design.f_bounds else 0.0)
        t_imp, t_harm = _t(d, margin), _t(d, 0.0)
        out.update(look=int(d.size), t_improve=t_imp, t_harm=t_harm, bound=c, futility_bound=f)
        if t_imp <= -c:
            out["status"] = "blocked" if failed_t else "confirmed"
        elif t_harm >= c:
            out["status"] = "harmful"
        elif f > 0 and abs(t_imp) <= f and abs(t_harm) <= f:
            out["status"] = "futile"
        if out["status"] != "continue":
            return out
    if len(ran) >= n_max:
        out["status"] = "undecided"
    return out


def sequential_plan(runs: Sequence[Mapping] | Mapping, *, seeds: Sequence[int], family: Sequence[str], alpha: float,
                    n0: int = 3, step: int = 1, margin_bpb: float = 0.0, metric: str = DEFAULT_METRIC,
                    backend: str | None = None, futility_effect_sd: float | None = None, beta_futility: float = 0.05,
                    n_sim: int = 100_000, sim_seed: int = 0, stages: Mapping[str, str] | None = None) -> dict:
    """Every family arm's state under the group-sequential design, and the seeds to run next.

    Returns ``{"design", "results": {arm: {"status", "looks", "look", "n_run", "t_improve", "t_harm", "bound",
    "futility_bound", "failed_treatment_seeds"}}, "next": {arm: [seeds]}, "next_control_seeds": [...], "done"}``.
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds} must be distinct (the pre-registered order of seeds)")
    if not family:
        raise ConfigError("family is empty: nothing to allocate")
    ends = round_ends(len(seeds), n0, step)
    alpha_test = alpha / (2 * len(family))
    rows = run_rows(runs)
    pairs = paired_deltas(runs, metric=metric, backend=backend, stages=stages)
    ran_by: dict[str, set[int]] = {}
    for r in rows:
        if r.get("arm") == "treatment" and (backend is None or r.get("backend") == backend):
            ran_by.setdefault(str(r["intervention"]), set()).add(int(r["seed"]))
    control_ran = {int(r["seed"]) for r in rows if r.get("arm") == "control"
                   and (backend is None or r.get("backend") == backend)}
    results, nxt = {}, {}
    for name in family:
        ran_set = ran_by.get(name, set())
        j = len(ran_set)
        if ran_set - set(seeds) or ran_set != set(seeds[:j]):
            raise DataFormatError(f"arm {name!r} ran seeds {sorted(ran_set)}; a sequential arm must run a prefix of "
                                  f"the registered seed order {seeds}")
        res = _arm(name, pairs.get(name), seeds[:j], seeds, ends, alpha_test=alpha_test, margin=margin_bpb,
                   n_sim=n_sim, sim_seed=sim_seed, futility_effect_sd=futility_effect_sd,
                   beta_futility=beta_futility)
        results[name] = res
        if res["status"] == "continue":
            nxt[name] = seeds[j:next(e for e in ends if e > j)]  # up to the end of the next round
    control = sorted({s for v in nxt.values() for s in v} - control_ran, key=seeds.index)
    return {"design": {"seeds": seeds, "n0": n0, "step": step, "n_max": len(seeds), "alpha": alpha,
                       "alpha_per_test": alpha_test, "family": list(family), "spending": "lan-demets-obf",
                       "futility_effect_sd": futility_effect_sd, "beta_futility": beta_futility if
                       futility_effect_sd else 0.0, "n_sim": n_sim, "sim_seed": sim_seed, "metric": metric,
                       "margin_bpb": margin_bpb},
            "results": results, "next": nxt, "next_control_seeds": control, "done": not nxt}


_GATE = {"confirmed": ("confirmed", "improve"), "harmful": ("harmful", "harm"), "futile": ("inconclusive", None),
         "undecided": ("inconclusive", None), "blocked": ("inconclusive", "improve")}


def sequential_payload(analysis: Mapping, plan: Mapping) -> dict:
    """The ablation_results payload of a finished sequential screen: ``analysis`` (analyze() on the same runs,
    for the descriptive statistics) with the family's decisions replaced by the sequential ones."""
    if not plan["done"]:
        raise ConfigError(f"the sequential screen is not finished: arms {sorted(plan['next'])} still need seeds")
    if abs(float(analysis["alpha"]) - float(plan["design"]["alpha"])) > 0 or \
            list(analysis["family"]) != list(plan["design"]["family"]):
        raise ConfigError("the analysis and the sequential design disagree on alpha or family; analyse the same "
                          "pre-registration")
    out = {**analysis, "correction": SEQUENTIAL_CORRECTION, "sequential_design": plan["design"],
           "note": "group-sequential design: decisions come from the O'Brien-Fleming boundaries on the paired t at "
                   "each look, Bonferroni alpha/(2m) per one-sided test; the p-values and CIs shown are the fixed-n "
                   "ones at the final look (descriptive only, not the decision rule)"}
    rows = []
    for r in analysis["results"]:
        seq = plan["results"].get(r["intervention"])
        if seq is None:
            rows.append(r)
            continue
        decision, direction = _GATE[seq["status"]]
        reason = {"confirmed": f"crossed the improvement bound {seq['bound']:.3g} at look n={seq['look']}",
                  "harmful": f"crossed the harm bound {seq['bound']:.3g} at look n={seq['look']}",
                  "futile": f"stopped for futility at look n={seq['look']} (|t| <= {seq['futility_bound']:.3g})",
                  "undecided": f"no bound crossed by n_max={plan['design']['n_max']}",
                  "blocked": f"crossed the improvement bound, but the treatment failed on seeds "
                             f"{seq['failed_treatment_seeds']} where the control trained fine"}[seq["status"]]
        rows.append({**r, "decision": decision, "direction": direction, "reason": reason, "message": reason,
                     "sequential": seq})
    out["results"] = rows
    return out
