"""Where a result came from: the git commit of the code and a one-line hardware summary."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from scripts.causal.core.paths import REPO_ROOT


def git_commit(repo: str | Path = REPO_ROOT) -> str | None:
    """HEAD's sha (12 hex digits), with '+dirty' when tracked files differ from it; None outside a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


def hardware_summary(backend: str) -> str:
    """e.g. "Linux x86_64, 2 CPU cores, no GPU (fp32 on CPU)"."""
    parts = [f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPU cores"]
    if backend == "torch":
        try:
            import torch

            if torch.cuda.is_available():
                parts.append(f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}")
            else:
                parts.append("no GPU (fp32 on CPU)")
        except ImportError:
            pass
    return ", ".join(parts)
