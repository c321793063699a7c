"""Tests for scripts/causal/download_fineweb.py: argument handling and the (remote, local) layout, no network."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scripts.causal import download_fineweb as dl
from scripts.causal.core.errors import ConfigError, DataFormatError, StageError
from scripts.causal.download_fineweb import FilePair, dataset_dir_for_variant, plan_downloads

# The shape of upstream's published manifest.json (only the fields the downloader reads).
MANIFEST = {
    "datasets": [
        {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
         "stats": {"files_train": 195, "files_val": 1}},
        {"name": "fineweb10B_byte260", "tokenizer_name": "pure_byte_260",
         "stats": {"files_train": 61, "files_val": 2}},
    ],
    "tokenizers": [
        {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
         "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
        {"name": "pure_byte_260", "path": "tokenizers/fineweb_pure_byte_260.json"},
    ],
}


def test_parser_defaults_match_upstream():
    args = dl.build_parser().parse_args([])
    assert (args.variant, args.train_shards, args.train_shards_positional) == ("sp1024", 80, None)
    assert args.data_dir.name == "data" and not args.with_docs and not args.skip_manifest
    args = dl.build_parser().parse_args(["3", "--variant", "sp1024"])
    assert args.train_shards_positional == 3  # upstream's old positional form still works


def test_plan_layout_for_sp1024(tmp_path):
    plan = plan_downloads(train_shards=2, data_dir=tmp_path, manifest=MANIFEST)
    d = tmp_path / "datasets" / "fineweb10B_sp1024"
    assert plan == [
        FilePair("datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin", d / "fineweb_val_000000.bin"),
        FilePair("datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin", d / "fineweb_train_000000.bin"),
        FilePair("datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin", d / "fineweb_train_000001.bin"),
        FilePair("datasets/tokenizers/fineweb_1024_bpe.model", tmp_path / "tokenizers" / "fineweb_1024_bpe.model"),
        FilePair("datasets/tokenizers/fineweb_1024_bpe.vocab", tmp_path / "tokenizers" / "fineweb_1024_bpe.vocab"),
    ]
    # the local layout is exactly what the trainer's defaults and data.fineweb_paths() expect
    from scripts.causal.data.shards import fineweb_paths
    paths = fineweb_paths(tmp_path)
    assert Path(paths.data_path) == d and Path(paths.tokenizer_path) == plan[3].local


def test_plan_default_shard_count_and_val_always_included(tmp_path):
    plan = plan_downloads(data_dir=tmp_path, manifest=MANIFEST)
    names = [p.local.name for p in plan]
    assert names.count("fineweb_val_000000.bin") == 1
    assert sum(n.startswith("fineweb_train_") for n in names) == 80
    assert names[-3] == "fineweb_train_000079.bin"
    zero = plan_downloads(train_shards=0, data_dir=tmp_path, manifest=MANIFEST)
    assert [p.local.name for p in zero] == ["fineweb_val_000000.bin", "fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab"]


def test_plan_is_manifest_driven_for_other_variants(tmp_path):
    plan = plan_downloads(variant="byte260", train_shards=1, data_dir=tmp_path, manifest=MANIFEST, with_docs=True)
    assert [p.remote for p in plan] == [
        "datasets/docs_selected.jsonl",
        "datasets/docs_selected.source_manifest.json",
        "datasets/datasets/fineweb10B_byte260/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_byte260/fineweb_val_000001.bin",
        "datasets/datasets/fineweb10B_byte260/fineweb_train_000000.bin",
        "datasets/tokenizers/fineweb_pure_byte_260.json",
    ]
    assert plan[0].local == tmp_path / "docs_selected.jsonl"


def test_plan_without_manifest_and_with_custom_root(tmp_path):
    plan = plan_downloads(train_shards=1, data_dir=tmp_path, remote_root="my_export")
    assert plan[0] == FilePair("my_export/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
                               tmp_path / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin")
    assert plan[-1].remote == "my_export/tokenizers/fineweb_1024_bpe.vocab"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"train_shards": -1}, ConfigError, "--train-shards must be non-negative, got -1"),
        ({"train_shards": 196, "manifest": MANIFEST}, ConfigError, "sp1024 only has 195 training shards"),
        ({"variant": "gpt2"}, ConfigError, r"unsupported --variant 'gpt2'; expected sp<VOCAB_SIZE>"),
        ({"variant": "sp4096", "manifest": MANIFEST}, DataFormatError, "dataset 'fineweb10B_sp4096' not listed"),
    ],
)
def test_plan_rejects_bad_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        plan_downloads(data_dir=tmp_path, **kwargs)


def test_dataset_dir_for_variant():
    assert dataset_dir_for_variant("sp1024") == "fineweb10B_sp1024"
    assert dataset_dir_for_variant("char") == "fineweb10B_char"


def test_dry_run_prints_the_plan_using_a_local_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    rc = dl.main(["--dry-run", "--train-shards", "1", "--data-dir", str(tmp_path)], env={})
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 4
    assert lines[0] == (f"willdepueoai/parameter-golf:datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin -> "
                        f"{tmp_path / 'datasets' / 'fineweb10B_sp1024' / 'fineweb_val_000000.bin'}")
    rc = dl.main(["--dry-run", "2", "--data-dir", str(tmp_path)], env={"MATCHED_FINEWEB_REPO_ID": "me/golf"})
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 5 and lines[0].startswith("me/golf:")


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = dl.main(["--train-shards", "-2", "--dry-run", "--data-dir", str(tmp_path)], env={})
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "must be non-negative" in err
    rc = dl.main(["--skip-manifest", "--data-dir", str(tmp_path)], env={})
    assert rc == 1 and "--skip-manifest given but no local manifest.json" in capsys.readouterr().err


def test_existing_files_are_kept_without_network(tmp_path):
    local = tmp_path / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"already here")
    assert dl.fetch(FilePair("datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin", local),
                    repo_id="none/none") is False
    assert local.read_bytes() == b"already here"


def test_fetch_links_from_the_hub_cache(tmp_path):
    cache = tmp_path / "hub" / "blob.bin"
    cache.parent.mkdir()
    cache.write_bytes(b"shard bytes")
    calls = []

    def download(**kw):  # stands in for hf_hub_download, which needs the network
        calls.append(kw)
        return str(cache)

    local = tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model"
    assert dl.fetch(FilePair("datasets/tokenizers/fineweb_1024_bpe.model", local), repo_id="a/b", download=download)
    assert local.read_bytes() == b"shard bytes"
    assert calls == [{"repo_id": "a/b", "filename": "fineweb_1024_bpe.model", "subfolder": "datasets/tokenizers",
                      "repo_type": "dataset"}]


def test_missing_huggingface_hub_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(StageError, match=r"needs huggingface_hub.*pip install huggingface_hub"):
        dl.fetch(FilePair("datasets/manifest.json", tmp_path / "manifest.json"), repo_id="a/b")
