"""The decision metric must be able to see the change: an evaluation-only arm is scored on its own stage.

An evaluation change (``sliding_eval``, ``ttt_*``: registry transfer class ``evaluation``, or an ad-hoc override
of evaluation fields only) trains exactly like its control, so on a deterministic backend its pre-quant and
post-quant round-trip scores equal the control's bit for bit: Δ ≡ 0 by construction, whatever the change does at
evaluation. Such an arm is refused under ``val_bpb`` / ``post_quant_val_bpb`` (and under a stage it does not
reach) with a message naming the arm, the metric and the stage to use: ``final_val_bpb`` (each run's scored
stage) or the arm's own stage (``sliding_val_bpb``, ``ttt_val_bpb``).

API: ``eval_only(name, overrides)``, ``check_metric_fits(treatments, base_config, metric, source=...)``.
"""
from __future__ import annotations

from collections.abc import Mapping

from scripts.causal.core.errors import ConfigError
from scripts.causal.stats.pairing import FINAL_METRIC, scored_stage

__all__ = ["EVAL_FIELDS", "check_metric_fits", "eval_only"]

#: Config fields that act only at evaluation time (after training and the export round trip).
EVAL_FIELDS = ("eval_stride", "ttt", "ttt_chunk_tokens", "ttt_lr", "ttt_epochs", "ttt_lora_rank", "ttt_momentum",
               "ttt_batch_seqs", "ttt_grad_clip")


def _is_eval_field(key: str) -> bool:
    return key in EVAL_FIELDS or key.startswith("ttt_")


def eval_only(name: str, overrides: Mapping) -> bool:
    """Whether arm ``name`` changes only the evaluation stage (registry class ``evaluation``, or an ad-hoc
    override of evaluation fields only)."""
    from scripts.causal.screen.registry import ADHOC_PREFIX, get_intervention

    if not name.startswith(ADHOC_PREFIX):
        try:
            return get_intervention(name).transfer == "evaluation"
        except ConfigError:
            pass
    return bool(overrides) and all(_is_eval_field(str(k)) for k in overrides)


def check_metric_fits(treatments: Mapping[str, Mapping], base_config: Mapping, metric: str, *,
                      source: str = "the screen") -> None:
    """ConfigError when ``metric`` cannot see an evaluation-only arm of ``treatments`` ({name: overrides})."""
    if metric == FINAL_METRIC:
        return
    bad = []
    for name, ov in treatments.items():
        if not eval_only(str(name), ov or {}):
            continue
        stage = scored_stage({**dict(base_config), **dict(ov or {})})
        if metric != stage:
            bad.append(f"arm {name!r} changes only the evaluation ({', '.join(sorted(ov or {}))}), scored on "
                       f"{stage}; metric {metric!r} cannot see it (its training and round trip are the control's)")
    if bad:
        raise ConfigError(f"{source}: " + "; ".join(bad) + f". Pre-register --metric {FINAL_METRIC} (each run's "
                          "scored stage) or the arm's own stage, or screen those arms separately")
