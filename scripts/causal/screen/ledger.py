"""SQLite ledger of screens, runs and decisions (stdlib sqlite3, WAL mode).

The ledger is the durable record of every experiment:

* ``screens``: one row per screen, holding its pre-registration (seeds, interventions, preset, backend,
  alpha, margin, correction), written before the first run and never changed afterwards.
* ``runs``: one row per *finished* run, keyed by ``(screen_id, intervention, seed, config_hash)``.
  A row is written in a single transaction only once the run has finished (ok, diverged or failed),
  so a ``kill -9`` loses at most the run in flight, and ``INSERT OR IGNORE`` on the key makes re-runs
  idempotent: a run is never stored twice.
* ``decisions``: the statistics' verdict per (screen, intervention), upserted by the analysis stage.

Usage::

    with Ledger("results/ledger.sqlite") as led:
        led.register_screen("s1", prereg)
        if not led.has_run("s1", "control", 11, cfg_hash):
            led.record_run(record)
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import RunRecord, _jsonable

LEDGER_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS screens (
    screen_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    git_commit TEXT,
    preregistration TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    screen_id TEXT NOT NULL REFERENCES screens(screen_id),
    intervention TEXT NOT NULL,
    arm TEXT NOT NULL CHECK (arm IN ('control', 'treatment')),
    seed INTEGER NOT NULL,
    backend TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'failed')),
    error TEXT,
    val_loss REAL,
    val_bpb REAL,
    post_quant_val_loss REAL,
    post_quant_val_bpb REAL,
    artifact_bytes INTEGER,
    sliding_val_bpb REAL,
    ttt_val_bpb REAL,
    model_bytes INTEGER,
    within_budget INTEGER,
    steps INTEGER,
    wall_s REAL,
    tokens_per_s REAL,
    step_losses TEXT NOT NULL,
    val_history TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_commit TEXT,
    executor TEXT,
    config TEXT NOT NULL,
    finished_at REAL NOT NULL,
    horizon_metrics TEXT,
    UNIQUE (screen_id, intervention, seed, config_hash)
);
CREATE TABLE IF NOT EXISTS decisions (
    screen_id TEXT NOT NULL REFERENCES screens(screen_id),
    intervention TEXT NOT NULL,
    decision TEXT NOT NULL,
    result TEXT NOT NULL,
    decided_at REAL NOT NULL,
    PRIMARY KEY (screen_id, intervention)
);
"""

_RUN_COLUMNS = (
    "screen_id", "intervention", "arm", "seed", "backend", "config_hash", "status", "error",
    "val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "artifact_bytes", "sliding_val_bpb",
    "ttt_val_bpb", "model_bytes", "within_budget", "steps",
    "wall_s", "tokens_per_s", "step_losses", "val_history", "versions", "git_commit", "executor",
    "config", "finished_at", "horizon_metrics",
)
_JSON_COLUMNS = ("step_losses", "val_history", "versions", "config", "horizon_metrics")
# Columns added after a ledger format was first written: an older ledger gets them (NULL for its old runs).
_ADDED_RUN_COLUMNS = {"sliding_val_bpb": "REAL", "ttt_val_bpb": "REAL", "model_bytes": "INTEGER",
                      "within_budget": "INTEGER", "horizon_metrics": "TEXT"}


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True)


