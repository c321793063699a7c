"""Markdown of a transfer calibration: per proxy preset and class, how often the proxy's sign matched H100."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scripts.causal.transfer.agreement import MIN_ABS_H100, TARGET


def _f(x: Any, fmt: str = "+.4f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _cell(text: str, limit: int = 160) -> str:
    """A quote as one markdown table cell: pipes escaped, whitespace folded, long quotes cut."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ci(ci: Any, fmt: str = ".0%") -> str:
    return "" if not ci else f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def class_table(presets: Mapping[str, Mapping[str, Any]], part: str | None = None) -> list[str]:
    """One row per preset and class; ``part`` = "record_track" for the record-track rows alone."""
    lines = ["| preset | tokens/param | class | sign agreement (k/n) [95% CI] | ceiling | verdict | "
             "Spearman (interventions) | slope H100/proxy [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for preset, p in presets.items():
        sc = p["score"][part] if part else p["score"]
        for name, b in [("overall", sc["overall"]), *sorted(sc["classes"].items())]:
            agree = (f"{b['k_agree']}/{b['n_decisive']} = {b['agreement']:.0%}{_ci(b['agreement_ci'])}"
                     if b["n_decisive"] else "no rows")
            rho = f"{b['spearman']:+.2f} (n={b['n_interventions']}, p={b['spearman_p']:.2g})" \
                if b["spearman"] is not None else f"n/a (n={b['n_interventions']})"
            slope = f"{b['slope']:+.2f}{_ci(b['slope_ci'], '+.2f')}" if b["slope"] is not None else "n/a"
            ceiling = f"{b['ceiling_k']}/{b['n_decisive']}" if b.get("ceiling") is not None else "n/a"
            lines.append(f"| `{preset}` | {p['tokens_per_param']:.2f} | {name} | {agree} | {ceiling} | "
                         f"{b.get('verdict', '')} | {rho} | {slope} |")
    return lines


def render(payload: Mapping[str, Any]) -> str:
    presets = payload["presets"]
    out = ["# Proxy-to-H100 transfer calibration", "",
           f"Calibration set: {len(payload['calibration_set'])} verified single-change H100 rows that a registry "
           f"intervention makes exactly ({len({i['intervention'] for i in payload['calibration_set']})} "
           f"interventions), from the verified evidence table `{payload['evidence']}`, each printed below with the "
           f"quote it rests on; {len(payload['left_out'])} entries of the table are left out (listed at the end, "
           f"with the reason). Rows measured on other hardware than 8xH100 form their own class (`class [hardware]`). "
           f"Each proxy screens every intervention it can represent on paired seeds ({payload['seeds']} unless its "
           f"section says fewer; "
           f"backend {payload['backend']}). Sign agreement counts rows with |H100 delta| >= {MIN_ABS_H100} bpb; "
           f"the target is {TARGET:.0%}. The ceiling is the most rows any proxy could agree with: a proxy gives one "
           f"delta per intervention, and where one intervention's H100 rows disagree in sign only the larger side "
           f"can agree. Spearman and slope are over interventions (their H100 rows averaged).", "",
           *class_table(presets), "",
           "The same over the rows of the 10-minute record track alone (the non-record studies measure their "
           "changes on stacks far from the ones a competitor screens):", "",
           *class_table(presets, "record_track"), ""]
    if payload.get("chosen"):
        out += [f"Best-transferring proxy on the architecture class: `{payload['chosen']}` "
                f"({payload.get('chosen_reason', '')}).", ""]
    elif payload.get("chosen_reason"):
        out += [f"No best-transferring proxy: {payload['chosen_reason']}.", ""]
    for preset, p in presets.items():
        out += [f"## `{preset}`: rows (seeds {p.get('seeds', payload['seeds'])})", "",
                "| intervention | class | record | row (verified quote, file:line) | H100 delta | proxy delta [95% CI] | "
                "proxy decision | agree |",
                "|---|---|---|---|---|---|---|---|"]
        for r in sorted(p["score"]["rows"], key=lambda r: (r["transfer_class"], r["intervention"])):
            lo, hi = r["proxy_ci"]
            agree = {True: "yes", False: "**no**", None: "(|H100| < 0.002)"}[r["agree"]]
            quote = _cell(r.get("quote") or r["change"])
            flip = " (measured the other way round: sign-flipped)" if r.get("reversed") else ""
            out.append(f"| `{r['intervention']}` | {r['transfer_class']} | {r['record_id']} | {quote} "
                       f"(`{r.get('source', '')}`){flip} | "
                       f"{r['h100_delta']:+.4f} | {_f(r['proxy_delta'])} [{_f(lo)}, {_f(hi)}] | "
                       f"{r['proxy_decision']} | {agree} |")
        if p["refused"]:
            out += ["", "Refused at this preset:", ""] + [f"- `{n}`: {why}" for n, why in sorted(p["refused"].items())]
        out.append("")
    out += ["## Entries of the verified table left out", ""]
    out += [f"- `{u['entry']}` ({u['class']}): '{u['change']}' ({_f(u.get('delta_bpb'))}): {u['reason']}"
            for u in payload["left_out"]]
    return "\n".join(out) + "\n"
