"""What a screen can say about itself: its MDE at the effect of interest, and its classes' measured transfer.

A decision-gate report opens with this block. From the screen's own analysis rows: the smallest effect each arm
detects with power 0.8 (MDE), and its power at the effect of interest, in words ("a null here says nothing
about an effect of 0.003 bpb"). From the transfer calibration of the screen's preset (``transfer_<preset>.json``
by ``transfer_calibration.py``): per transfer class screened, how often the proxy's sign agreed with H100, and a
flag on every class whose agreement is not ``good``. A preset without a calibration is said to be unmeasured.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.schema import read_json
from scripts.causal.transfer.agreement import agreement_sentence

__all__ = ["load_transfer", "screen_sensitivity", "sensitivity_lines"]

CALIBRATION_ARMS = ("aa", "sanity_frozen_matrices")


def load_transfer(directory: str | Path | None, preset: str) -> dict[str, Any] | None:
    """``<directory>/transfer_<preset>.json`` as written by transfer_calibration.py, or None when absent."""
    if directory is None:
        return None
    path = Path(directory) / f"transfer_{preset}.json"
    if not path.is_file():
        return None
    data = read_json(path)
    return {**data, "source": str(path)}


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def screen_sensitivity(decisions: Sequence[Mapping], effect: Mapping | None, transfer: Mapping | None,
                       preset: str, classes: Mapping[str, str]) -> dict[str, Any]:
    """The header block's numbers: MDE and power over the real arms, and per class the transfer sentence."""
    arms = [r for r in decisions if r.get("intervention") not in CALIBRATION_ARMS]
    mdes = [m for m in (_num(r.get("mde")) for r in arms) if m is not None]
    powers = [p for p in (_num(r.get("power")) for r in arms) if p is not None]
    screened: dict[str, list[str]] = {}
    for r in arms:
        screened.setdefault(classes.get(r["intervention"], "unclassified"), []).append(r["intervention"])
    per_class = []
    table = (transfer or {}).get("classes") or {}
    for klass, names in sorted(screened.items()):
        block = table.get(klass)
        per_class.append({"class": klass, "interventions": names,
                          "verdict": (block or {}).get("verdict", "unmeasured"),
                          "sentence": agreement_sentence(klass, block, preset)})
    return {"preset": preset, "effect_bpb": _num((effect or {}).get("bpb")),
            "effect_name": (effect or {}).get("name"),
            "mde_min": min(mdes) if mdes else None, "mde_max": max(mdes) if mdes else None,
            "power_min": min(powers) if powers else None, "power_max": max(powers) if powers else None,
            "transfer_source": (transfer or {}).get("source"), "classes": per_class}


def sensitivity_lines(s: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines of the header block (empty when there is nothing to say)."""
    if not s:
        return []
    lines = ["## What this screen can and cannot say", ""]
    if s.get("mde_min") is not None:
        span = (f"{s['mde_min']:.4f}" if abs(s["mde_max"] - s["mde_min"]) < 5e-5
                else f"{s['mde_min']:.4f}-{s['mde_max']:.4f}")
        text = f"- **Sensitivity**: with these seeds, the smallest improvement this screen detects with power 0.8 " \
               f"(MDE) is {span} bpb."
        if s.get("effect_bpb") is not None and s.get("power_max") is not None:
            text += (f" Its power at the effect of interest ({s['effect_bpb']:.4f} bpb, {s.get('effect_name')}) is "
                     f"{s['power_min']:.0%}-{s['power_max']:.0%}.")
            if s["mde_min"] > s["effect_bpb"]:
                text += (f" An `inconclusive` here says nothing about an effect of {s['effect_bpb']:.4f} bpb (only "
                         "effects near the MDE or larger are detected); a `null` still rules that effect out, by "
                         "construction of its test.")
        lines.append(text)
    src = s.get("transfer_source")
    lines.append(f"- **Transfer to H100** (measured at `{s['preset']}`"
                 + (f", `{src}`):" if src else ": no calibration for this preset; run "
                    f"`python scripts/causal/transfer_calibration.py --presets {s['preset']}`):"))
    lines += [f"  - {c['sentence']} (screened: {', '.join(f'`{n}`' for n in c['interventions'])})"
              for c in s.get("classes", [])]
    return lines + [""]
