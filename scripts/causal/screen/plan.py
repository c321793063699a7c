"""Screen planning (pure): the control config, each arm's config resolved once, seeds and the run grid.

``build_plan(...) -> ScreenPlan`` fixes a screen's design before its first run (its pre-registration);
``plan_grid(plan)`` is the interleaved run order (control then treatments, per seed); ``plan_from_ledger``
rebuilds a stored plan for ``--resume``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

import train_gpt as tg
from scripts.causal.core.cli import parse_seeds
from scripts.causal.core.errors import ConfigError
from scripts.causal.core.schema import ScreenPlan
from scripts.causal.screen import registry as reg
from scripts.causal.screen.ledger import Ledger

CONTROL = "control"
CORRECTIONS = ("holm", "bh")
BACKENDS = ("torch", "mlx")


@dataclasses.dataclass(frozen=True)
class GridCell:
    """One run of the grid: which arm, which seed, which overrides on top of the control config."""

    index: int
    intervention: str
    arm: str
    seed: int
    overrides: dict


def base_config(preset: str, base_overrides: dict | None = None, *, stack: str | None = None) -> tg.Hyperparameters:
    """The control config: a train_gpt preset (or a leaderboard ``stack`` scaled to it) plus optional overrides
    (e.g. data paths)."""
    if preset not in tg.PRESETS:
        raise ConfigError(f"--preset {preset!r} is not one of {sorted(tg.PRESETS)}")
    if stack is not None:
        from scripts.causal.screen.stacks import stack_config

        return stack_config(stack, preset, **dict(base_overrides or {}))
    try:
        return tg.preset_config(preset, **dict(base_overrides or {}))
    except ValueError as exc:
        raise ConfigError(f"preset {preset!r} with {base_overrides or {}} is invalid: {exc}") from exc


def bit_reproducible(backend: str) -> bool:
    """Whether same-seed runs are bit-identical here: CPU torch and MLX are; CUDA kernels are not."""
    return backend == "mlx" or (backend == "torch" and not tg.torch.cuda.is_available())


def build_plan(*, interventions: Sequence[str], seeds: Sequence[int] | str, preset: str, backend: str = "torch",
               overrides: Sequence[str] = (), base_overrides: dict | None = None, alpha: float = 0.01,
               margin_bpb: float = 0.0, correction: str = "holm", screen_id: str | None = None,
               metric: str = "post_quant_val_bpb", effect_bpb: float | None = None, aa_mode: str = "auto",
               sequential: dict | None = None, stack: str | None = None, pool_aa: bool = False) -> ScreenPlan:
    """Resolve a screen's design: control config, treatments (registry names and ad-hoc overrides), seeds.

    Every treatment must change the control's config (``aa`` excepted: it is the exact copy).
    The default screen id is derived from the design, so re-running the same command resumes it.
    ``aa_mode`` "auto": "repeat" where same-seed runs are bit-identical (one repeat run of the first seed),
    else "arm". ``sequential``: {"n0", "step", "futility_effect_sd"} for a group-sequential screen over ``seeds``.
    ``stack``: the control is that leaderboard stack at ``preset`` (screen.stacks); an intervention the stack
    already contains, or one that cannot be expressed on it, is refused with the reason.
    """
    if aa_mode not in ("auto", "repeat", "arm"):
        raise ConfigError(f"aa_mode {aa_mode!r} is not one of ['auto', 'repeat', 'arm']")
    if aa_mode == "auto":
        aa_mode = "repeat" if bit_reproducible(backend) else "arm"
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not one of {list(BACKENDS)}")
    if correction not in CORRECTIONS:
        raise ConfigError(f"--correction {correction!r} is not one of {list(CORRECTIONS)}")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"--alpha {alpha} must be in (0, 1)")
    seeds_t = parse_seeds(seeds)
    base = base_config(preset, base_overrides, stack=stack)
    if stack is not None:
        from scripts.causal.screen.stacks import stack_conflict

        for name in interventions:
            reason = None if name in reg.CALIBRATION else stack_conflict(stack, name, preset)
            if reason is not None:
                raise ConfigError(f"--stack {stack}: {reason}")
    base_hash = tg.config_hash(base)
    treatments: list[tuple[str, dict]] = []
    for name in interventions:
        treatments.append((name, reg.resolve_overrides(name, base)))
    for spec in overrides:
        treatments.append(reg.adhoc_treatment(spec, base))
    if not treatments:
        raise ConfigError("no treatments: pass --interventions a,b,c and/or --override KEY=VALUE")
    names = [n for n, _ in treatments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or CONTROL in names:
        raise ConfigError(f"treatment names must be unique and not {CONTROL!r}; repeated: {dupes or [CONTROL]}")
    configs = _arm_configs(base, treatments)
    from scripts.causal.stats.metric_fit import check_metric_fits

    check_metric_fits(dict(treatments), base.to_dict(), metric, source=f"screen on preset {preset!r}")
    for name, ov in treatments:
        if name != "aa" and tg.config_hash(configs[name]) == base_hash:
            raise ConfigError(f"treatment {name!r} ({ov}) leaves the config of preset {preset!r} unchanged; "
                              "drop it or use 'aa' for an A/A control")
    if sequential is not None:
        n0 = int(sequential.get("n0", 3))
        if not 3 <= n0 < len(seeds_t):
            raise ConfigError(f"sequential n0={n0} must be >= 3 and below the number of seeds ({len(seeds_t)}); "
                              "pass more seeds (--max-seeds)")
        sequential = {"n0": n0, "step": int(sequential.get("step", 1)),
                      "futility_effect_sd": sequential.get("futility_effect_sd")}
    plan = ScreenPlan(screen_id="", preset=preset, backend=backend, seeds=seeds_t, treatments=tuple(treatments),
                      base_config=_jsonable_config(base), alpha=float(alpha), margin_bpb=float(margin_bpb),
                      correction=correction, metric=metric, effect_bpb=effect_bpb, aa_mode=aa_mode,
                      sequential=sequential, stack=stack, pool_aa=bool(pool_aa), configs=configs)
    if not screen_id:
        digest = hashlib.sha256(json.dumps(plan.preregistration(), sort_keys=True, default=str).encode()).hexdigest()
        screen_id = f"{preset}-{backend}-{digest[:10]}"
    return dataclasses.replace(plan, screen_id=screen_id)


def extend_seeds(seeds: Sequence[int], n: int) -> tuple[int, ...]:
    """``seeds`` followed by the next unused integers after their maximum, up to ``n`` seeds in all."""
    out = list(seeds)
    nxt = max(out) + 1 if out else 0
    while len(out) < n:
        out.append(nxt)
        nxt += 1
    return tuple(out[:max(n, 0)])


def sequential_design(seeds: Sequence[int], *, max_seeds: int | None = None,
                      futility_sd: float | None = None) -> tuple[tuple[int, ...], dict]:
    """(registered seed order, design) of a group-sequential screen: ``seeds`` extended to ``max_seeds``
    (default: at least 10), first look after 3 seeds, optional futility at ``futility_sd`` (effect / sigma_d)."""
    seeds = extend_seeds(seeds, max_seeds or max(len(seeds), 10))
    return seeds, {"n0": min(3, len(seeds) - 1), "futility_effect_sd": futility_sd}


def _jsonable_config(cfg: tg.Hyperparameters) -> dict:
    return json.loads(json.dumps(cfg.to_dict(), default=str))


def _arm_configs(base: tg.Hyperparameters, treatments: Sequence[tuple[str, dict]]) -> dict[str, tg.Hyperparameters]:
    """Every arm's Hyperparameters: the control and each treatment's overrides on it (resolved here, once)."""
    return {CONTROL: base, **{name: base.with_overrides(ov) if ov else base for name, ov in treatments}}


def build_script_plan(*, train_script: str, interventions: Sequence[str], seeds: Sequence[int] | str,
                      overrides: Sequence[str] = (), base_env: dict | None = None, alpha: float = 0.01,
                      margin_bpb: float = 0.0, correction: str = "holm", screen_id: str | None = None,
                      metric: str = "final_val_bpb", effect_bpb: float | None = None) -> ScreenPlan:
    """A screen on an upstream-style script (``--train-script``): control = the script as it is (+ ``base_env``),
    each treatment = the env settings of a registry entry (``Intervention.env``) or an ``--override``; refused
    with the missing knob where the script cannot express one (``screen.script_target``). Seeds pair via SEED;
    every arm runs on every seed (``aa`` too: GPU runs are not bit-reproducible)."""
    from scripts.causal.screen.script_target import arm_config, script_arms

    if correction not in CORRECTIONS:
        raise ConfigError(f"--correction {correction!r} is not one of {list(CORRECTIONS)}")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"--alpha {alpha} must be in (0, 1)")
    control, treatments = script_arms(train_script, interventions=interventions, overrides=overrides,
                                      base_env=base_env)
    if not treatments:
        raise ConfigError("no treatments: pass --interventions a,b (with env forms) and/or --override KNOB=VALUE")
    names = [n for n, _ in treatments]
    if len(set(names)) != len(names) or CONTROL in names:
        raise ConfigError(f"treatment names must be unique and not {CONTROL!r}: {names}")
    configs = {CONTROL: control, **{n: arm_config(control, env) for n, env in treatments}}
    plan = ScreenPlan(screen_id="", preset="script", backend="torch", seeds=parse_seeds(seeds),
                      treatments=tuple(treatments), base_config=control.to_dict(), alpha=float(alpha),
                      margin_bpb=float(margin_bpb), correction=correction, metric=metric, effect_bpb=effect_bpb,
                      aa_mode="arm", configs=configs)
    if not screen_id:
        digest = hashlib.sha256(json.dumps(plan.preregistration(), sort_keys=True, default=str).encode()).hexdigest()
        screen_id = f"script-{control.script_sha256[:8]}-{digest[:10]}"
    return dataclasses.replace(plan, screen_id=screen_id)


def arm_hash(cfg) -> str:
    """The ledger key of an arm's config: a ScriptConfig's own hash, else train_gpt's ``config_hash``."""
    return cfg.config_hash() if hasattr(cfg, "script_sha256") else tg.config_hash(cfg)


