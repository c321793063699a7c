"""Causal screening and ablation pipeline for Parameter Golf.

Stages (each an importable module with a thin CLI):
  extract_interventions -> estimate_dag / identifiability_check / select_interventions
  -> experiment_runner (trainer + interventions) -> statistical_analysis -> promote -> run_pipeline.
Shared data shapes live in `schema.py`; all errors derive from `errors.CausalPipelineError`.
"""
