"""The error every layer raises for bad input: a stage, a command or the service cannot do its job
with what it was given. `reprokit.core.running` turns it into one error line and exit status 1."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot produce its outputs from the inputs it was given."""
