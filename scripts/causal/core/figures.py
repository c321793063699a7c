"""Writing a finished matplotlib figure: laid out, its folder made, saved, closed (one place for every plot)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110, **savefig_kw: Any) -> Path:
    """``fig`` laid out tightly and written to ``path`` (parent folders made), then closed; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kw)
    plt.close(fig)
    return path
