"""Causal-structure internals: expert DAG, FCI search, effects, identifiability, rendering."""
