"""Exception tree for the pipeline: every error a user can see derives from CausalPipelineError.

Messages name the file or field, the bad value, what was expected and, where possible, the fix.
CLIs catch CausalPipelineError, print one stderr line and exit 1 (``--debug`` re-raises).
"""
from __future__ import annotations


class CausalPipelineError(Exception):
    """Base class for all errors raised by scripts.causal."""


class DataFormatError(CausalPipelineError, ValueError):
    """A data file (shard, tokenizer, JSON output) is missing, corrupt or of the wrong version."""


class ConfigError(CausalPipelineError, ValueError):
    """An unknown config key, a value of the wrong type, or an invalid combination of settings."""


class SchemaVersionError(DataFormatError):
    """A JSON output carries a schema_version this code does not read."""


class StageError(CausalPipelineError, RuntimeError):
    """A pipeline stage failed; the message names the stage, the file and the fix."""
