"""Stage reuse: fresh only with the same input hashes, options and untouched outputs."""
from __future__ import annotations

from scripts.causal.core.stage_cache import StageCache


def test_fresh_until_input_option_or_output_changes(tmp_path):
    inp, out = tmp_path / "in.json", tmp_path / "out.json"
    inp.write_text("a")
    out.write_text("result")
    cache = StageCache(tmp_path / "stage_cache.json")
    kw = dict(inputs=[inp], options={"alpha": 0.05, "bootstrap": 100}, outputs=[out])
    assert not cache.is_fresh("dag", **kw)
    cache.record("dag", **kw)
    assert StageCache(tmp_path / "stage_cache.json").is_fresh("dag", **kw)  # survives a reload
    assert not cache.is_fresh("dag", **{**kw, "options": {"alpha": 0.05, "bootstrap": 50}})
    inp.write_text("b")
    assert not cache.is_fresh("dag", **kw)
    inp.write_text("a")
    assert cache.is_fresh("dag", **kw)
    out.write_text("edited by hand")
    assert not cache.is_fresh("dag", **kw)
    out.unlink()
    assert not cache.is_fresh("dag", **kw)
