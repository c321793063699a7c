"""Load and validate the verified evidence table (``evidence/verified/<record_id>.json``, evidence/README.md).

``load_table(directory)`` returns ``{record_id: VerifiedRecord}``; every problem is a ``DataFormatError`` naming
the file, the entry and the field. ``locate_quote`` finds an entry's quote in its record folder (the check that
the table quotes its sources), ``single_change_entries`` the rows that can say what one change does.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.paths import EVIDENCE_DIR
from scripts.causal.core.schema import (
    EVIDENCE_CLASSES,
    EVIDENCE_METRICS,
    INTERVENTION_FEATURES,
    EvidenceEntry,
    VerifiedRecord,
)

__all__ = ["TABLE_SCHEMA_VERSION", "entries", "load_record", "load_table", "locate_quote", "record_dirs",
           "single_change_entries", "table_sha256"]

TABLE_SCHEMA_VERSION = 1
_HARDWARE = re.compile(r"^(?:\d+xH100|unknown|other:.+)$")
_REQUIRED = ("id", "class", "change", "knob", "from", "to", "intervention", "delta_bpb", "delta_nats", "delta_stated",
             "metric", "stack", "stack_record", "reference", "seeds", "hardware", "quote", "file", "line")


def _knobs() -> set[str]:
    import dataclasses

    import train_gpt as tg

    return set(INTERVENTION_FEATURES) | {f.name for f in dataclasses.fields(tg.Hyperparameters)}


def _registry_names() -> set[str]:
    from scripts.causal.screen import registry as reg

    return {iv.name for iv in reg.list_interventions()}


def _entry(path: Path, rec: Mapping[str, Any], raw: Any, knobs: set[str], names: set[str]) -> EvidenceEntry:
    where = f"{path}: entry {raw.get('id') if isinstance(raw, Mapping) else '?'}"
    if not isinstance(raw, Mapping):
        raise DataFormatError(f"{where}: an entry must be a JSON object, got {type(raw).__name__}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing} (evidence/README.md lists every field)")
    if raw["class"] not in EVIDENCE_CLASSES:
        raise DataFormatError(f"{where}: class {raw['class']!r} is not one of {list(EVIDENCE_CLASSES)}")
    if raw["metric"] not in EVIDENCE_METRICS:
        raise DataFormatError(f"{where}: metric {raw['metric']!r} is not one of {list(EVIDENCE_METRICS)}")
    if not isinstance(raw["hardware"], str) or not _HARDWARE.match(raw["hardware"]):
        raise DataFormatError(f"{where}: hardware {raw['hardware']!r} must be NxH100, other:<gpu> or unknown")
    if raw["knob"] is not None and raw["knob"] not in knobs:
        raise DataFormatError(f"{where}: knob {raw['knob']!r} is neither a canonical feature nor a trainer field "
                              "(use null for a change no knob names)")
    if raw["intervention"] is not None:
        if raw["intervention"] not in names:
            raise DataFormatError(f"{where}: intervention {raw['intervention']!r} is not in the registry "
                                  "(scripts/causal/screen/registry.py)")
        if raw["class"] != "single_change":
            raise DataFormatError(f"{where}: intervention {raw['intervention']!r} on a {raw['class']!r} entry; only a "
                                  "single_change entry names the registry intervention that makes it")
    for k in ("delta_bpb", "delta_nats"):
        if raw[k] is not None and (isinstance(raw[k], bool) or not isinstance(raw[k], (int, float))):
            raise DataFormatError(f"{where}: {k} must be a number or null, got {raw[k]!r}")
    if raw["delta_bpb"] is None and raw["delta_nats"] is None:
        raise DataFormatError(f"{where}: needs delta_bpb or delta_nats (the figure the statement gives)")
    if raw["seeds"] is not None and (isinstance(raw["seeds"], bool) or not isinstance(raw["seeds"], int)
                                     or raw["seeds"] < 1):
        raise DataFormatError(f"{where}: seeds must be a positive integer or null, got {raw['seeds']!r}")
    if not str(raw["quote"]).strip() or not str(raw["file"]).strip():
        raise DataFormatError(f"{where}: quote and file must not be empty")
    if isinstance(raw["line"], bool) or not isinstance(raw["line"], int) or raw["line"] < 1:
        raise DataFormatError(f"{where}: line must be a 1-based line number, got {raw['line']!r}")
    return EvidenceEntry(
        record_id=rec["record_id"], id=int(raw["id"]), klass=raw["class"], change=str(raw["change"]),
        knob=raw["knob"], from_value=raw["from"], to_value=raw["to"], intervention=raw["intervention"],
        delta_bpb=None if raw["delta_bpb"] is None else float(raw["delta_bpb"]),
        delta_nats=None if raw["delta_nats"] is None else float(raw["delta_nats"]),
        delta_stated=str(raw["delta_stated"]), metric=raw["metric"], stack=str(raw["stack"]),
        stack_record=raw["stack_record"], reference=str(raw["reference"]), seeds=raw["seeds"],
        hardware=raw["hardware"], quote=str(raw["quote"]), file=str(raw["file"]), line=int(raw["line"]),
        track=rec.get("track"), date=rec.get("date"))


def load_record(path: str | Path, *, knobs: set[str] | None = None, names: set[str] | None = None) -> VerifiedRecord:
    """One record's file, validated (see the module docstring)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the verified record ({exc})") from exc
    if not isinstance(rec, Mapping):
        raise DataFormatError(f"{path}: must be a JSON object")
    if rec.get("schema_version") != TABLE_SCHEMA_VERSION:
        raise DataFormatError(f"{path}: schema_version {rec.get('schema_version')!r}, this code reads "
                              f"{TABLE_SCHEMA_VERSION}")
    if rec.get("record_id") != path.stem:
        raise DataFormatError(f"{path}: record_id {rec.get('record_id')!r} must equal the file name {path.stem!r}")
    for k in ("track", "entries", "no_ablation_statements"):
        if k not in rec:
            raise DataFormatError(f"{path}: missing field {k!r}")
    raw_entries = rec["entries"]
    if not isinstance(raw_entries, list):
        raise DataFormatError(f"{path}: entries must be a list")
    if bool(rec["no_ablation_statements"]) == bool(raw_entries):
        raise DataFormatError(f"{path}: no_ablation_statements is {rec['no_ablation_statements']} but there are "
                              f"{len(raw_entries)} entries (true exactly when there are none)")
    knobs = _knobs() if knobs is None else knobs
    names = _registry_names() if names is None else names
    entries = tuple(_entry(path, rec, e, knobs, names) for e in raw_entries)
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{path}: entry ids repeat ({sorted(i for i in ids if ids.count(i) > 1)})")
    return VerifiedRecord(record_id=rec["record_id"], track=str(rec["track"]), date=rec.get("date"),
                          files_read=tuple(rec.get("files_read") or ()),
                          no_ablation_statements=bool(rec["no_ablation_statements"]), note=str(rec.get("note", "")),
                          entries=entries)


