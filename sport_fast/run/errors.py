"""A run's user-facing errors: each one line naming what is wrong, printed by the entry point with exit 2."""
from __future__ import annotations


class SetupError(RuntimeError):
    """A run cannot start (an empty or corrupt task file, an unreachable judge, ...)."""


class ResumeError(ValueError):
    """The run directory holds a run that this command cannot resume (another config or backends)."""
