"""Leaderboard mining internals: record folders, feature rules, ablation rows, lineage."""