def load_table(directory: str | Path = EVIDENCE_DIR) -> dict[str, VerifiedRecord]:
    """Every ``<record_id>.json`` under ``directory``, validated, by record_id."""
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DataFormatError(f"{directory}: no verified record files (*.json); see evidence/README.md")
    knobs, names = _knobs(), _registry_names()
    return {p.stem: load_record(p, knobs=knobs, names=names) for p in files}


def entries(table: Mapping[str, VerifiedRecord]) -> list[EvidenceEntry]:
    """All entries of the table, in record and id order."""
    return [e for rid in sorted(table) for e in table[rid].entries]


def single_change_entries(table: Mapping[str, VerifiedRecord]) -> list[EvidenceEntry]:
    """The entries that can say what one change does."""
    return [e for e in entries(table) if e.is_single_change]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[*`\\]", "", text)).strip().lower()


def locate_quote(entry: EvidenceEntry, record_dir: str | Path, *, window: int = 3) -> int | None:
    """The 1-based line of ``entry.file`` within ``window`` lines of ``entry.line`` that holds the quote's first
    fragment (the text before any "..."), or None when it is not there."""
    path = Path(record_dir) / entry.file
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    fragments = [_norm(f) for f in re.split(r"\.\.\.|…", entry.quote) if _norm(f)]
    if not fragments:
        return None
    head = fragments[0][:60]
    lo, hi = max(1, entry.line - window), min(len(lines), entry.line + window)
    for n in sorted(range(lo, hi + 1), key=lambda n: abs(n - entry.line)):
        joined = _norm(" ".join(lines[n - 1: n + 2]))  # a quote may run over a wrapped line
        if head in joined:
            return n
    return None


def table_sha256(directory: str | Path = EVIDENCE_DIR) -> str:
    """One hash over every record file of the table (name and bytes), for the outputs that rest on it."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(directory).glob("*.json")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def record_dirs(root: str | Path) -> dict[str, Path]:
    """record_id -> folder for every record folder under a records root (``<root>/<track>/<record_id>``)."""
    root = Path(root)
    return {p.name: p for track in sorted(root.iterdir()) if track.is_dir() and track.name.startswith("track")
            for p in sorted(track.iterdir()) if p.is_dir()}
