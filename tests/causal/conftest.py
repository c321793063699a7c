"""Shared pytest fixtures for the pipeline's tests (fixture data lives in tests/causal/data/)."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def fixtures_dir() -> Path:
    return DATA
