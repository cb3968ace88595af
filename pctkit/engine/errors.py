"""The errors that end a run, importable without torch (the CLI catches them)."""

from __future__ import annotations

from pathlib import Path


class RunError(RuntimeError):
    """A run cannot start or continue (existing directory, changed recipe, ...)."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM (or a data error): the current step finished and a checkpoint was
    written. ``run_dir`` names the run to resume, where known."""

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir
