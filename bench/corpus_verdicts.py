"""Does the corpus change a calibration verdict? One screen's paired Δs on two corpora, scored against H100.

Reads two or more runs.json of the same preset (e.g. the committed Shakespeare `fast` calibration runs and the
same screen on the mail corpus) and keeps the given seeds and interventions in each. Each one goes through the
pipeline's paired analysis (``stats.analysis.analyze``, with the given interventions as the multiplicity family,
so the decisions are comparable). Each is then scored against the calibration set built from the verified
evidence table (``transfer.agreement.score``, as ``transfer_calibration.py`` does). Prints one markdown table
(mean Δ, 95% CI, decision, sign agreement per intervention and corpus) and writes everything as JSON.

    python bench/corpus_verdicts.py --runs shakespeare=results/transfer_calibration/fast/runs.json \\
        --runs mail=results/corpus_mail/runs.json+results/corpus_mail/runs_seeds45.json --seeds 1,2,3,4,5 \\
        --interventions act_leaky_relu2,matrix_lr_half,ema_09965,muoneq_r,ema_0997 --out results/corpus_mail/verdicts.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts.causal.core.cli import parse_seeds
from scripts.causal.core.paths import EVIDENCE_DIR
from scripts.causal.evidence.table import load_table
from scripts.causal.stats.analysis import analyze
from scripts.causal.transfer.agreement import score
from scripts.causal.transfer.calibration_set import build_calibration_set

SCHEMA_VERSION = 1


def load_runs(spec: str) -> dict:
    """One runs.json, or several joined with '+' (screens of one design on disjoint seeds): their runs pooled
    under the first one's header."""
    docs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in spec.split("+")]
    configs = {json.dumps(d["screen"]["base_config"], sort_keys=True) for d in docs}
    if len(configs) != 1:
        raise SystemExit(f"{spec}: the runs.json files have different base configs; they are not one screen")
    return {**docs[0], "runs": [r for d in docs for r in d["runs"]]}


def subset(runs: dict, *, seeds: list[int], names: list[str]) -> dict:
    """``runs`` with only the control and ``names`` on ``seeds`` (the header's seeds and family narrowed too)."""
    keep = [r for r in runs["runs"] if int(r["seed"]) in seeds and r["intervention"] in ("control", *names)]
    header = dict(runs["screen"], seeds=list(seeds), interventions=list(names))
    return {**runs, "screen": header, "runs": keep}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", action="append", required=True, metavar="LABEL=PATH",
                    help="a runs.json (or several joined by '+') and its label, repeatable, e.g. "
                         "mail=results/corpus_mail/runs.json+results/corpus_mail/runs_seeds45.json")
    ap.add_argument("--seeds", default="1,2,3", help="paired seeds kept in every runs.json, e.g. 1,2,3")
    ap.add_argument("--interventions", default="act_leaky_relu2,matrix_lr_half,ema_09965,muoneq_r,ema_0997",
                    help="the family compared, e.g. act_leaky_relu2,matrix_lr_half")
    ap.add_argument("--evidence", type=Path, default=EVIDENCE_DIR, help="verified evidence table, e.g. evidence/verified")
    ap.add_argument("--out", type=Path, required=True, help="JSON output, e.g. results/corpus_mail/verdicts.json")
    args = ap.parse_args(argv)
    seeds, names = list(parse_seeds(args.seeds)), [n.strip() for n in args.interventions.split(",") if n.strip()]
    items, _left_out = build_calibration_set(load_table(args.evidence))
    items = [it for it in items if it.intervention in names]
    per: dict[str, dict] = {}
    for spec in args.runs:
        label, _, path = spec.partition("=")
        runs = subset(load_runs(path), seeds=seeds, names=names)
        payload = analyze(runs, interventions=names, seeds=seeds, exploratory=True)
        rows = {r["intervention"]: r for r in payload["results"]}
        sc = score(items, rows)
        per[label] = {"runs": path, "data_path": runs["screen"]["base_config"].get("data_path"),
                      "results": {n: {k: rows[n].get(k) for k in ("mean_delta_bpb", "ci_low", "ci_high", "decision",
                                                                  "n_pairs", "sd_delta")} for n in names},
                      "agree": {n: [r["agree"] for r in sc["rows"] if r["intervention"] == n] for n in names},
                      "overall": sc["overall"], "classes": sc["classes"]}
    h100 = {n: [it.h100_delta for it in items if it.intervention == n] for n in names}
    print("| intervention | H100 rows (Δ) | " + " | ".join(f"{lab}: mean Δ [95% CI], decision, agree"
                                                       for lab in per) + " |")
    print("|---|---|" + "---|" * len(per))
    for n in names:
        cells = []
        for p in per.values():
            r, agree = p["results"][n], p["agree"][n]
            k = sum(1 for a in agree if a)
            m = sum(1 for a in agree if a is not None)
            cells.append(f"{r['mean_delta_bpb']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], {r['decision']}, "
                         f"{k}/{m}" if m else f"{r['mean_delta_bpb']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], "
                         f"{r['decision']}, no decisive row")
        print(f"| `{n}` | {', '.join(f'{d:+.4f}' for d in h100[n])} | " + " | ".join(cells) + " |")
    for lab, p in per.items():
        o = p["overall"]
        print(f"{lab}: overall sign agreement (8xH100 rows) {o['k_agree']}/{o['n_decisive']}, verdict {o['verdict']}; "
              + "; ".join(f"{c} {b['k_agree']}/{b['n_decisive']} {b['verdict']}" for c, b in p["classes"].items()
                          if b["n_decisive"]))
    doc = {"schema_version": SCHEMA_VERSION, "seeds": seeds, "interventions": names, "h100": h100, "corpora": per}
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
