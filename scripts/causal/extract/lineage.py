"""Record lineage: which PR a record builds on, which record introduced that PR, and feature inheritance.

"A feature inherited from the base stack counts as true": a record's features that its own sources leave
unknown are taken from its base record (provenance "inherited from <record_id>"), then from the naive
baseline ("default: naive baseline"). PR -> record links come from general rules only: the leaderboard row
of a record, "<folder> (PR #N)" mentions, "PR #N by @handle" (the only record by that handle), and
"PR #N (..., 1.1318)" (the only record with that score).
"""
from __future__ import annotations

import re

from scripts.causal.core.schema import BASELINE_FEATURES, INTERVENTION_FEATURES
from scripts.causal.extract import features as fr

_PR = r"(?:PR\s*#|pull/|#)(\d{2,5})"
_BASE_KEYWORDS = [re.compile(r"(?:built|builds|building|based|stacked|layered|rebased|build)\s+(?:directly\s+|mainly\s+)?"
                             r"(?:on|upon|from|atop)|on top of|atop|fork(?:ed)? (?:of|from)|extends|derived from|"
                             r"starts? from|started from", re.I)]
_BASE_WORDING = [
    re.compile(r"(?:(?:built|builds|building|based|stacked|layered|rebased|build)\s+(?:directly\s+|mainly\s+)?"
               r"(?:on|upon|from|atop)|on top of|atop|fork(?:ed)? (?:of|from)|extends|extending|derived from|"
               r"starts? from|started (?:this submission )?from|base(?:line)?\s*(?:model|stack|submission|pr|record)?"
               r"\s*(?:is\s*)?[:=(]|parent(?:\s*pr)?\s*[:=]|(?:changes?|improvement|delta) (?:from|over|vs\.?|relative to)|"
               r"support(?:s|ing)? (?:for )?|reproduc\w* (?:of )?)[^.\n]{0,40}?" + _PR, re.I),
    re.compile(_PR + r"\]?(?:\([^)]*\))?[^.\n(]{0,25}?\(?[^.\n]{0,20}?\b(?:stack|base|direct baseline)\b", re.I),
]
_RECORD_LINK = re.compile(r"records/[^/\s)\]]+/([0-9]{4}-[0-9]{2}-[0-9]{2}_[^/\s)\]]+)")
_FOLDER_PR = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}_[\w.-]+)[^\n#]{0,20}\(PR\s*#(\d+)\)")
_PR_HANDLE = re.compile(r"PR\s*#(\d+)\]?(?:\([^)]*\))?[\s,(]*(?:by\s*)?@([\w-]+)|@([\w-]+)\)?[\s,]*\(?PR\s*#(\d+)")
_PR_SCORE = re.compile(r"(?:PR\s*#|pull/)(\d{2,5})\]?(?:\([^)\s]*\))?[^\n#]{0,40}?(?<![\d.])([01]\.\d{4,8})(?!\d)")


def base_prs(readme: str, jd: dict, own_pr: int | None, lb_summary: str = "") -> list[int]:
    """PRs the record says it builds on, in order of mention: JSON keys, README wording, leaderboard summary."""
    prs: list[int] = []
    for key in ("base_pr", "based_on", "base_submission", "comparison_baseline_pr", "builds_on", "parent_pr"):
        v = jd.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            prs.append(int(v))
        elif isinstance(v, str):
            prs += [int(n) for n in re.findall(r"(?:PR\s*#|#|pull/)(\d{2,5})", v)]
        elif isinstance(v, list):
            prs += [int(n) for n in re.findall(r"(\d{2,5})", " ".join(map(str, v)))]
    text = fr.normalize_prose(readme or "")
    found = sorted((m.start(), int(m.group(1))) for rx in _BASE_WORDING for m in rx.finditer(text))
    prs += [n for _, n in found]
    summary = re.sub(r"^\s*On PR #\d+\s*:?", "", lb_summary or "")  # the leading "On PR #N" is the own PR
    prs += [int(m.group(1)) for rx in _BASE_WORDING for m in rx.finditer(summary)]
    return [p for p in dict.fromkeys(prs) if p != own_pr]


def base_record_links(readme: str) -> list[str]:
    """Record folders that base wording links to ("builds on the 03-23 [record](.../records/track/folder/...)")."""
    text = fr.normalize_prose(readme or "")
    out = []
    for rx in _BASE_KEYWORDS:
        for m in rx.finditer(text):
            link = _RECORD_LINK.search(text[m.end(): m.end() + 200].split("\n")[0])
            if link:
                out.append((m.start(), link.group(1)))
    return [f for _, f in sorted(out)]


def build_pr_map(records: list[dict], texts: dict[str, tuple[str, dict]]) -> dict[int, str]:
    """PR number -> record_id. ``texts`` maps record_id -> (README text, submission JSON)."""
    by_id = {r["record_id"]: r for r in records}
    pr_to_record: dict[int, str] = {}
    for rec in records:  # the leaderboard row (or JSON) gives a record its own PR
        if rec["pr"] is not None:
            pr_to_record.setdefault(rec["pr"], rec["record_id"])
    for readme, _ in texts.values():  # "2026-04-19_SP8192_... (PR #1736)"
        for m in _FOLDER_PR.finditer(readme):
            if m.group(1) in by_id:
                pr_to_record.setdefault(int(m.group(2)), m.group(1))

    handles: dict[str, list[str]] = {}
    for rid, (_, jd) in texts.items():
        for h in {str(jd.get("github_id", "")).lower(), str(by_id[rid]["author"] or "").lower()} - {""}:
            handles.setdefault(h, []).append(rid)
    for rid, (readme, jd) in texts.items():  # "PR #N by @handle": the only record by that handle
        text = readme + " " + " ".join(str(v) for v in jd.values() if isinstance(v, (str, dict)))
        for m in _PR_HANDLE.finditer(text):
            pr, h = (int(m.group(1)), m.group(2)) if m.group(1) else (int(m.group(4)), m.group(3))
            owners = handles.get(h.lower(), [])
            if len(owners) != 1 or pr in pr_to_record or owners[0] == rid:
                continue
            owner = by_id[owners[0]]
            if owner["pr"] is not None and owner["pr"] != pr:
                continue  # that record is already known to be another PR
            # PR numbers grow with time: a record dated before a smaller-numbered PR's record is not PR N
            earlier = [by_id[r]["date"] or "" for n, r in pr_to_record.items() if n < pr]
            if earlier and (owner["date"] or "") < max(earlier):
                continue
            pr_to_record[pr] = owners[0]

    for rid, (readme, _) in texts.items():  # "PR #N (..., 1.1318)": the only record with that score
        for m in _PR_SCORE.finditer(fr.normalize_prose(readme)):
            pr, score_text = int(m.group(1)), m.group(2)
            if pr in pr_to_record:
                continue
            digits = len(score_text.split(".")[1])
            hits = [r for r in records if r["val_bpb"] is not None and r["record_id"] != rid
                    and abs(round(r["val_bpb"], digits) - float(score_text)) < 10 ** -digits / 2 + 1e-12
                    and r["pr"] in (None, pr)]
            if len(hits) == 1:
                pr_to_record[pr] = hits[0]["record_id"]
    return pr_to_record


def base_candidates(rec: dict, pr_to_record: dict[int, str], known: set[str]) -> list[str]:
    """Base records of ``rec`` in order: linked record folders first, then mapped base PRs."""
    out = [b for b in rec.get("_base_links", []) if b in known]
    out += [pr_to_record[p] for p in rec["base_prs"] if p in pr_to_record]
    return [b for b in dict.fromkeys(out) if b != rec["record_id"]]


def resolve_features(records: list[dict], owns: dict[str, dict], absent: dict[str, dict],
                     pr_to_record: dict[int, str]) -> dict[str, dict[str, tuple[object, str]]]:
    """Every record's full feature set with provenance: own > absent-from-full-dump > base stack > baseline."""
    by_id = {r["record_id"]: r for r in records}
    resolved: dict[str, dict[str, tuple[object, str]]] = {}

    def resolve(rid: str, stack: tuple[str, ...]) -> dict[str, tuple[object, str]]:
        if rid in resolved:
            return resolved[rid]
        feats = dict(owns[rid])
        for f, v in absent.get(rid, {}).items():  # the record's own full config dump beats the base stack
            feats.setdefault(f, v)
        for base in base_candidates(by_id[rid], pr_to_record, set(by_id)):
            if base in stack:
                continue
            base_feats = resolve(base, stack + (rid,))
            for f in INTERVENTION_FEATURES:
                if f not in feats and f in base_feats and not base_feats[f][1].startswith("default"):
                    feats[f] = (base_feats[f][0], f"inherited from {base}")
            break  # the first base that maps to a known record is the stack
        for f in INTERVENTION_FEATURES:
            if f not in feats:
                feats[f] = (BASELINE_FEATURES[f], "default: naive baseline")
        resolved[rid] = feats
        return feats

    for rid in by_id:
        resolve(rid, ())
    return resolved
