"""Forest plot of an ablation_results fixture."""
from __future__ import annotations

from scripts.causal import plot_forest
from scripts.causal.core.schema import read_json


def test_clip_limit_ignores_the_dwarfing_sanity_arm(fixtures_dir):
    rows = read_json(fixtures_dir / "pipeline" / "ablation_results.json")["results"]
    lim = plot_forest.clip_limit(rows)
    # largest non-outlier extent is mlp_mult_3's CI low, |-0.019853|
    assert lim is not None and abs(lim - 1.6 * 0.019853) < 1e-12
    assert plot_forest.clip_limit([r for r in rows if r["intervention"] != "sanity_frozen_matrices"]) is None


def test_forest_png_written(fixtures_dir, tmp_path):
    rc = plot_forest.main(["--input", str(fixtures_dir / "pipeline" / "ablation_results.json"),
                           "--output", str(tmp_path / "f.png")])
    assert rc == 0 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
