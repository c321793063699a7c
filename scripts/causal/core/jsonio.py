"""Versioned JSON files: every output carries ``schema_version`` and is written atomically.

``read_json`` rejects versions it does not know, naming the file; ``file_sha256`` hashes inputs for manifests
and the stage cache. ``core.schema`` re-exports these, so stages import shapes and helpers from one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from scripts.causal.core.errors import DataFormatError, SchemaVersionError

SCHEMA_VERSION = 1
#: results/interventions.json: 2 = typed ablation rows (kind, features, from/to, metric, stack, seeds).
#: Version 1 matrices still read (their rows are typed on the fly by ``extract.row_types``).
MATRIX_SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION, MATRIX_SCHEMA_VERSION)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def write_json(path: str | Path, payload: dict, *, schema_version: int = SCHEMA_VERSION) -> Path:
    """Write ``payload`` with ``schema_version`` first, atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"schema_version": schema_version, **{k: v for k, v in payload.items() if k != "schema_version"}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(body), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_json(path: str | Path, *, schema_versions: tuple[int, ...] = SUPPORTED_SCHEMA_VERSIONS) -> dict:
    """Read a versioned JSON output; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object at top level, got {type(data).__name__}")
    version = data.get("schema_version")
    if version not in schema_versions:
        raise SchemaVersionError(
            f"{path}: schema_version {version!r} is not supported (expected one of {list(schema_versions)}); "
            "regenerate the file with this version of the pipeline"
        )
    return data


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file's bytes (streamed), for manifests and stage caches."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
