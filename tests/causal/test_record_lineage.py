"""Tests for scripts/causal/extract/lineage.py: base PR wording, PR -> record links, inheritance order."""
from __future__ import annotations

import pytest

from scripts.causal.core.schema import INTERVENTION_FEATURES
from scripts.causal.extract import lineage as lin


@pytest.mark.parametrize(
    ("readme", "expected"),
    [
        ("This builds on [#1218](https://github.com/openai/parameter-golf/pull/1218). Loader from #726.", [1218]),
        ("I started this submission from [PR #1179](x), then ported GPTQ from PR #1105.", [1179]),
        ("PR #414 stack with Parameter Banking", [414]),
        ("## Changes from PR #198\n\nXSA on the last 4 layers.", [198]),
        ("Compared with PR #549 (1.1194), we improve. Credits: PR #493 by @parinzee.", []),
    ],
)
def test_base_pr_wording(readme, expected):
    assert lin.base_prs(readme, {}, None) == expected


def test_base_prs_from_json_keys_and_leaderboard_summary():
    assert lin.base_prs("", {"base_pr": 1218, "based_on": "PR #1586 (@dexhunter)"}, None) == [1218, 1586]
    assert lin.base_prs("", {}, 1493, "On PR #1493: 3-layer recurrence on the PR #1394 stack") == [1394]


def test_base_record_links():
    text = "This script builds on the 03-23 [record](https://x/records/track_10min_16mb/2026-03-23_Leaky/README.md)."
    assert lin.base_record_links(text) == ["2026-03-23_Leaky"]


def rec(rid, *, pr=None, author=None, date="2026-01-01", val=None, base_prs=(), links=()):
    return {"record_id": rid, "pr": pr, "author": author, "date": date, "val_bpb": val, "base_prs": list(base_prs),
            "_base_links": list(links)}


def test_pr_map_rules():
    records = [rec("2026-01-01_A", pr=100, author="ann"), rec("2026-01-02_B", author="bob", date="2026-01-02"),
               rec("2026-01-03_C", date="2026-01-03", val=1.1318), rec("2026-01-04_D", author="dan", date="2026-01-04")]
    texts = {
        "2026-01-01_A": ("", {"github_id": "ann"}),
        "2026-01-02_B": ("", {"github_id": "bob"}),
        "2026-01-03_C": ("", {}),
        "2026-01-04_D": ("Base: 2026-01-02_B (PR #150). Also PR #170 (11L, 1.1318). PR #90 by @dan.", {}),
    }
    got = lin.build_pr_map(records, texts)
    assert got[100] == "2026-01-01_A"  # own PR
    assert got[150] == "2026-01-02_B"  # "<folder> (PR #N)"
    assert got[170] == "2026-01-03_C"  # score-annotated mention
    assert 90 not in got  # the handle's only record is the citing record itself


def test_pr_by_handle_respects_time_order():
    records = [rec("2026-01-01_A", pr=100), rec("2026-01-05_E", pr=300, date="2026-01-05"),
               rec("2026-01-02_F", author="fay", date="2026-01-02"), rec("2026-01-06_G", date="2026-01-06")]
    texts = {r["record_id"]: ("", {}) for r in records}
    texts["2026-01-06_G"] = ("Builds on PR #400 by @fay.", {})
    assert 400 not in lin.build_pr_map(records, texts)  # fay's only record predates PR #300's record


def test_inheritance_order():
    records = [rec("base", pr=1), rec("child", base_prs=[1])]
    owns = {"base": {"smeargate": (True, "README.md: prose"), "xsa": (True, "log: config")},
            "child": {"num_layers": (11, "log: config")}}
    absent = {"child": {"xsa": (False, "log: no config key for it in the full config dump")}}
    got = lin.resolve_features(records, owns, absent, {1: "base"})["child"]
    assert got["smeargate"] == (True, "inherited from base")
    assert got["xsa"][0] is False  # the record's own full dump beats the base stack
    assert got["num_layers"] == (11, "log: config")
    assert got["muon"] == (True, "default: naive baseline")
    assert set(got) == set(INTERVENTION_FEATURES)


def test_lineage_cycles_terminate():
    records = [rec("a", base_prs=[2]), rec("b", base_prs=[1])]
    got = lin.resolve_features(records, {"a": {}, "b": {"ema": (True, "x")}}, {}, {1: "a", 2: "b"})
    assert got["a"]["ema"] == (True, "inherited from b")
