"""The whole mining run (record folders -> intervention matrix payload) and its outputs (CSV, coverage).

``extract`` finds record folders (and their leaderboard rows), mines each (``record.extract_record``),
resolves inherited features through PR lineage, and returns the JSON payload. ``coverage`` counts where
every feature value came from and how the ablation rows were classified.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from scripts.causal.core.errors import ConfigError
from scripts.causal.core.schema import (
    ABLATION_KINDS,
    INTERVENTION_FEATURES,
    InterventionRecord,
)
from scripts.causal.extract import lineage as lin
from scripts.causal.extract import records as rp
from scripts.causal.extract.base_contrast import confirm_base_rows, stable_dump
from scripts.causal.extract.record import extract_record
from scripts.causal.extract.row_types import type_rows

SOURCE_KINDS = ("log", "code", "json", "readme", "inherited", "default")


def _match_row(folder: Path, jd_score: float | None, rows: list[rp.LeaderboardRow]) -> rp.LeaderboardRow | None:
    rel = f"{folder.parent.name}/{folder.name}"
    for r in rows:
        if r.record_path == rel:
            return r
    date = folder.name[:10]
    cands = [r for r in rows if r.record_path is None and r.score is not None and jd_score is not None
             and abs(r.score - jd_score) <= 6e-4]
    cands.sort(key=lambda r: (r.date != date, abs(r.score - jd_score)))
    return cands[0] if cands else None


def extract(inputs: list[Path]) -> dict:
    """Run the miner over input folders; returns the JSON payload (without schema_version)."""
    warnings: list[str] = []
    lb_rows: list[rp.LeaderboardRow] = []
    readmes_seen = set()
    folders: list[Path] = []
    context: list[Path] = []
    for d in inputs:
        d = Path(d)
        if not d.is_dir():
            raise ConfigError(f"--input {d}: not a folder; pass a records/ folder, a track folder or a record folder")
        ch = rp.find_challenge_readme(d)
        if ch and ch not in readmes_seen:
            readmes_seen.add(ch)
            text = rp.read_text_safe(ch, warnings) or ""
            lb_rows += rp.parse_leaderboard(text)
        found = rp.discover_records(d)
        for f in rp.empty_candidate_folders(d):
            warnings.append(f"{f}: not a record folder (needs README.md plus a submission JSON or a train log, or a train log with a final val_bpb line)")
        folders += [f for f in found if f not in folders]
        if ch is not None:  # sibling records under the challenge root are read for lineage only
            context += [f for f in rp.discover_records(ch.parent) if f not in context]
    wanted = {f.resolve() for f in folders}
    folders += [f for f in context if f.resolve() not in wanted and f not in folders]

    records: list[dict] = []
    owns: dict[str, dict] = {}
    absent: dict[str, dict] = {}
    texts: dict[str, tuple[str, dict]] = {}
    dumps: dict[str, dict[str, str] | None] = {}   # each record's logged hyperparameters (base_contrast)
    for folder in folders:
        w: list[str] = []
        loaded = rp.load_record(folder, w)
        src_json = rp.submission_json(loaded)[1]
        row = _match_row(folder, rp.json_headline(src_json)[0], lb_rows)
        rec, own = extract_record(folder, track=folder.parent.name, lb_row=row, warnings=warnings,
                                  record_absent=absent)
        records.append(rec)
        owns[rec["record_id"]] = own
        texts[rec["record_id"]] = (loaded.readme or "", src_json)
        dumps[rec["record_id"]] = stable_dump(loaded.logs)

    by_id = {r["record_id"]: r for r in records}
    pr_to_record = lin.build_pr_map(records, texts)
    resolved = lin.resolve_features(records, owns, absent, pr_to_record)

    for rec in records:
        rec["base_record_ids"] = lin.base_candidates(rec, pr_to_record, set(by_id))
        base = ", ".join(rec["base_record_ids"]) or ", ".join(f"PR #{n}" for n in rec["base_prs"]) or None
        readme = texts[rec["record_id"]][0]
        rec["ablations"] = type_rows(rec["ablations"], record_id=rec["record_id"], base=base,
                                     n_seeds=len(rec["seeds"]) or None, text=readme)
        if len(rec["base_record_ids"]) == 1:   # one base record: a this-vs-base row may be one change
            rec["ablations"] = confirm_base_rows(rec["ablations"], readme, dumps[rec["record_id"]],
                                                 dumps[rec["base_record_ids"][0]])
    out_records = []
    wanted_ids = {f.name for f in folders if f.resolve() in wanted}
    for rec in sorted(records, key=lambda r: (r["track"], r["date"] or "", r["record_id"])):
        if rec["record_id"] not in wanted_ids:
            continue
        feats = resolved[rec["record_id"]]
        rec["features"] = {f: feats[f][0] for f in INTERVENTION_FEATURES}
        rec["provenance"] = {**rec["provenance"], **{f"features.{f}": feats[f][1] for f in INTERVENTION_FEATURES}}
        rec.pop("_base_links")
        ir = InterventionRecord(**{k: v for k, v in rec.items() if k != "base_record_ids"})
        d = ir.to_dict()
        d["base_record_ids"] = rec["base_record_ids"]
        out_records.append(d)
    context_only = {f.name for f in folders if f.resolve() not in wanted}
    warnings = [w for w in warnings if not any(name in w for name in context_only)]
    return {"generated_from": [str(p) for p in inputs], "records": out_records, "warnings": warnings}


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def to_csv(payload: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["record_id", "track", "val_bpb", *INTERVENTION_FEATURES])
    for r in payload["records"]:
        w.writerow([r["record_id"], r["track"], _csv_value(r["val_bpb"]),
                    *[_csv_value(r["features"].get(f)) for f in INTERVENTION_FEATURES]])
    return buf.getvalue()


def source_kind(prov: str) -> str:
    p = prov.lower()
    if p.startswith("inherited"):
        return "inherited"
    if p.startswith("default"):
        return "default"
    if p.startswith("log"):
        return "log"
    if p.startswith("code"):
        return "code"
    if p.startswith("json") or p.startswith("submission"):
        return "json"
    return "readme"


def coverage(payload: dict) -> dict:
    rows = {}
    for f in INTERVENTION_FEATURES:
        counts = {k: 0 for k in SOURCE_KINDS}
        filled = 0
        for r in payload["records"]:
            if r["features"].get(f) is not None:
                filled += 1
            counts[source_kind(r["provenance"].get(f"features.{f}", "default"))] += 1
        rows[f] = {"filled": filled, "sources": counts}
    kinds = Counter(a.get("kind", "untyped") for r in payload["records"] for a in r.get("ablations", ()))
    metrics = Counter(a.get("metric", "unknown") for r in payload["records"] for a in r.get("ablations", ())
                      if a.get("kind") == "ablation")
    per_feature = Counter(a["features"][0] for r in payload["records"] for a in r.get("ablations", ())
                          if a.get("kind") == "ablation" and a.get("features"))
    return {"n_records": len(payload["records"]), "features": rows,
            "ablation_rows": {"n": sum(kinds.values()), "kinds": {k: kinds.get(k, 0) for k in ABLATION_KINDS},
                              "evidence_metrics": dict(sorted(metrics.items())),
                              "evidence_features": dict(sorted(per_feature.items()))}}


def coverage_markdown(cov: dict) -> str:
    lines = [f"# Intervention matrix coverage ({cov['n_records']} records)", "",
             "Filled = non-null value (`warmdown_iters` is null for fraction-based or cosine schedules). "
             "Sources = where each record's value came from: `log` (config dumps, key:value lines, env listings in "
             "logs), `code` (train_gpt.py defaults and structure, also source embedded in logs), `json` (submission "
             "JSON keys and prose), `readme` (README prose, tables and env listings; the leaderboard row), "
             "`inherited` (from the record of a base PR), `default` (naive-baseline fallback).", "",
             "| feature | filled | " + " | ".join(SOURCE_KINDS) + " |",
             "|---|---:|" + "---:|" * len(SOURCE_KINDS)]
    for f, row in cov["features"].items():
        lines.append(f"| {f} | {row['filled']} | " + " | ".join(str(row["sources"][k]) for k in SOURCE_KINDS) + " |")
    ab = cov.get("ablation_rows")
    if ab:
        lines += ["", f"## Ablation rows ({ab['n']})", "",
                  "Every mined row is typed or classified (`core.schema.ABLATION_KINDS`); only `ablation` rows "
                  "(one canonical feature, a bpb delta, a direction) are evidence for the ranking.", "",
                  "| class | rows |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in ab["kinds"].items()]
        lines += ["", "Evidence rows per metric: " + ", ".join(f"{k} {n}" for k, n in ab["evidence_metrics"].items()),
                  "", "Evidence rows per feature: " + ", ".join(f"{k} {n}" for k, n in ab["evidence_features"].items())]
    return "\n".join(lines) + "\n"
