"""One writer per run directory: an OS file lock on ``<run>/.lock``.

The lock is an advisory ``flock`` on an open file: the operating system drops it when
its process ends, however it ends, so a crash never leaves a stale lock behind. The
holder writes who it is (PID, host, command, since when) into the file, so a refused
process can say whom it met. A refused process writes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from pctkit.artifacts.io import ArtifactError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunLockedError(ArtifactError):
    """Another process holds the run directory."""


class RunLock:
    """The exclusive lock of one run directory, held until :meth:`release` (or the
    process's end)."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    @classmethod
    def acquire(cls, path: Path, purpose: str) -> RunLock:
        """Take the lock at ``path`` (created if absent) or raise :class:`RunLockedError`
        naming its holder. ``purpose`` says what the holder does (``"pctkit run"``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while the lock lives
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(handle)
                handle.close()
                raise RunLockedError(_refusal(path.parent, holder)) from None
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": purpose,
        }
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        return cls(path, handle)

    @staticmethod
    def check(path: Path) -> None:
        """Raise :class:`RunLockedError` if another process holds the lock at ``path``;
        creates nothing."""
        if fcntl is None or not path.is_file():
            return
        with open(path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunLockedError(_refusal(path.parent, _read_holder(handle))) from None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def release(self) -> None:
        """Let go of the lock (closing the file drops it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _refusal(run_dir: Path, holder: dict[str, Any]) -> str:
    who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    what = f" ({holder['command']})" if holder.get("command") else ""
    since = f" since {holder['since']}" if holder.get("since") else ""
    here = socket.gethostname() == holder.get("host")
    stop = f"stop it (kill {holder.get('pid')})" if here else "stop it on its host"
    return (
        f"run directory {run_dir} is in use by {who}{what}{since}. Only one process may write a run: "
        f"wait for it to finish, or {stop} and then `pctkit resume {run_dir}`; "
        "to train elsewhere, choose another directory with --out."
    )
