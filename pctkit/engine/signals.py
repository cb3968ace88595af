"""SIGINT/SIGTERM as a request to stop between steps."""

from __future__ import annotations

import contextlib
import signal
import time
from types import FrameType
from typing import Any


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps.

    A second signal stops at once, unless it follows the first within
    :attr:`DUPLICATE_SECONDS`: under torchrun one Ctrl-C (or ``scancel``) reaches a
    worker twice, from the terminal or Slurm and again from torchrun, which forwards it.
    """

    DUPLICATE_SECONDS = 1.0

    def __init__(self) -> None:
        self.requested: str | None = None
        self._requested_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            if time.monotonic() - self._requested_at < self.DUPLICATE_SECONDS:
                return  # the same request, delivered twice
            raise KeyboardInterrupt  # a second request: stop at once
        self.requested = signal.Signals(signal_number).name
        self._requested_at = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
