"""Pipeline orchestration: the cycle loop, profiles and the stage adapters."""
