"""pctkit.engine.signals: SIGINT/SIGTERM as a request to stop between steps."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pctkit.engine.signals import StopRequest


def test_a_signal_delivered_twice_by_torchrun_is_one_request() -> None:
    """The terminal (or Slurm) and torchrun both deliver one Ctrl-C to a worker: the
    duplicate must not turn "checkpoint, then stop" into "stop at once"."""
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        stop._requested_at -= 2 * StopRequest.DUPLICATE_SECONDS  # as if a second had passed
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs between bytecodes


def test_handlers_are_restored_on_leaving() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) != before[signal.SIGINT]
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == "SIGINT"
    assert {number: signal.getsignal(number) for number in before} == before
