"""Shared data shapes (frozen dataclasses) and the versioned-JSON helpers every stage uses.

Every JSON file written to results/ or dags/ carries ``schema_version``; ``read_json`` rejects
versions it does not know. Sections below are owned by the stage that produces the data.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from scripts.causal.errors import DataFormatError, SchemaVersionError

SCHEMA_VERSION = 1


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


def read_json(path: str | Path, *, schema_versions: tuple[int, ...] = (SCHEMA_VERSION,)) -> dict:
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


# ---------------------------------------------------------------------------------------------
# Training (issue 2). RunResult itself is defined in train_gpt.py (the trainer is standalone);
# it is re-exported here so stages import every shape from one place.
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Intervention matrix (issue 3: extract_interventions)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Causal structure (issue 4: estimate_dag, identifiability_check, select_interventions)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Experiments and statistics (issue 5: interventions, experiment_runner, statistical_analysis)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Pipeline and report (issue 6: run_pipeline, report, plots)
# ---------------------------------------------------------------------------------------------
