"""The ladder: successive halving over proxy rungs, the claim made only at the last rung on fresh seeds.

Each rung is a paired-seed screen of the candidates still standing, at a longer (costlier) proxy than the rung
before, on seeds no earlier rung used. After a filtering rung, a candidate moves up when its gate decision is
neither ``harmful`` nor ``null`` (it may still beat the effect of interest), and at most ceil(n / eta) move up
(the best mean Δ first: successive halving). The last rung applies the pre-registered gate (Holm over the
surviving family, both directions) and its decisions are the ladder's only claims; with branched cooldowns on the
last rung (``horizons``), a horizon-unstable change is reported as such and never promoted.

Error control: earlier rungs only choose what to test; they make no claim, so their multiplicity does not enter
the final family. The last rung's seeds are fresh, so its paired Δs are independent of the data that selected
the family, and Holm over that family controls the family-wise error rate at α, as a screen-then-confirm design
does. What the filter rungs can cost is power, never error: a real improvement dropped early (``null`` or
``harmful`` at a short rung, or cut by the halving cap) is a miss, which the ladder report lists per rung.

Ladders (``LADDERS``) name their rungs: ``tiny`` (tests and the committed example, seconds per run), ``cpu``
(fast, then the screen model with branched cooldowns, then a longer horizon on 5 fresh seeds), ``h100`` (the two
CPU rungs, then the baseline preset on 8xH100 through the torchrun executor).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.causal.core.errors import ConfigError
from scripts.causal.core.schema import PipelineOptions, Rung, write_json

__all__ = ["ETA", "LADDERS", "advance", "ladder_lines", "run_ladder"]

ETA = 2
_H = {"warmdown_frac": 0.5}
LADDERS: dict[str, tuple[Rung, ...]] = {
    "tiny": (Rung("tiny-12", "tiny", {}, (11, 12, 13)),
             Rung("tiny-36-horizons", "tiny", {"iterations": 36, "horizons": "12/24/36", **_H}, (21, 22, 23))),
    "cpu": (Rung("fast", "fast", {}, (11, 12, 13)),
            Rung("screen-horizons", "screen", {"horizons": "150/300/600", **_H}, (21, 22, 23)),
            Rung("screen-900-horizons", "screen", {"iterations": 900, "horizons": "225/450/900", **_H},
                 (31, 32, 33, 34, 35))),
    "h100": (Rung("fast", "fast", {}, (11, 12, 13)),
             Rung("screen-horizons", "screen", {"horizons": "150/300/600", **_H}, (21, 22, 23)),
             Rung("h100-baseline", "baseline", {}, (101, 102, 103), executor="torchrun")),
}


def advance(results: Sequence[Mapping[str, Any]], *, eta: int = ETA) -> tuple[list[str], dict[str, str]]:
    """(the candidates that move up, why each other one stops) from a filtering rung's gate rows."""
    alive = [r for r in results if r.get("decision") not in ("harmful", "null")]
    why = {r["intervention"]: f"{r['decision']} at this rung" for r in results if r not in alive}
    cap = max(1, math.ceil(len(results) / eta))
    alive.sort(key=lambda r: (r.get("mean_delta_bpb") is None, r.get("mean_delta_bpb") or 0.0))
    for r in alive[cap:]:
        why[r["intervention"]] = f"cut by the halving cap ({cap} of {len(results)} move up; mean Δ " \
                                 f"{r.get('mean_delta_bpb'):+.4f})"
    return [r["intervention"] for r in alive[:cap]], why


