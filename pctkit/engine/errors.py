"""The errors that end a run, importable without torch (the CLI catches them)."""

from __future__ import annotations

from pathlib import Path


class RunError(RuntimeError):
    """A run cannot start or continue (existing directory, changed recipe, ...)."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM (or a data error): the current step finished and a checkpoint was
    written. ``run_dir`` names the run to resume, where known; ``exit_code`` is the
    CLI's (130 for a signal, 1 for a data error)."""

    def __init__(self, message: str, run_dir: Path | None = None, exit_code: int = 130) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.exit_code = exit_code
