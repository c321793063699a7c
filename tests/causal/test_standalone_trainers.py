"""The trainers stand alone: each imports and trains when copied alone into an empty folder, imports nothing from
scripts/, and never prepares or switches data by itself (a missing corpus is an error naming the fix)."""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train_gpt as tg

REPO = Path(__file__).resolve().parents[2]

# Imports the copied trainer, then reports every loaded module named scripts or scripts.*.
_IMPORT_PROBE = (
    "import sys\n"
    "import {module} as m\n"
    "assert m.__file__.startswith({folder!r}), m.__file__\n"
    "print(sorted(n for n in sys.modules if n == 'scripts' or n.startswith('scripts.')))\n"
)


def _alone(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "alone"
    folder.mkdir()
    shutil.copy(REPO / name, folder / name)
    return folder


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the repo must not be importable) and no trainer env config."""
    drop = {"PYTHONPATH"} | {n.upper() for n in tg.Hyperparameters.field_names()} | {"PRESET"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _probe(folder: Path, module: str) -> subprocess.CompletedProcess:
    code = _IMPORT_PROBE.format(module=module, folder=str(folder))
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=_clean_env(), capture_output=True,
                          text=True, timeout=300)


def test_train_gpt_imports_alone_without_scripts(tmp_path):
    folder = _alone(tmp_path, "train_gpt.py")
    proc = _probe(folder, "train_gpt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_train_gpt_mlx_imports_alone_without_scripts_or_torch(tmp_path):
    pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")
    folder = _alone(tmp_path, "train_gpt_mlx.py")
    code = _IMPORT_PROBE.format(module="train_gpt_mlx", folder=str(folder)) + "print('torch' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, env=_clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "False"]


@pytest.mark.parametrize("script", ["train_gpt.py", "train_gpt_mlx.py"])
def test_trainer_trains_alone_given_shard_and_tokenizer_paths(tmp_path, tiny_corpus, script):
    """A copied trainer runs as a script from an empty folder on explicitly named data (2 tiny steps)."""
    if script == "train_gpt_mlx.py":
        pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")
    folder = _alone(tmp_path, script)
    env = {**_clean_env(), "PRESET": "tiny", "ITERATIONS": "2", "RUN_ID": "alone", "VOCAB_SIZE": "1024",
           "DATA_PATH": tiny_corpus.data_path, "TOKENIZER_PATH": tiny_corpus.tokenizer_path}
    proc = subprocess.run([sys.executable, script], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("final_int8_zlib_roundtrip_exact val_loss:")
    assert (folder / "logs" / "alone.txt").is_file()


def test_missing_shards_error_names_the_path_and_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    embedded = tg.preset_config("tiny", data_path=str(tmp_path / "data/datasets/shakespeare_sp1024"))
    with pytest.raises(tg.ShardError) as err:
        tg.resolve_data_paths(embedded)
    assert str(tmp_path / "data/datasets/shakespeare_sp1024") in str(err.value)
    assert "`python scripts/causal/prepare_data.py prepare`" in str(err.value)

    with pytest.raises(tg.ShardError) as err:  # baseline: FineWeb, never the embedded corpus in its place
        tg.resolve_data_paths(tg.Hyperparameters(data_path="./nowhere/fineweb10B_sp1024"))
    msg = str(err.value)
    assert "DATA_PATH=./nowhere/fineweb10B_sp1024 (looked in" in msg and str(tmp_path) in msg
    assert "`python scripts/causal/download_fineweb.py`" in msg

    assert tg.prepare_command("data/datasets/fineweb10B_sp4096") == \
        "python scripts/causal/download_fineweb.py --variant sp4096"
    assert tg.prepare_command("x/synthetic_sp1024") == "python scripts/causal/prepare_data.py prepare --source synthetic"


def test_presets_name_their_data(tmp_path):
    """CPU presets state the embedded corpus; baseline keeps FineWeb; train() raises instead of switching."""
    assert tg.preset_config("tiny").data_path == tg.EMBEDDED_DATA_PATH == tg.preset_config("fast").data_path
    assert tg.preset_config("tiny").tokenizer_path == tg.EMBEDDED_TOKENIZER_PATH
    assert tg.preset_config("baseline").data_path == tg.DEFAULT_DATA_PATH
    cfg = tg.preset_config("tiny", data_path=str(tmp_path / "empty_sp1024"))
    with pytest.raises(tg.ShardError, match="empty_sp1024: no fineweb_train"):
        tg.train(cfg, 1)


def test_relative_data_path_is_found_next_to_the_trainer(tmp_path, monkeypatch, tiny_corpus):
    """From another working directory, a relative DATA_PATH resolves next to train_gpt.py (same corpus)."""
    home = tmp_path / "home"
    shutil.copytree(tiny_corpus.data_path, home / "d" / "synthetic_sp1024")
    shutil.copy(tiny_corpus.tokenizer_path, home / "tok.model")
    monkeypatch.setattr(tg, "__file__", str(home / "train_gpt.py"))
    monkeypatch.chdir(tmp_path)
    cfg = tg.resolve_data_paths(tg.preset_config("tiny", data_path="d/synthetic_sp1024", tokenizer_path="tok.model"))
    assert (cfg.data_path, cfg.tokenizer_path) == (str(home / "d/synthetic_sp1024"), str(home / "tok.model"))


# ----------------------------------------------------------------------------- twin sections

TWIN_SECTIONS = {"data-format", "hyperparameters", "export-format", "data-order", "init-keys", "run-result",
                 "data-setup", "lr-schedule", "horizons", "ns-coefficients", "bos-id", "layer-schedule", "optimizer-group",
                 "constant-inits", "eval-plans", "artifact-export"}
_SECTION = re.compile(r"^# >>> twin: ([a-z-]+) >>>\n(.*?)^# <<< twin: \1 <<<$", re.S | re.M)


def twin_sections(text: str, source: str) -> dict[str, str]:
    """{name: body} of every `# >>> twin: NAME >>>` ... `# <<< twin: NAME <<<` section; each opened one closed."""
    found = _SECTION.findall(text)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"{source}: a twin section appears twice: {names}"
    opened, closed = (len(re.findall(rf"^# {mark} twin:", text, re.M)) for mark in (">>>", "<<<"))
    assert opened == len(found) == closed, f"{source}: unbalanced banners"
    return dict(found)


def twin_differences(a: str, b: str) -> list[str]:
    """Sections that differ between the two trainers' texts, with a short unified diff each."""
    sa, sb = twin_sections(a, "train_gpt.py"), twin_sections(b, "train_gpt_mlx.py")
    out = [f"section {n!r} is only in {'train_gpt.py' if n in sa else 'train_gpt_mlx.py'}" for n in set(sa) ^ set(sb)]
    for name in sorted(set(sa) & set(sb)):
        if sa[name] != sb[name]:
            diff = difflib.unified_diff(sa[name].splitlines(), sb[name].splitlines(), lineterm="", n=0)
            out.append(f"section {name!r} differs:\n" + "\n".join(list(diff)[2:12]))
    return out