def run_ladder(opts: PipelineOptions, ladder: str, *, screen: Callable[..., tuple[Any, Mapping]],
               log: Callable[[str], None]) -> dict[str, Any]:
    """Climb ``ladder`` with ``opts.interventions``. ``screen(rung_opts, name, arms, seeds, overrides, out_dir)``
    runs one rung's screen and returns (ScreenResult, ablation payload) (cycle.run_screen_stage + analyze_stage).
    Writes ``ladder.json`` and ``ladder.md`` into opts.output_dir; returns the ladder payload."""
    if ladder not in LADDERS:
        raise ConfigError(f"--ladder {ladder!r} is not one of {sorted(LADDERS)}")
    if not opts.interventions:
        raise ConfigError("--ladder needs its candidates: pass --interventions a,b,c")
    rungs = LADDERS[ladder]
    used: set[int] = set()
    for rung in rungs:
        if used & set(rung.seeds):
            raise ConfigError(f"ladder {ladder}: rung {rung.name} reuses seeds {sorted(used & set(rung.seeds))}")
        used |= set(rung.seeds)
    out = Path(opts.output_dir)
    names, record = list(opts.interventions), []
    for i, rung in enumerate(rungs):
        last = i == len(rungs) - 1
        ropts = dataclasses.replace(opts, preset=rung.preset, seeds=rung.seeds, executor=rung.executor or opts.executor)
        log(f"rung {i + 1}/{len(rungs)} {rung.name}: {', '.join(names)} on seeds {list(rung.seeds)}")
        result, ablation = screen(ropts, f"rung{i + 1}-{rung.name}", names, rung.seeds, dict(rung.overrides),
                                  out / f"rung_{i + 1}")
        rows = [r for r in ablation["results"] if r["intervention"] in names]
        wall = sum(r.wall_s or 0.0 for r in result.runs)
        entry = {"rung": i + 1, "name": rung.name, "preset": rung.preset, "overrides": dict(rung.overrides),
                 "seeds": list(rung.seeds), "executor": ropts.executor, "candidates": list(names),
                 "final": last, "n_runs": len(result.runs), "run_s": wall,
                 "run_s_per_candidate": wall / max(len(names), 1), "results": rows}
        if not last:
            names, why = advance(rows)
            entry.update(advanced=list(names), stopped=why)
            log(f"rung {i + 1}: up: {', '.join(names) or 'none'}; stopped: "
                + (", ".join(f"{k} ({v})" for k, v in why.items()) or "none"))
        record.append(entry)
        if not names:
            break
    final = record[-1]
    claims = {r["intervention"]: {"decision": r["decision"], "mean_delta_bpb": r.get("mean_delta_bpb"),
                                  "horizon_unstable": r.get("horizon_unstable")}
              for r in final["results"]} if final["final"] else {}
    payload = {"ladder": ladder, "eta": ETA, "alpha": opts.alpha, "correction": opts.correction,
               "backend": opts.backend, "rungs": record, "claims": claims,
               "cost_s_per_candidate": sum(e["run_s"] for e in record) / max(len(opts.interventions), 1),
               "error_control": "claims only at the last rung, on seeds no earlier rung used; Holm over the last "
                                "rung's family at alpha; earlier rungs only filter"}
    write_json(out / "ladder.json", payload)
    (out / "ladder.md").write_text("\n".join(ladder_lines(payload)) + "\n", encoding="utf-8")
    return payload


def ladder_lines(payload: Mapping[str, Any]) -> list[str]:
    """ladder.md: each rung's candidates, decisions and what moved up; the claims of the last rung."""
    L = [f"# Ladder `{payload['ladder']}` ({payload['backend']})", "",
         f"Successive halving (eta = {payload['eta']}): a candidate moves up when it is neither harmful nor null, "
         f"at most ceil(n / eta) per rung. Error control: {payload['error_control']} "
         f"(α = {payload['alpha']}, {payload['correction']}).", ""]
    for e in payload["rungs"]:
        L += [f"## Rung {e['rung']}: {e['name']} ({'final gate' if e['final'] else 'filter'})", "",
              f"preset `{e['preset']}` {e['overrides'] or ''}, seeds {e['seeds']}, executor {e['executor']}: "
              f"{e['n_runs']} runs, {e['run_s']:.0f} s of runs ({e['run_s_per_candidate']:.0f} s per candidate)", "",
              "| candidate | n pairs | mean Δ bpb | 95% CI | decision | horizon |", "|---|---|---|---|---|---|"]
        for r in e["results"]:
            ci = (f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if r.get("ci_low") is not None else "n/a")
            hz = {True: "horizon-unstable", False: "stable", None: "—"}[r.get("horizon_unstable")]
            mean = r.get("mean_delta_bpb")
            L.append(f"| `{r['intervention']}` | {r['n_pairs']} | {'n/a' if mean is None else f'{mean:+.4f}'} | "
                     f"{ci} | **{r['decision']}** | {hz} |")
        if not e["final"]:
            L += ["", f"Moved up: {', '.join(e['advanced']) or 'none'}."]
            L += [f"- `{k}` stopped: {v}" for k, v in e["stopped"].items()]
        L.append("")
    L += ["## Claims (last rung only)", ""]
    if not payload["claims"]:
        L.append("No candidate reached the last rung: the ladder makes no claim.")
    for name, c in payload["claims"].items():
        note = " (horizon-unstable: not promotable on the proxy's word)" if c.get("horizon_unstable") else ""
        L.append(f"- `{name}`: **{c['decision']}**, mean Δ {c['mean_delta_bpb']:+.4f} bpb{note}")
    L += ["", f"Cost: {payload['cost_s_per_candidate']:.0f} s of runs per candidate entering the ladder."]
    return L