def plan_from_ledger(ledger: Ledger, screen_id: str) -> ScreenPlan:
    """Rebuild a screen's plan from its stored pre-registration (for ``--resume``)."""
    screen = ledger.get_screen(screen_id)
    if screen is None:
        raise ConfigError(f"{ledger.path}: no screen {screen_id!r} to resume (known: {ledger.list_screens()}); "
                          "start it without --resume")
    p = screen["preregistration"]
    treatments = tuple((t["name"], dict(t["overrides"])) for t in p["interventions"])
    if "train_script" in p["base_config"]:  # a --train-script screen: arms are ScriptConfigs
        from scripts.causal.screen.script_target import ScriptConfig, arm_config

        b = p["base_config"]
        control = ScriptConfig(b["train_script"], b["script_sha256"], tuple(sorted(b["env"].items())))
        return ScreenPlan(screen_id=screen_id, preset=p["preset"], backend=p["backend"], seeds=tuple(p["seeds"]),
                          treatments=treatments, base_config=dict(b), alpha=p["alpha"], margin_bpb=p["margin_bpb"],
                          correction=p["correction"], metric=p["metric"], effect_bpb=p.get("effect_bpb"),
                          aa_mode="arm", configs={CONTROL: control,
                                                  **{n: arm_config(control, env) for n, env in treatments}})
    base = tg.Hyperparameters().with_overrides(p["base_config"])
    return ScreenPlan(screen_id=screen_id, preset=p["preset"], backend=p["backend"], seeds=tuple(p["seeds"]),
                      treatments=treatments, base_config=dict(p["base_config"]), alpha=p["alpha"],
                      margin_bpb=p["margin_bpb"], correction=p["correction"],
                      metric=p.get("metric", "post_quant_val_bpb"), effect_bpb=p.get("effect_bpb"),
                      aa_mode=p.get("aa_mode", "arm"), sequential=p.get("sequential"), stack=p.get("stack"),
                      pool_aa=bool(p.get("pool_aa", False)), configs=_arm_configs(base, treatments))


def plan_grid(plan: ScreenPlan) -> list[GridCell]:
    """The run order: for each seed, the control then every treatment (interleaved).

    With ``aa_mode`` "repeat", ``aa`` runs on the first seed only (a bit-identity check, not a statistical arm).
    """
    runs_on = {name: set(arm_seeds(name, plan.seeds, plan.aa_mode)) for name, _ in plan.treatments}
    cells: list[GridCell] = []
    for seed in plan.seeds:
        cells.append(GridCell(len(cells), CONTROL, "control", seed, {}))
        for name, ov in plan.treatments:
            if seed in runs_on[name]:
                cells.append(GridCell(len(cells), name, "treatment", seed, dict(ov)))
    return cells


def arm_seeds(name: str, seeds: Sequence[int], aa_mode: str) -> tuple[int, ...]:
    """The seeds treatment ``name`` runs on: all of them, except ``aa`` in "repeat" mode (the first seed only)."""
    return tuple(seeds[:1]) if name == "aa" and aa_mode == "repeat" else tuple(seeds)