def test_twin_sections_are_identical():
    torch_text = (REPO / "train_gpt.py").read_text(encoding="utf-8")
    mlx_text = (REPO / "train_gpt_mlx.py").read_text(encoding="utf-8")
    assert set(twin_sections(torch_text, "train_gpt.py")) == TWIN_SECTIONS
    problems = twin_differences(torch_text, mlx_text)
    assert not problems, "\n".join(problems) + "\ncopy train_gpt.py's section into train_gpt_mlx.py"


def test_twin_check_catches_an_edit_in_one_copy():
    one = "x = 1\n# >>> twin: a >>>\nA = 1\n# <<< twin: a <<<\n# >>> twin: b >>>\nB = 2\n# <<< twin: b <<<\n"
    assert twin_differences(one, one) == []
    edited = twin_differences(one, one.replace("B = 2", "B = 3"))
    assert len(edited) == 1 and edited[0].startswith("section 'b' differs") and "+B = 3" in edited[0]
    assert twin_differences(one, one.split("# >>> twin: b")[0]) == ["section 'b' is only in train_gpt.py"]
    with pytest.raises(AssertionError, match="unbalanced"):
        twin_sections(one.replace("# <<< twin: a <<<", ""), "x.py")


@pytest.fixture(scope="module")
def tm():
    pytest.importorskip("mlx.core", reason="mlx is not installed (pip install -e '.[mlx]')")
    import train_gpt_mlx

    return train_gpt_mlx


