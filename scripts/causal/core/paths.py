"""Well-known locations: the repository root and the default data/results/dags folders."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = REPO_ROOT / "data"
RESULTS_DIR = REPO_ROOT / "results"
DAGS_DIR = REPO_ROOT / "dags"
TRAIN_GPT = REPO_ROOT / "train_gpt.py"
EVIDENCE_DIR = REPO_ROOT / "evidence" / "verified"  # the verified evidence table, one JSON file per record
SHARED_RECORDS = REPO_ROOT.parent / "shared" / "records"  # the leaderboard snapshot beside the checkout
