"""Tests for scripts/causal/screen/ledger.py: WAL mode, pre-registration, idempotent one-transaction run rows."""
from __future__ import annotations

import math
import sqlite3

import pytest

from scripts.causal.core.errors import ConfigError, DataFormatError
from scripts.causal.core.schema import RunRecord
from scripts.causal.screen.ledger import Ledger

PREREG = {"preset": "tiny", "backend": "torch", "seeds": [11, 12, 13], "alpha": 0.01, "margin_bpb": 0.0,
          "correction": "holm", "interventions": [{"name": "aa", "overrides": {}}]}


def _rec(intervention="control", seed=11, *, status="ok", val_bpb=2.5, screen="s1", h="abc") -> RunRecord:
    return RunRecord(screen_id=screen, intervention=intervention,
                     arm="control" if intervention == "control" else "treatment", seed=seed, backend="torch",
                     config_hash=h, status=status, error=None if status == "ok" else "boom", val_loss=1.7,
                     val_bpb=val_bpb, post_quant_val_bpb=None if val_bpb is None else val_bpb + 0.01, artifact_bytes=1234, steps=10,
                     wall_s=1.5, step_losses=[3.0, 2.5, 2.25], val_history=[{"step": 10, "val_loss": 1.7,
                                                                            "val_bpb": val_bpb}],
                     versions={"torch": "x"}, git_commit="deadbeef", executor="inprocess",
                     config={"mlp_mult": 2}, finished_at=1.0)


def test_wal_mode_and_tables(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        assert led.journal_mode() == "wal"
        assert led.integrity_ok()
    con = sqlite3.connect(tmp_path / "l.sqlite")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"screens", "runs", "decisions"} <= tables


def test_preregistration_is_fixed(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        assert led.register_screen("s1", PREREG, git_commit="c1") == PREREG
        assert led.register_screen("s1", dict(PREREG)) == PREREG  # same design: fine
        with pytest.raises(ConfigError, match=r"pre-registered with different settings \(fields \['seeds'\]"):
            led.register_screen("s1", {**PREREG, "seeds": [11, 12, 14]})
        assert led.get_screen("s1")["git_commit"] == "c1"
        assert led.list_screens() == ["s1"]


def test_record_run_roundtrip_and_idempotent(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led:
        led.register_screen("s1", PREREG)
        rec = _rec()
        assert led.record_run(rec) is True
        assert led.record_run(rec) is False  # same key: ignored, never duplicated
        assert led.count_runs("s1") == 1
        assert led.has_run("s1", "control", 11, "abc")
        assert not led.has_run("s1", "control", 12, "abc")
    with Ledger(path) as led:  # survives reopening
        got = led.get_run("s1", "control", 11, "abc")
        assert got == rec


def test_failed_and_diverged_runs_are_kept_with_error(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.register_screen("s1", PREREG)
        led.record_run(_rec("aa", status="failed", val_bpb=None))
        led.record_run(_rec("aa", seed=12, status="diverged", val_bpb=math.nan))
        rows = led.runs("s1")
        assert [(r.status, r.error, r.val_bpb) for r in rows] == [("failed", "boom", None),
                                                                  ("diverged", "boom", None)]


def test_inf_metric_survives(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.register_screen("s1", PREREG)
        led.record_run(_rec("aa", status="diverged", val_bpb=math.inf))
        assert led.runs("s1")[0].val_bpb == math.inf


def test_unfinished_status_rejected(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.register_screen("s1", PREREG)
        with pytest.raises(ConfigError, match="only finished runs go in the ledger"):
            led.record_run(_rec(status="running"))
        assert led.count_runs() == 0


def test_run_needs_registered_screen(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        with pytest.raises(sqlite3.IntegrityError):
            led.record_run(_rec(screen="nope"))
        assert led.count_runs() == 0  # the failed transaction was rolled back


def test_decisions_upsert(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.register_screen("s1", PREREG)
        assert led.record_decisions("s1", [{"intervention": "aa", "decision": "null", "p_adjusted": 1.0}]) == 1
        led.record_decisions("s1", [{"intervention": "aa", "decision": "suggestive", "p_adjusted": 0.2}])
        ds = led.decisions("s1")
        assert len(ds) == 1 and ds[0]["decision"] == "suggestive" and ds[0]["result"]["p_adjusted"] == 0.2
        with pytest.raises(ConfigError, match="no screen 'zz'"):
            led.record_decisions("zz", [])
        with pytest.raises(DataFormatError, match="lacks 'intervention' or 'decision'"):
            led.record_decisions("s1", [{"decision": "null"}])


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataFormatError, match="not a usable ledger database"):
        Ledger(bad)


def test_two_connections_see_committed_rows(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as a, Ledger(path) as b:
        a.register_screen("s1", PREREG)
        a.record_run(_rec())
        assert b.count_runs("s1") == 1
        assert b.record_run(_rec()) is False


def test_an_older_ledger_gets_the_new_metric_columns(tmp_path):
    """A ledger written before the sliding/TTT/artifact columns existed opens, keeps its runs and takes new ones."""

    from scripts.causal.screen import ledger as led_mod

    path = tmp_path / "old.sqlite"
    old_schema = led_mod._SCHEMA
    for col in led_mod._ADDED_RUN_COLUMNS:
        old_schema = "\n".join(line for line in old_schema.splitlines() if not line.strip().startswith(col + " "))
    conn = sqlite3.connect(path)
    conn.executescript(old_schema)
    conn.close()
    with Ledger(path) as led:
        cols = {row[1] for row in led._conn.execute("PRAGMA table_info(runs)")}
    assert set(led_mod._ADDED_RUN_COLUMNS) <= cols
