"""The verified evidence table (evidence/verified): coverage of every record folder, quotes that are really in their
sources, valid classes, interventions that make exactly their entry's change; the loader's errors."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.paths import EVIDENCE_DIR, SHARED_RECORDS
from scripts.causal.core.schema import EVIDENCE_CLASSES
from scripts.causal.evidence.expresses import entry_expressed, expresses
from scripts.causal.evidence.table import entries, load_record, load_table, locate_quote, record_dirs

needs_records = pytest.mark.skipif(not SHARED_RECORDS.is_dir(), reason="../shared/records (the leaderboard) absent")


@pytest.fixture(scope="module")
def table():
    return load_table(EVIDENCE_DIR)


@needs_records
def test_every_record_folder_has_an_entry_or_says_it_has_none(table):
    dirs = record_dirs(SHARED_RECORDS)
    assert len(dirs) >= 48
    missing = sorted(set(dirs) - set(table))
    assert not missing, f"record folders without a verified file in evidence/verified: {missing}"
    for rid in dirs:
        rec = table[rid]
        assert rec.entries or (rec.no_ablation_statements and rec.note), rid
        assert rec.track == dirs[rid].parent.name, rid


@needs_records
def test_every_quote_is_in_its_source_at_its_line(table):
    dirs = record_dirs(SHARED_RECORDS)
    lost = [f"{e.key} {e.file}:{e.line}" for e in entries(table) if locate_quote(e, dirs[e.record_id]) is None]
    assert not lost, f"quotes not found within 3 lines of their stated line: {lost}"


def test_every_entry_has_a_class_and_every_named_intervention_makes_its_change(table):
    all_entries = entries(table)
    assert len(all_entries) >= 400
    assert {e.klass for e in all_entries} <= set(EVIDENCE_CLASSES)
    assert Counter(e.klass for e in all_entries)["single_change"] >= 150
    wrong = [(e.key, e.intervention, entry_expressed(e).reason) for e in all_entries
             if e.intervention and not entry_expressed(e).ok]
    assert not wrong


def test_expresses_checks_knob_direction_and_size():
    assert expresses("num_layers_plus2", "num_layers", 9, 11).ok
    assert expresses("num_layers_plus2", "num_layers", 11, 13).ok            # +2 from any depth
    assert not expresses("num_layers_plus2", "num_layers", 10, 13).ok        # +3 is another size
    back = expresses("num_layers_plus2", "num_layers", 11, 9)
    assert back.ok and back.reversed                                        # the same two configs, other way
    assert expresses("mlp_mult_3", "mlp_mult", 2, 3).ok
    assert not expresses("mlp_mult_3", "mlp_mult", 3, 4).ok and not expresses("mlp_mult_4", "mlp_mult", 3, 4).ok
    assert expresses("matrix_lr_half", "matrix_lr", 0.04, 0.02).ok
    assert not expresses("qk_gain_5", "qk_gain", 4, 5).ok                   # the registry moves 1.5 -> 5
    assert expresses("act_leaky_relu2", "activation", "relu2", "leaky_relu2").ok
    assert not expresses("act_gelu", "activation", "relu2", "leaky_relu2").ok
    no = expresses("ema_0997", "num_layers", 9, 11)
    assert not no.ok and "leaves num_layers" in no.reason
    assert "from/to not stated" in expresses("ema_0997", "ema", None, True).reason


def _write(path, **over):
    rec = {"schema_version": 1, "record_id": path.stem, "track": "track_10min_16mb", "date": "2026-03-20",
           "files_read": ["README.md"], "no_ablation_statements": False, "note": "",
           "entries": [{"id": 1, "class": "single_change", "change": "+ XSA", "knob": "xsa", "from": False,
                        "to": True, "intervention": "xsa_last4", "delta_bpb": -0.002, "delta_nats": None,
                        "delta_stated": "-0.002", "metric": "post_quant", "stack": "", "stack_record": None,
                        "reference": "previous row", "seeds": 1, "hardware": "8xH100", "quote": "| + XSA | -0.002 |",
                        "file": "README.md", "line": 3}]}
    for k, v in over.items():
        if k in rec:
            rec[k] = v
        else:
            rec["entries"][0][k] = v
    path.write_text(json.dumps(rec))
    return path


@pytest.mark.parametrize("over, match", [
    ({"class": "guess"}, r"entry 1: class 'guess' is not one of"),
    ({"metric": "bpb"}, r"metric 'bpb' is not one of"),
    ({"hardware": "H100"}, r"hardware 'H100' must be NxH100"),
    ({"knob": "layers"}, r"knob 'layers' is neither a canonical feature nor a trainer field"),
    ({"intervention": "xsa_everywhere"}, r"intervention 'xsa_everywhere' is not in the registry"),
    ({"class": "bundle"}, r"on a 'bundle' entry; only a single_change entry names"),
    ({"delta_bpb": None}, r"needs delta_bpb or delta_nats"),
    ({"line": 0}, r"line must be a 1-based line number"),
    ({"no_ablation_statements": True}, r"no_ablation_statements is True but there are 1 entries"),
])
def test_the_loader_names_the_file_the_entry_and_the_field(tmp_path, over, match):
    path = _write(tmp_path / "2026-03-20_X.json", **over)
    with pytest.raises(DataFormatError, match=match) as exc:
        load_record(path)
    assert "2026-03-20_X.json" in str(exc.value)


def test_the_loader_requires_the_file_name_to_be_the_record_id(tmp_path):
    path = _write(tmp_path / "other.json", record_id="2026-03-20_X")
    with pytest.raises(DataFormatError, match="must equal the file name 'other'"):
        load_record(path)
    with pytest.raises(DataFormatError, match="no verified record files"):
        load_table(tmp_path / "empty")
