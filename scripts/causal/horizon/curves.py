"""Paired Δ at every horizon of a branched-cooldown screen, and whether a change is stable along the horizon.

A branched run (train_gpt HORIZONS) stores, per horizon H, the scored fields of a run of H steps
(``horizon_metrics``). ``horizon_rows`` turns each run row into the row a separate H-step run would have
written, so the screen's own pairing and paired t machinery (``stats.pairing``, ``stats.paired_tests``) give each
horizon its Δ = treatment - control on the same seed, with its exact-t 95% CI.

A change is **horizon-unstable** (``stability``) when either
- **its sign flips**: at some horizon the 95% CI of Δ excludes zero on one side, and at a later horizon the mean
  Δ lies on the other side (an early confident call that longer training contradicts); or
- **it is still moving**: the per-seed change of Δ between the last two horizons, D_s = Δ_s(H_last) -
  Δ_s(H_prev), is paired within each seed (both come from the same run), and a two-sided paired t-test rejects
  mean(D) = 0 at ``MOVING_ALPHA`` (0.05), i.e. the last step of the curve is larger than its paired noise.
Both rules need ``MIN_PAIRS`` (3) pairs per horizon; with fewer the flag is ``None`` (unmeasured), never False.
With 3 seeds the moving test has 2 degrees of freedom and detects only drifts several times the paired SD:
"not flagged" means "no evidence of movement", and the report shows the drift and its CI beside the flag.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from scripts.causal.core.errors import DataFormatError
from scripts.causal.stats.paired_tests import describe_pairs, t_pvalue
from scripts.causal.stats.pairing import FINAL_METRIC, MIN_PAIRS, paired_deltas, run_rows

__all__ = ["MOVING_ALPHA", "delta_curves", "horizon_rows", "horizons_of", "merge_screens", "stability"]

MOVING_ALPHA = 0.05
SCORED = ("val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "sliding_val_bpb", "ttt_val_bpb",
          "artifact_bytes", "within_budget")


def horizons_of(runs: Sequence[Mapping] | Mapping) -> list[int]:
    """The horizons every run row carries (ascending). Raises naming the row when a row has none or differs."""
    rows = run_rows(runs)
    found: list[int] | None = None
    for row in rows:
        hm = row.get("horizon_metrics") or {}
        hs = sorted(int(h) for h in hm)
        if not hs:
            raise DataFormatError(f"run {row.get('intervention')}/seed {row.get('seed')} has no horizon_metrics: "
                                  "screen with --base-override horizons=H1/H2/... (branched cooldowns)")
        if found is not None and hs != found:
            raise DataFormatError(f"run {row.get('intervention')}/seed {row.get('seed')} has horizons {hs}, the "
                                  f"others {found}: one screen must branch every run at the same horizons")
        found = hs
    if found is None:
        raise DataFormatError("no runs: a horizon screen needs its runs.json rows")
    return found


def horizon_rows(runs: Sequence[Mapping] | Mapping, horizon: int) -> list[dict[str, Any]]:
    """Each run row as the row of a separate ``horizon``-step run: its scored fields replaced by that horizon's
    (a stage that was off stays None), ``steps`` = horizon, and the horizon's own status (a branch can diverge)."""
    out = []
    for row in run_rows(runs):
        entry = (row.get("horizon_metrics") or {}).get(str(horizon))
        if entry is None:
            raise DataFormatError(f"run {row.get('intervention')}/seed {row.get('seed')}: no horizon {horizon}")
        new = {k: v for k, v in row.items() if k not in ("horizon_metrics", "step_losses", "val_history")}
        new.update({k: entry.get(k) for k in SCORED}, steps=horizon,
                   status=entry.get("status", "ok") if row.get("status") == "ok" else row.get("status"))
        out.append(new)
    return out


