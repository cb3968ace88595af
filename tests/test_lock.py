"""pctkit.artifacts.lock: one writer per run directory, and no stale lock after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pctkit.artifacts.lock import RunLock, RunLockedError

pytest.importorskip("fcntl")  # POSIX only: runs are not locked elsewhere


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "run" / ".lock"
    with RunLock.acquire(path, "pctkit run of tiny"):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "pctkit run of tiny"
        with pytest.raises(RunLockedError) as raised:
            RunLock.acquire(path, "pctkit resume of tiny")
        message = str(raised.value)
        assert f"is in use by process {os.getpid()} on host" in message and "(pctkit run of tiny)" in message
        assert f"kill {os.getpid()}" in message and f"pctkit resume {path.parent}" in message
        assert "--out" in message
        assert json.loads(path.read_text()) == holder  # the refused process wrote nothing
    # Released: the next writer gets it.
    with RunLock.acquire(path, "pctkit resume of tiny"):
        assert json.loads(path.read_text())["command"] == "pctkit resume of tiny"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pctkit.artifacts.lock import RunLock\n"
        "lock = RunLock.acquire(Path(sys.argv[1]), 'holder')\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            RunLock.acquire(path, "second")
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # the OS drops the lock with the process
        try:
            RunLock.acquire(path, "after the crash").release()
            break
        except RunLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