@pytest.mark.parametrize("order", ["sequential", "seeded"])
def test_twins_read_the_same_batches(tm, order):
    shards = [(np.arange(3000) * 7 % 1024).astype(np.uint16), (np.arange(1700) * 3 % 1024).astype(np.uint16)]
    loader = tg.TokenLoader(shards, order=order, seed=5)
    stream = tm.TokenStream(shards, order=order, seed=5)
    for _ in range(4):
        x, y = loader.next_batch(512, 64, 1)
        mx_x, mx_y = stream.next_arrays(512, 64, 1)
        np.testing.assert_array_equal(x.numpy(), mx_x)
        np.testing.assert_array_equal(y.numpy(), mx_y)


def test_twins_quantize_to_the_same_bytes(tm):
    """Per-row int8 (2-D), per-tensor int8 (3-D), fp32 control and fp16 small passthroughs: same arrays, same
    stats; each side reads the other's serialized artifact."""
    import torch

    rng = np.random.default_rng(3)
    state = {"blocks.0.mlp.fc.weight": rng.standard_normal((300, 400)).astype(np.float32) * 0.02,
             "conv": rng.standard_normal((40, 50, 40)).astype(np.float32),
             "blocks.0.attn.q_gain": rng.standard_normal(8).astype(np.float32),
             "small": rng.standard_normal((16, 16)).astype(np.float32)}
    state["blocks.0.mlp.fc.weight"][3, 5] = 4.0  # an outlier the percentile clip must cut
    t_obj, t_stats = tg.quantize_state_dict_int8({k: torch.from_numpy(v) for k, v in state.items()})
    m_obj, m_stats = tm.quantize_state_dict_int8(state)
    assert m_stats == t_stats and set(m_obj) == set(t_obj)
    for part in ("quantized", "scales", "passthrough"):
        assert set(m_obj[part]) == set(t_obj[part])
        for name, ref in t_obj[part].items():
            mine = m_obj[part][name]
            assert mine.dtype == ref.numpy().dtype and mine.tobytes() == ref.numpy().tobytes(), (part, name)
    for key in ("__quant_format__", "dtypes", "qmeta", "passthrough_orig_dtypes"):
        assert m_obj.get(key) == t_obj.get(key), key
    m_blob, _ = tm.serialize_int8_zlib(state)
    t_blob, _ = tg.serialize_int8_zlib({k: torch.from_numpy(v) for k, v in state.items()})
    from_mlx, from_torch = tg.deserialize_int8_zlib(m_blob), tm.deserialize_int8_zlib(t_blob)
    for name in state:
        np.testing.assert_array_equal(from_mlx[name].float().numpy(), from_torch[name])


def test_twins_share_the_run_result_shape(tm):
    fields = lambda cls: [(f.name, f.default) for f in dataclasses.fields(cls)]  # noqa: E731
    assert str(fields(tm.RunResult)) == str(fields(tg.RunResult))  # str: nan != nan
    assert tm.RUN_STATUSES == tg.RUN_STATUSES and tm._param_seed(3, "a.b") == tg._param_seed(3, "a.b")
