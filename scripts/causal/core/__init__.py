"""Shared plumbing: errors, data shapes, paths, CLI helpers and the stage cache."""
