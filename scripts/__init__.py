"""Top-level namespace for the project's scripts; the pipeline lives in `scripts.causal`."""
