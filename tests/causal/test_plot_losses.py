"""Loss-curve plots from a hand-written runs.json fixture (tests/causal/data/pipeline/runs.json)."""
from __future__ import annotations

import numpy as np
import pytest

from scripts.causal import plot_losses
from scripts.causal.core.errors import DataFormatError


@pytest.fixture
def runs(fixtures_dir):
    return plot_losses.load_runs(fixtures_dir / "pipeline" / "runs.json")


def test_group_by_intervention_puts_control_rows_together(runs):
    groups = plot_losses.group_by_intervention(runs)
    assert list(groups) == ["control", "aa", "sanity_frozen_matrices", "mlp_mult_3"]
    assert [r["seed"] for r in groups["control"]] == [11, 12, 13]


def test_moving_average_by_hand():
    np.testing.assert_allclose(plot_losses.moving_average([1, 2, 3, 4], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(plot_losses.moving_average([5, 7], 1), [5, 7])


def test_curve_stats_skip_failed_runs(runs):
    rows = plot_losses.group_by_intervention(runs)["sanity_frozen_matrices"]
    assert sum(r["status"] == "ok" for r in rows) == 2
    steps, mean, sd = plot_losses.curve_stats(rows)
    assert plot_losses.final_pairs(rows, plot_losses.group_by_intervention(runs)["control"]) == [
        (11, 1.595, 1.806), (12, 1.601, 1.81)]  # seed 13 diverged: no pair
    ok = [r["step_losses"] for r in rows if r["status"] == "ok"]
    np.testing.assert_allclose(mean, np.mean(ok, axis=0))
    np.testing.assert_allclose(sd, np.std(ok, axis=0, ddof=1))
    assert steps[0] == 1 and steps[-1] == 8


def test_plot_losses_writes_one_png_per_intervention(runs, tmp_path):
    paths = plot_losses.plot_losses(runs, tmp_path)
    assert [p.name for p in paths] == ["loss_aa.png", "loss_sanity_frozen_matrices.png", "loss_mlp_mult_3.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < p.stat().st_size < 300_000


def test_unknown_intervention_is_named_in_the_error(runs, tmp_path):
    with pytest.raises(DataFormatError, match="nope.*present"):
        plot_losses.plot_losses(runs, tmp_path, interventions=["nope"])


def test_cli_on_runs_json(fixtures_dir, tmp_path, capsys):
    rc = plot_losses.main(["--input", str(fixtures_dir / "pipeline" / "runs.json"), "--out-dir", str(tmp_path),
                           "--interventions", "aa"])
    assert rc == 0 and (tmp_path / "loss_aa.png").is_file()
    assert capsys.readouterr().out.strip().endswith("loss_aa.png")


def test_cli_missing_file_is_one_line_exit_1(tmp_path, capsys):
    rc = plot_losses.main(["--input", str(tmp_path / "none.json"), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "none.json: file not found" in err and len(err.strip().splitlines()) == 1


def test_cli_on_a_ledger_screen(runs, tmp_path, capsys):
    from scripts.causal.core.schema import RunRecord
    from scripts.causal.screen.ledger import Ledger

    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.register_screen("s1", {"seeds": [11, 12, 13]})
        for r in runs:
            ledger.record_run(RunRecord(screen_id="s1", intervention=r["intervention"], arm=r["arm"], seed=r["seed"],
                                        backend="torch", config_hash=r["intervention"], status=r["status"],
                                        val_bpb=r["val_bpb"], step_losses=r["step_losses"],
                                        val_history=r["val_history"]))
    rc = plot_losses.main(["--ledger", str(path), "--screen-id", "s1", "--out-dir", str(tmp_path / "p")])
    assert rc == 0 and (tmp_path / "p" / "loss_mlp_mult_3.png").is_file()
    assert plot_losses.main(["--ledger", str(path), "--screen-id", "nope", "--out-dir", str(tmp_path)]) == 1
    assert "no runs for screen 'nope'" in capsys.readouterr().err