def delta_curves(runs: Sequence[Mapping] | Mapping, *, metric: str = FINAL_METRIC, alpha: float = 0.01
                 ) -> dict[str, list[dict[str, Any]]]:
    """{intervention: [one point per horizon]}: horizon, n_pairs, mean Δ, 95% CI, per-seed Δs (seed order)."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for h in horizons_of(runs):
        for name, pair in paired_deltas(horizon_rows(runs, h), metric=metric).items():
            row = describe_pairs(pair, alpha=alpha, margin=0.0, effect=0.0, pooled=None)
            curves.setdefault(name, []).append({
                "horizon": h, "n_pairs": row["n_pairs"], "mean_delta_bpb": row["mean_delta_bpb"],
                "ci_low": row.get("ci_low"), "ci_high": row.get("ci_high"), "seeds": list(pair["seeds"]),
                "deltas": [float(d) for d in pair["delta"]], "n_failed": row["n_failed"]})
    return curves


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def stability(curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The horizon-unstable flag of one curve (see the module docstring) with its evidence."""
    points = [p for p in curve if p["n_pairs"] >= MIN_PAIRS and p["ci_low"] is not None]
    out: dict[str, Any] = {"unstable": None, "sign_flip": None, "moving": None, "drift": None, "drift_ci": None,
                           "drift_p": None, "reason": f"fewer than {MIN_PAIRS} pairs at two horizons"}
    if len(points) < 2 or len(points) < len(curve):
        return out
    flip = None
    for i, early in enumerate(points):
        side = 1 if early["ci_low"] > 0 else -1 if early["ci_high"] < 0 else 0
        later = next((p for p in points[i + 1:] if side and _sign(p["mean_delta_bpb"]) == -side), None)
        if later is not None:
            flip = (early["horizon"], later["horizon"])
            break
    prev, last = points[-2], points[-1]
    common = sorted(set(prev["seeds"]) & set(last["seeds"]))
    d = np.array([last["deltas"][last["seeds"].index(s)] - prev["deltas"][prev["seeds"].index(s)] for s in common])
    moving = None
    if d.size >= MIN_PAIRS:
        se = float(d.std(ddof=1)) / math.sqrt(d.size)
        df = d.size - 1
        _, p_lo = t_pvalue(float(d.mean()), se, df, lower=True)
        p = min(1.0, 2.0 * min(p_lo, 1.0 - p_lo)) if se > 0 else (0.0 if d.mean() != 0 else 1.0)
        half = float(special.stdtrit(df, 0.975)) * se
        out.update(drift=float(d.mean()), drift_ci=[float(d.mean() - half), float(d.mean() + half)], drift_p=p)
        moving = p < MOVING_ALPHA
    out.update(sign_flip=flip is not None, moving=moving, unstable=(flip is not None) or bool(moving))
    reasons = []
    if flip is not None:
        reasons.append(f"sign flips: the CI at {flip[0]} steps excludes 0, the mean at {flip[1]} has the other sign")
    if moving:
        reasons.append(f"still moving: Δ changed by {out['drift']:+.4f} bpb from {prev['horizon']} to "
                       f"{last['horizon']} steps (paired p = {out['drift_p']:.3g} < {MOVING_ALPHA})")
    out["reason"] = "; ".join(reasons) or (f"stable: no confident sign flip, and the last step of the curve "
                                           f"({out['drift']:+.4f} bpb, p = {out['drift_p']:.3g}) is within its noise"
                                           if out["drift"] is not None else "stable")
    return out


def merge_screens(payloads: Sequence[tuple[str, Mapping]]) -> dict[str, Any]:
    """One horizon screen from several ``(path, runs.json payload)`` that share their control: the same base
    config and horizons, and per seed a control run with the same config hash and the same losses and bpb at
    every horizon (not the artifact bytes, which count the trainer's code) (CPU runs are bit-identical, so a control trained twice must agree exactly). Treatments may not
    repeat across screens. Raises naming the two files and what differs; the merged header lists its sources."""
    if not payloads:
        raise DataFormatError("no runs.json given")
    first_path, first = payloads[0]
    base = (first.get("screen") or {}).get("base_config")
    header = dict(first.get("screen") or {})
    header.update(interventions=list(header.get("interventions") or ()),
                  treatment_overrides=dict(header.get("treatment_overrides") or {}),
                  seeds=sorted(set(header.get("seeds") or ())), merged_from=[p for p, _ in payloads])
    controls: dict[int, tuple[str, Mapping]] = {}
    treated: dict[tuple[str, int], str] = {}
    rows: list[Mapping] = []
    for path, payload in payloads:
        screen = payload.get("screen") or {}
        other = screen.get("base_config")
        if other != base:
            keys = sorted(k for k in set(base or {}) | set(other or {}) if (base or {}).get(k) != (other or {}).get(k))
            raise DataFormatError(f"{path}: its base config differs from {first_path}'s in {keys}: not one screen")
        if path != first_path:
            header["interventions"] += [n for n in screen.get("interventions") or () if n not in header["interventions"]]
            header["treatment_overrides"].update(screen.get("treatment_overrides") or {})
            header["seeds"] = sorted(set(header["seeds"]) | set(screen.get("seeds") or ()))
        for row in run_rows(payload):
            seed = int(row["seed"])
            if row.get("arm") == "control":
                if seed in controls:
                    _same_control(controls[seed], (path, row))
                    continue
                controls[seed] = (path, row)
            else:
                key = (str(row.get("intervention")), seed)
                if key in treated:
                    raise DataFormatError(f"{path}: {key[0]} seed {seed} is also in {treated[key]}")
                treated[key] = path
            rows.append(row)
    out = {k: v for k, v in first.items() if k not in ("screen", "runs")}
    return {**out, "screen": header, "runs": rows}


def _same_control(a: tuple[str, Mapping], b: tuple[str, Mapping]) -> None:
    (pa, ra), (pb, rb) = a, b
    seed = ra.get("seed")
    if ra.get("config_hash") != rb.get("config_hash"):
        raise DataFormatError(f"{pb}: the control of seed {seed} has config hash {rb.get('config_hash')}, "
                              f"{pa}'s {ra.get('config_hash')}: the screens do not share their control")
    ha, hb = ra.get("horizon_metrics") or {}, rb.get("horizon_metrics") or {}
    for h in sorted(set(ha) | set(hb), key=int):
        for k in SCORED[:6]:  # the scores; artifact bytes include the trainer's code, which may have changed since
            va, vb = (ha.get(h) or {}).get(k), (hb.get(h) or {}).get(k)
            if va != vb:
                raise DataFormatError(f"{pb}: the control of seed {seed} scores {k} = {vb!r} at {h} steps, {pa}'s "
                                      f"{va!r}: the same config trained twice must agree exactly on CPU")
