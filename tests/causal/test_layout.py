"""The package's layout promises: stage CLIs at the top level answer --help, internals stay small."""
from __future__ import annotations

import ast
import importlib

import pytest

from scripts.causal.core.paths import REPO_ROOT

PKG = REPO_ROOT / "scripts" / "causal"
STAGES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_cli_answers_help(stage, capsys):
    module = importlib.import_module(f"scripts.causal.{stage}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_are_small_documented_and_leave_sys_path_alone(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 500, f"{path.name} has {len(text.splitlines())} lines (max 500)"
    assert ast.get_docstring(ast.parse(text)), f"{path} has no module docstring saying its role"
    assert "sys.path.insert" not in text, f"{path}: the package is installed; no sys.path edits"
