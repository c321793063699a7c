"""Each arm's artifact at the target scale: what the 16,000,000-byte cap says about a change before it is promoted.

A screen trains a small preset, whose artifacts say nothing about the cap. The target is the record's scale: the
``baseline`` preset, or the screen's leaderboard stack at that preset (``stacks.stack_config``). An arm's target
config is the target control with the arm's change applied exactly as promotion would write it
(``promote.rule_for``: a fixed value is set, a preset-relative one added or scaled, a layer index kept at its
fraction of the depth), and its artifact is estimated by ``budget.estimate_artifact`` (synthetic Gaussian weights
through the trainer's own export, plus the trainer's code bytes; the status classes of ``budget.budget_gate``:
fits / uncertain / over).

``arm_budgets(screen, runs, names)`` gives, per arm: the artifact its runs produced at the screen preset (mean of
the ok runs' ``artifact_bytes``, code included), the control's there, and the target estimates of the control and
the arm. Estimates are cached by config hash (about 2 s each on a CPU).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import train_gpt as tg
from scripts.causal.core.errors import ConfigError
from scripts.causal.screen.budget import ESTIMATE_EXCESS, estimate_artifact

__all__ = ["TARGET_PRESET", "arm_budgets", "base_overrides", "check_target_budget", "target_config", "target_estimate"]

TARGET_PRESET = "baseline"


def _target_control(screen: Mapping) -> tuple[tg.Hyperparameters, str]:
    stack = screen.get("stack")
    if stack:
        from scripts.causal.screen.stacks import stack_config

        return stack_config(str(stack), TARGET_PRESET), f"stack {stack} at preset {TARGET_PRESET}"
    return tg.preset_config(TARGET_PRESET), f"preset {TARGET_PRESET}"


def target_config(screen: Mapping, name: str | None) -> tuple[tg.Hyperparameters, str]:
    """(config, description) of arm ``name`` (None: the control) at the target scale."""
    from scripts.causal.promote import _apply, rule_for

    cfg, where = _target_control(screen)
    if name is None:
        return cfg, where
    tested = dict((screen.get("treatment_overrides") or {}).get(name) or {})
    base = screen.get("base_config") or {}
    values = cfg.to_dict()
    n_tested = int(tested.get("num_layers", base.get("num_layers") or 0)) or None
    rules = {k: rule_for(name, k, base.get(k), v, num_layers=n_tested) for k, v in tested.items()}
    for key, (op, by) in sorted(rules.items(), key=lambda kv: kv[1][0] in ("depth", "last")):
        n = int(values["num_layers"])
        values[key] = (min(n - 1, int(by * n + 0.5)) if op == "depth" else
                       ",".join(str(i) for i in range(max(0, n - int(by)), n)) if op == "last" else
                       _apply((op, by), values[key]))
    try:
        return cfg.with_overrides({k: values[k] for k in rules}), where
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"arm {name!r} at {where}: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _estimate(key: str, cfg: tg.Hyperparameters) -> tg.BudgetCheck:
    return estimate_artifact(cfg)


def target_estimate(cfg: tg.Hyperparameters, *, limit: int = tg.ARTIFACT_BUDGET_BYTES) -> dict[str, Any]:
    """{"bytes", "model_bytes", "code_bytes", "limit", "status"} of ``cfg``'s estimated artifact (budget.py)."""
    check = dataclasses.replace(_estimate(tg.config_hash(cfg), cfg), limit=limit)
    discounted = check.model_bytes * (1.0 - ESTIMATE_EXCESS[cfg.quant_bits]) + check.code_bytes
    status = "fits" if check.within_budget else ("over" if discounted > limit else "uncertain")
    return {"bytes": check.artifact_bytes, "model_bytes": check.model_bytes, "code_bytes": check.code_bytes,
            "limit": limit, "status": status}


def _mean_bytes(runs: Sequence[Mapping], arm: str) -> int | None:
    vals = [int(r["artifact_bytes"]) for r in runs if r.get("status") == "ok" and r.get("artifact_bytes")
            and (r.get("intervention") == arm or (arm == "control" and r.get("arm") == "control"))]
    return round(sum(vals) / len(vals)) if vals else None


def arm_budgets(screen: Mapping, runs: Sequence[Mapping], names: Sequence[str]) -> dict[str, Any]:
    """Artifact bytes of the control and each arm at the screen preset (measured) and at the target (estimated)."""
    control_cfg, where = target_config(screen, None)
    out: dict[str, Any] = {"target": where, "limit": tg.ARTIFACT_BUDGET_BYTES, "preset": screen.get("preset"),
                           "control": {"preset_bytes": _mean_bytes(runs, "control"),
                                       "target": target_estimate(control_cfg)}, "arms": {}}
    for name in names:
        try:
            est = target_estimate(target_config(screen, name)[0])
        except ConfigError as exc:
            est = {"bytes": None, "status": "not representable", "note": str(exc)}
        out["arms"][name] = {"preset_bytes": _mean_bytes(runs, name), "target": est}
    return out


def check_target_budget(payload: Mapping, name: str) -> dict:
    """The promoted arm's estimated artifact at the target scale (screen/target_budget.py); ConfigError when it is
    over the 16,000,000-byte cap (code included), naming the bytes."""
    cfg, where = target_config(payload.get("screen") or {}, name)
    est = target_estimate(cfg)
    if est["status"] == "over":
        raise ConfigError(f"refusing to promote {name!r}: at {where} its artifact is estimated at {est['bytes']:,} "
                          f"bytes (model {est['model_bytes']:,} + code {est['code_bytes']:,}), over the "
                          f"{est['limit']:,}-byte cap even after the estimate's measured excess")
    return est


def base_overrides(screen: Mapping) -> dict:
    """The control's differences from its preset (or stack at that preset): the screen's base overrides."""
    from scripts.causal.screen.plan import base_config

    base, preset = screen.get("base_config") or {}, screen.get("preset")
    try:
        ref = json.loads(json.dumps(base_config(str(preset), stack=screen.get("stack")).to_dict(), default=str))
    except ConfigError:
        return {"unknown": f"preset {preset!r} / stack {screen.get('stack')!r} cannot be rebuilt"}
    return {k: v for k, v in sorted(base.items()) if ref.get(k) != v and k not in ("seed", "run_id")
            and not k.endswith(("_path", "_dir"))}  # where the data lives is not part of the change's context
