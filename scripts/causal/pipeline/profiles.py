"""Pipeline profiles: named sets of option defaults, layered defaults -> profile -> explicit flags.

A profile says how much pipeline to run (interventions per cycle, cycles, time budget, bootstrap size,
calibration arms); the trainer *preset* it names says how big each training run is. ``--fast`` is the
``fast`` profile, which uses the ``fast`` trainer preset; ``--preset`` alone changes only the run size.

    resolve_options("fast", {"top_k": 3})  # fast's values, with top_k overridden by an explicit flag
"""
from __future__ import annotations

from typing import Any, Mapping

from scripts.causal.core.errors import ConfigError
from scripts.causal.screen.registry import CALIBRATION

DEFAULTS: dict[str, Any] = {
    "preset": "fast",  # train_gpt.py preset of every run
    "seeds": (11, 12, 13, 14, 15),  # screen seeds (one shared control per seed)
    "confirm_seeds": (1011, 1012, 1013, 1014, 1015),  # fresh seeds for confirming winners
    "calibration": ("aa",),  # calibration arms added to every screen
    "top_k": 3,  # interventions per cycle from the ranking
    "cycles": 3,  # maximum screen cycles
    "max_null_cycles": 2,  # stop after this many cycles without a confirmed effect
    "budget_minutes": None,  # no wall-time budget
    "bootstrap": 100,  # FCI bootstrap resamples
}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # ~10 min on a 2-core CPU: top-2 of the ranking + both calibration arms, 5 seeds, one cycle
    "fast": {"preset": "fast", "calibration": CALIBRATION, "top_k": 2, "cycles": 1, "budget_minutes": 10.0,
             "bootstrap": 30},
}


def resolve_options(profile: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULTS, then the profile's values, then every explicit (not None) flag value."""
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r} is not one of {sorted(PROFILES)}")
    unknown = sorted(set(explicit) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown pipeline option(s) {unknown}; profile options are {sorted(DEFAULTS)}")
    return {**DEFAULTS, **PROFILES[profile], **{k: v for k, v in explicit.items() if v is not None}}
