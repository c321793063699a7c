"""The pipeline's last step: plots, promotion (dry-run diff by default), Parameter Golf snippets and the report.

Copies the final screen's runs.json and ablation_results.json to the run folder's top level, so the
report and its source numbers sit side by side (report.md's table is rendered from that same file).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from scripts.causal import report as rep
from scripts.causal.core.errors import CausalPipelineError
from scripts.causal.core.schema import PipelineOptions, read_json, write_json
from scripts.causal.plot_forest import plot_forest
from scripts.causal.plot_losses import plot_losses

Log = Callable[[str], None]


def promotion_stage(opts: PipelineOptions, confirmed: Sequence[str], ablation_path: Path, *, screen_id: str,
                    log: Log) -> dict:
    """Promote confirmed interventions: a dry-run diff of train_gpt.py, or the write with --apply-promotion."""
    if not opts.promote:
        return {"applied": False, "promoted": [], "note": "promotion disabled (--no-promote)"}
    if not confirmed:
        return {"applied": False, "promoted": [], "note": "Nothing was promoted: no change was confirmed."}
    try:
        from scripts.causal import promote
    except ImportError as exc:
        return {"applied": False, "promoted": list(confirmed), "note": f"promote.py unavailable ({exc})"}
    try:
        diff = promote.promote(ablation_path, apply=opts.apply_promotion, interventions=list(confirmed),
                               screen_id=screen_id)
    except CausalPipelineError as exc:
        log(f"promotion: {exc}")
        return {"applied": False, "promoted": [], "note": f"promotion refused: {exc}"}
    log(f"promotion: {'applied to' if opts.apply_promotion else 'dry-run diff for'} train_gpt.py: "
        f"{', '.join(confirmed)}")
    return {"applied": bool(opts.apply_promotion), "promoted": list(confirmed), "diff": str(diff or "")}


def snippets_for(decided: Mapping) -> list[dict]:
    """Both Parameter Golf claim lines of each confirmed change, as the analysis computed them."""
    return rep.claim_snippets(decided)


def small_png(src: Path, dest: Path, *, max_width: int = 1600) -> Path:
    """Copy a PNG, downscaled to ``max_width`` and palette-quantised (keeps committed examples small)."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
        im.quantize(colors=256).save(dest, optimize=True)
    return dest


def _versions(records: Sequence[Any]) -> dict:
    for r in records:
        if getattr(r, "versions", None):
            return dict(r.versions)
    return {}


def finish(opts: PipelineOptions, *, out: Path, final: Mapping, cycles: Sequence[Mapping], stop: str, clock: Any,
           started: str, command: str, run_info: Callable[..., Any], log: Log) -> dict:
    """Write plots/, report.json and report.md for the final cycle; returns the pipeline summary."""
    plots_dir = out / "plots"
    runs_path = shutil.copyfile(final["runs_path"], out / "runs.json")
    ablation_src = Path(final["screen_dir"]) / "ablation_results.json"
    ablation_path = shutil.copyfile(ablation_src, out / "ablation_results.json")
    ablation = read_json(ablation_path)
    runs = read_json(runs_path)["runs"]
    records = final["records"]
    plots = {"forest": str(plot_forest(ablation, plots_dir / "forest.png",
                                       title=f"{opts.run_id} screen").relative_to(out))}
    for p in plot_losses(runs, plots_dir, title_suffix=f" ({opts.preset}, {opts.backend})"):
        plots[p.stem] = str(p.relative_to(out))
    confirmation = final.get("confirmation")
    if confirmation and confirmation.get("results"):
        plots["forest_confirm"] = str(plot_forest(confirmation, plots_dir / "forest_confirm.png",
                                                  title="confirmation (fresh seeds)").relative_to(out))
    causal = final["causal"]
    dag_png = small_png(causal["png"], plots_dir / "dag.png")
    plots["dag"] = str(Path(dag_png).relative_to(out))
    nats = rep.nats_per_bpb_from_runs([r.__dict__ for r in records])
    decided = confirmation if confirmation and confirmation.get("results") else ablation
    confirmed = [r["intervention"] for r in decided["results"] if r.get("decision") == "confirmed"]
    promo_src = Path(final["screen_dir"]) / ("confirm" if decided is confirmation else "") / "ablation_results.json"
    promotion = promotion_stage(opts, confirmed, promo_src, screen_id=opts.run_id, log=log)
    snippets = snippets_for(decided)
    info = run_info(opts, started=started, command=command, versions=_versions(records),
                    interventions=tuple(final.get("arms") or ()))
    wall = clock.elapsed()
    report = rep.build_report(
        info=info, ablation=ablation, nats_per_bpb=nats, confirmation=confirmation,
        identifiability=causal["identifiability"], ranking=causal["ranking"],
        dag={"png": plots["dag"], "cycle": len(cycles), "n_rows": causal["dag"]["n_rows"],
             "n_experiment_rows": causal["dag"]["preparation"]["n_experiment_rows"], "diff": causal["diff"]},
        promotion=promotion, snippets=snippets, plots=plots, cycles=cycles, wall_s=wall)
    report["stop"] = stop
    walls = [float(r.wall_s) for r in records if r.wall_s]
    report["runs_summary"] = {"n_runs": len(records), "n_ok": sum(r.status == "ok" for r in records),
                              "train_eval_s": sum(walls), "mean_run_s": sum(walls) / len(walls) if walls else None}
    report["options"] = opts
    md_path, json_path = rep.write_report(report, out)
    log(f"report: {md_path} ({len(plots)} plots)")
    return {"report_md": md_path, "report_json": json_path, "ablation": ablation_path, "runs": runs_path,
            "plots": {k: out / v for k, v in plots.items()}, "stop": stop, "wall_s": clock.elapsed(),
            "decisions": {r["intervention"]: r["decision"] for r in ablation["results"]},
            "confirmed": confirmed}


def write_summary(out: Path, summary: Mapping) -> Path:
    return write_json(out / "pipeline_summary.json", dict(summary))
