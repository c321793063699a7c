"""Whether a registry intervention makes exactly the change of a verified entry: same knob, direction, size.

The intervention is applied, as the registry resolves it, to the baseline config with the entry's knob set to the
entry's ``from`` value; it expresses the entry when that yields the entry's ``to`` value **and** the change has the
size the intervention makes on the baseline (the same difference or the same ratio): ``num_layers_plus2`` is 9 -> 11
or 11 -> 13, never 11 -> 14 nor 9 -> 10; ``mlp_mult_3`` is 2 -> 3, not 3 -> 4; a categorical or on/off entry needs
the intervention's two levels. An entry measured the other way round (``to`` -> ``from``: "no EMA", 11L -> 9L)
compares the same two configurations: it is expressed with ``reversed`` set, and its delta is sign-flipped by the
caller. Pure apart from building configs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from scripts.causal.core.schema import EvidenceEntry

__all__ = ["Expression", "expresses", "entry_expressed"]


@dataclasses.dataclass(frozen=True)
class Expression:
    ok: bool
    reversed: bool = False
    reason: str = ""


def _field_of(knob: str) -> str | None:
    """The trainer field that sets a canonical feature (or the knob itself when it is a field)."""
    import train_gpt as tg
    from scripts.causal.screen import registry as reg

    fields = {f.name for f in dataclasses.fields(tg.Hyperparameters)}
    if knob in fields:
        return knob
    by_feature = {feat: field for field, feat in reg.FIELD_FEATURE.items()}
    return by_feature.get(knob)


def _value(knob: str, cfg: Any) -> Any:
    from scripts.causal.screen import registry as reg

    if knob in reg._FEATURE_VALUE:
        return reg.feature_value(knob, cfg)
    return getattr(cfg, knob)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a).lower() == str(b).lower()


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_way(name: str, knob: str, frm: Any, to: Any, v0: Any, v1: Any) -> bool:
    """The intervention applied at ``frm`` gives ``to``, by the size it moves the baseline (numeric knobs)."""
    if not (_numeric(frm) and _numeric(to) and _numeric(v0) and _numeric(v1)):
        return _same(frm, v0) and _same(to, v1)
    import train_gpt as tg
    from scripts.causal.screen import registry as reg

    field = _field_of(knob)
    if field is None:
        return False
    try:
        base = tg.Hyperparameters().with_overrides({field: type(getattr(tg.Hyperparameters(), field))(frm)})
        got = _value(knob, reg.apply(name, base))
    except Exception:  # noqa: BLE001 - a from value the trainer cannot take cannot be the intervention's
        return False
    same_diff = _same(float(to) - float(frm), float(v1) - float(v0))
    same_ratio = float(frm) != 0 and float(v0) != 0 and _same(float(to) / float(frm), float(v1) / float(v0))
    return _same(got, to) and (same_diff or same_ratio)


def expresses(name: str, knob: str | None, frm: Any, to: Any) -> Expression:
    """Whether registry intervention ``name`` makes the change ``knob: frm -> to`` (see the module docstring)."""
    import train_gpt as tg
    from scripts.causal.screen import registry as reg

    iv = reg.get_intervention(name)
    if knob is None:
        return Expression(False, reason="the entry names no knob")
    if frm is None or to is None:
        return Expression(False, reason=f"{knob}: from/to not stated ({frm!r} -> {to!r})")
    base = tg.Hyperparameters()
    try:
        v0, v1 = _value(knob, base), _value(knob, reg.apply(name, base))
    except Exception as exc:  # noqa: BLE001 - a knob this intervention's configs do not carry
        return Expression(False, reason=f"{name} does not set {knob} ({exc})")
    if _same(v0, v1):
        return Expression(False, reason=f"{name} leaves {knob} at {v0!r} (it moves {iv.feature or 'other knobs'})")
    if _one_way(name, knob, frm, to, v0, v1):
        return Expression(True)
    if _one_way(name, knob, to, frm, v0, v1):
        return Expression(True, reversed=True, reason=f"measured {frm!r} -> {to!r}: the same two configurations "
                                                      "the other way round (delta sign-flipped)")
    return Expression(False, reason=f"{name} moves {knob} {v0!r} -> {v1!r}; the entry moves it {frm!r} -> {to!r} "
                                    "(another size, stretch or level)")


def entry_expressed(entry: EvidenceEntry) -> Expression:
    """``expresses`` for a single-change entry that names its intervention; not ok otherwise."""
    if not entry.is_single_change:
        return Expression(False, reason=f"a {entry.klass} entry says nothing about one change")
    if entry.intervention is None:
        return Expression(False, reason="no registry intervention makes this change (the table says so)")
    return expresses(entry.intervention, entry.knob, entry.from_value, entry.to_value)