def _float_or_none(value: Any) -> float | None:
    """SQLite stores NaN as NULL; keep +-inf as floats."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


class Ledger:
    """A connection to one ledger file. Thread-unsafe; one per process (optuna's storage contract).

    Every write is one transaction. Rows returned are fresh ``RunRecord`` objects, never shared.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            self._check_version()
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
            for col, kind in _ADDED_RUN_COLUMNS.items():
                if col not in have:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
        except sqlite3.DatabaseError as exc:
            raise DataFormatError(
                f"{self.path}: not a usable ledger database ({exc}); pass another --ledger path"
            ) from exc

    # -- plumbing ---------------------------------------------------------------------------
    def _check_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='ledger_version'").fetchone()
        if row is None:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('ledger_version', ?)", (str(LEDGER_VERSION),)
            )
        elif int(row[0]) != LEDGER_VERSION:
            raise DataFormatError(
                f"{self.path}: ledger_version {row[0]} is not supported (expected {LEDGER_VERSION}); "
                "start a new ledger file"
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def journal_mode(self) -> str:
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- screens ----------------------------------------------------------------------------
    def register_screen(
        self, screen_id: str, preregistration: Mapping[str, Any], *, git_commit: str | None = None
    ) -> dict:
        """Store a screen's pre-registration, or check it against the stored one.

        Returns the stored pre-registration. A screen id that already exists with a different
        pre-registration is an error: seeds and the test are fixed before the first run.
        """
        prereg = json.loads(_dumps(preregistration))
        existing = self.get_screen(screen_id)
        if existing is not None:
            stored = existing["preregistration"]
            if stored != prereg:
                diff = sorted(k for k in set(stored) | set(prereg) if stored.get(k) != prereg.get(k))
                raise ConfigError(
                    f"{self.path}: screen {screen_id!r} was pre-registered with different settings "
                    f"(fields {diff}: stored {[stored.get(k) for k in diff]}, now {[prereg.get(k) for k in diff]}); "
                    "rerun with the original settings (or --resume with no design flags), or pick a new --screen-id"
                )
            return stored
        self._conn.execute(
            "INSERT OR IGNORE INTO screens(screen_id, created_at, git_commit, preregistration) VALUES (?,?,?,?)",
            (screen_id, time.time(), git_commit, _dumps(prereg)),
        )
        return self.get_screen(screen_id)["preregistration"]

    def get_screen(self, screen_id: str) -> dict | None:
        row = self._conn.execute(
            "SELECT screen_id, created_at, git_commit, preregistration FROM screens WHERE screen_id=?",
            (screen_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "screen_id": row[0], "created_at": row[1], "git_commit": row[2],
            "preregistration": json.loads(row[3]),
        }

    def list_screens(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT screen_id FROM screens ORDER BY created_at, screen_id")]

    # -- runs -------------------------------------------------------------------------------
    def has_run(self, screen_id: str, intervention: str, seed: int, config_hash: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM runs WHERE screen_id=? AND intervention=? AND seed=? AND config_hash=?",
            (screen_id, intervention, int(seed), config_hash),
        ).fetchone()
        return row is not None

    def record_run(self, record: RunRecord) -> bool:
        """Insert one finished run in a single transaction. Returns False if it was already there."""
        if record.status not in ("ok", "diverged", "failed"):
            raise ConfigError(
                f"run status {record.status!r} for {record.intervention}/seed {record.seed} is not one of "
                "'ok', 'diverged', 'failed'; only finished runs go in the ledger"
            )
        values = []
        for col in _RUN_COLUMNS:
            value = getattr(record, col)
            if col in _JSON_COLUMNS:
                value = _dumps(value)
            elif col in ("val_loss", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "wall_s",
                         "tokens_per_s", "finished_at"):
                value = _float_or_none(value)
            values.append(value)
        placeholders = ",".join("?" for _ in _RUN_COLUMNS)
        with self._transaction():
            cur = self._conn.execute(
                f"INSERT OR IGNORE INTO runs({','.join(_RUN_COLUMNS)}) VALUES ({placeholders})", values
            )
            return cur.rowcount == 1

    def get_run(self, screen_id: str, intervention: str, seed: int, config_hash: str) -> RunRecord | None:
        rows = self._select("WHERE screen_id=? AND intervention=? AND seed=? AND config_hash=?",
                            (screen_id, intervention, int(seed), config_hash))
        return rows[0] if rows else None

    def runs(self, screen_id: str | None = None) -> list[RunRecord]:
        """All finished runs (of one screen, if given), in the order they finished."""
        if screen_id is None:
            return self._select("", ())
        return self._select("WHERE screen_id=?", (screen_id,))

    def count_runs(self, screen_id: str | None = None) -> int:
        if screen_id is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM runs WHERE screen_id=?", (screen_id,)).fetchone()[0])

    def _select(self, where: str, params: tuple) -> list[RunRecord]:
        cur = self._conn.execute(f"SELECT {','.join(_RUN_COLUMNS)} FROM runs {where} ORDER BY id", params)
        out = []
        for row in cur.fetchall():
            kw = dict(zip(_RUN_COLUMNS, row, strict=True))
            for col in _JSON_COLUMNS:
                kw[col] = {} if kw[col] is None and col == "horizon_metrics" else json.loads(kw[col])
            if kw["within_budget"] is not None:  # stored as 0/1
                kw["within_budget"] = bool(kw["within_budget"])
            out.append(RunRecord(**kw))
        return out

    # -- decisions --------------------------------------------------------------------------
    def record_decisions(self, screen_id: str, results: Iterable[Mapping[str, Any]]) -> int:
        """Upsert the statistics' per-intervention results (``ablation_results.json`` rows)."""
        if self.get_screen(screen_id) is None:
            raise ConfigError(
                f"{self.path}: no screen {screen_id!r} in the ledger (known: {self.list_screens()}); "
                "record decisions for a screen that was run"
            )
        n = 0
        now = time.time()
        with self._transaction():
            for res in results:
                if "intervention" not in res or "decision" not in res:
                    raise DataFormatError(
                        f"decision row {dict(res)!r} lacks 'intervention' or 'decision'; pass rows of "
                        "ablation_results.json['results']"
                    )
                self._conn.execute(
                    "INSERT INTO decisions(screen_id, intervention, decision, result, decided_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT(screen_id, intervention) DO UPDATE SET "
                    "decision=excluded.decision, result=excluded.result, decided_at=excluded.decided_at",
                    (screen_id, str(res["intervention"]), str(res["decision"]), _dumps(dict(res)), now),
                )
                n += 1
        return n

    def decisions(self, screen_id: str | None = None) -> list[dict]:
        sql = "SELECT screen_id, intervention, decision, result, decided_at FROM decisions"
        params: tuple = ()
        if screen_id is not None:
            sql += " WHERE screen_id=?"
            params = (screen_id,)
        rows = self._conn.execute(sql + " ORDER BY screen_id, intervention", params).fetchall()
        return [
            {"screen_id": r[0], "intervention": r[1], "decision": r[2], "result": json.loads(r[3]),
             "decided_at": r[4]}
            for r in rows
        ]

    # -- transactions -----------------------------------------------------------------------
    def _transaction(self) -> _Tx:
        return _Tx(self._conn)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one atomic write."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
