"""The 16 MB artifact gate: does a change's artifact fit the challenge budget at the baseline preset?

A CPU screen trains small presets, whose artifacts say nothing about the 16,000,000-byte cap. This module
estimates the artifact of a config without training it: the model is built at the config's shape, every float
tensor is filled with seeded N(0, 1) values (trained matrices are close to Gaussian, and per-row quantization
makes the codes' entropy independent of the scale) and control tensors too (worst case: incompressible fp32), then
exported and compressed by the trainer's own export (`train_gpt.export_artifact`), plus the trainer's code bytes.

Calibration (measured on this machine, bench/RESULTS.md):
- baseline, upstream int8 + zlib: estimate 15,883,164 model bytes, trained upstream baseline 15,815,847 (+0.4 %);
- 11 layers, MLP x3, int6 + clip search: estimate 18,399,004 with lzma, the 2026-03-22 record (same shape plus
  small extras, GPTQ-lite int6 + zstd) 15,487,414 (+19 %): trained weights have heavier tails than a Gaussian, so
  their low-bit codes concentrate more. One point, so the margin below is a rough guide.
A change whose estimate is over the limit, but not after discounting the measured excess of its format, is
reported as "uncertain" rather than refused.

API: ``estimate_artifact(config, seed=0) -> BudgetCheck``, ``budget_gate(overrides, preset="baseline") -> BudgetVerdict``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

import train_gpt as tg
from scripts.causal.core.errors import ConfigError

#: The estimate's measured excess over a trained artifact, by the matrices' quant_bits (module docstring).
ESTIMATE_EXCESS = {8: 0.01, 6: 0.20, 5: 0.20, 4: 0.20}


@dataclasses.dataclass(frozen=True)
class BudgetVerdict:
    """The gate's answer for one change: ``status`` is "fits", "uncertain" (within the estimate's error of the
    limit) or "over" (over the limit even after discounting the estimate's measured excess)."""

    preset: str
    overrides: dict
    export_format: str
    estimate: tg.BudgetCheck
    status: str

    @property
    def refuse(self) -> bool:
        return self.status == "over"

    def message(self) -> str:
        return (f"{self.status}: at preset {self.preset!r} with {self.overrides or 'no overrides'} the estimated "
                f"{self.export_format} {self.estimate.message()}")


def estimate_artifact(config: tg.Hyperparameters, *, seed: int = 0) -> tg.BudgetCheck:
    """Compressed model bytes (synthetic Gaussian weights, the config's export) + the trainer's code bytes."""
    model = tg.GPT.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    state = tg.export_state_dict(model)
    synthetic = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in state.items()}
    blob, _ = tg.export_artifact(synthetic, tg.ExportSpec.from_config(config))
    return tg.BudgetCheck(len(blob), len(tg.Path(tg.__file__).read_bytes()))


def budget_gate(overrides: Mapping[str, Any] | None = None, *, preset: str = "baseline", seed: int = 0,
                margin: float | None = None, limit: int = tg.ARTIFACT_BUDGET_BYTES) -> BudgetVerdict:
    """Estimate the artifact of ``overrides`` applied at ``preset`` and classify it against ``limit``;
    ``margin`` (default: ESTIMATE_EXCESS of the config's quant_bits) is the discount before refusing."""
    overrides = dict(overrides or {})
    try:
        cfg = tg.preset_config(preset, **overrides)
    except ValueError as exc:
        raise ConfigError(f"budget gate: overrides {overrides} at preset {preset!r}: {exc}") from exc
    check = dataclasses.replace(estimate_artifact(cfg, seed=seed), limit=limit)
    margin = ESTIMATE_EXCESS[cfg.quant_bits] if margin is None else margin
    discounted = check.model_bytes * (1.0 - margin) + check.code_bytes
    status = "fits" if check.within_budget else ("over" if discounted > check.limit else "uncertain")
    spec = tg.ExportSpec.from_config(cfg)
    return BudgetVerdict(preset, overrides, "int8+zlib" if spec.is_upstream_int8 else spec.label(), check, status)
