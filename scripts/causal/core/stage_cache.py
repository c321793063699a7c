"""Reuse a stage's outputs when its inputs are unchanged (same input file hashes and the same options).

The cache is one small JSON file (``stage_cache.json`` in the run's output folder). Each entry stores, per
stage, a key = sha256 over the stage name, the sha256 of every input file and the JSON-canonical options,
plus the outputs' own hashes. A stage is fresh when the key matches AND every output still exists with
the recorded hash (so a hand-edited or deleted output is recomputed, never silently trusted).

    cache = StageCache(out_dir / "stage_cache.json")
    if not cache.is_fresh("dag_cycle_0", inputs=[matrix], options=opts, outputs=[dag_json]):
        ...compute...
        cache.record("dag_cycle_0", inputs=[matrix], options=opts, outputs=[dag_json])
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import _jsonable, file_sha256, read_json, write_json


def stage_key(stage: str, *, inputs: Iterable[str | Path] = (), options: Mapping | None = None) -> str:
    """Hash of the stage name, its input files' contents (missing file -> 'missing') and its options."""
    h = hashlib.sha256(stage.encode())
    for p in sorted(str(x) for x in inputs):
        path = Path(p)
        h.update(b"\0" + path.name.encode() + b"=" + (file_sha256(path) if path.is_file() else "missing").encode())
    h.update(b"\0" + json.dumps(_jsonable(dict(options or {})), sort_keys=True, default=str).encode())
    return h.hexdigest()


class StageCache:
    """Per-run record of which stage outputs came from which inputs; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = dict(read_json(self.path).get("stages", {}))
            except DataFormatError:
                self.entries = {}  # an unreadable cache only costs a recompute

    def is_fresh(self, stage: str, *, inputs: Iterable[str | Path] = (), options: Mapping | None = None,
                 outputs: Iterable[str | Path] = ()) -> bool:
        entry = self.entries.get(stage)
        if not entry or entry.get("key") != stage_key(stage, inputs=inputs, options=options):
            return False
        recorded = entry.get("outputs", {})
        outs = [str(o) for o in outputs]
        if sorted(recorded) != sorted(outs):
            return False
        return all(Path(o).is_file() and file_sha256(o) == recorded[o] for o in outs)

    def record(self, stage: str, *, inputs: Iterable[str | Path] = (), options: Mapping | None = None,
               outputs: Iterable[str | Path] = ()) -> None:
        outs = [str(o) for o in outputs]
        missing = [o for o in outs if not Path(o).is_file()]
        if missing:
            raise DataFormatError(f"stage {stage!r} finished without writing {missing}; cannot cache it")
        self.entries[stage] = {
            "key": stage_key(stage, inputs=inputs, options=options),
            "outputs": {o: file_sha256(o) for o in outs},
        }
        write_json(self.path, {"stages": self.entries})


def cached_stage(cache: StageCache, stage: str, *, inputs: Sequence[Path], options: Mapping,
                 outputs: Sequence[Path], compute: Callable[[], None], log: Callable[[str], None],
                 store: Path | None = None) -> bool:
    """Run ``compute`` unless the outputs are fresh (or restorable from the shared ``store`` folder).

    With ``store``, fresh outputs are also copied there under the stage key, so another run folder with the
    same inputs and options reuses them. Returns True when the outputs were reused.
    """
    if cache.is_fresh(stage, inputs=inputs, options=options, outputs=outputs):
        log(f"{stage}: inputs unchanged, reusing {len(outputs)} outputs")
        return True
    keyed = None if store is None else store / stage / stage_key(stage, inputs=inputs, options=options)[:16]
    if keyed is not None and all((keyed / Path(o).name).is_file() for o in outputs):
        for o in outputs:
            shutil.copyfile(keyed / Path(o).name, o)
        cache.record(stage, inputs=inputs, options=options, outputs=outputs)
        log(f"{stage}: inputs unchanged since an earlier run, reusing its outputs ({keyed})")
        return True
    t0 = time.perf_counter()
    compute()
    cache.record(stage, inputs=inputs, options=options, outputs=outputs)
    if keyed is not None:
        keyed.mkdir(parents=True, exist_ok=True)
        for o in outputs:
            shutil.copyfile(o, keyed / Path(o).name)
    log(f"{stage}: done in {time.perf_counter() - t0:.1f}s")
    return False
