"""Peak memory per stage: allocated device memory on CUDA, resident memory on the CPU."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def memory_kind(device: torch.device) -> str:
    """What :func:`peak_memory_gib` measures on ``device``."""
    return "device memory (allocated)" if device.type == "cuda" else "resident memory (RSS)"


def peak_memory_gib(device: torch.device) -> float:
    """The peak since the last :func:`reset_peak_memory`, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return _peak_resident_bytes() / 2**30


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring a new peak (where the platform allows: Linux resets the resident
    peak through ``/proc/self/clear_refs``; elsewhere the peak is the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def _peak_resident_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


M_TOP_PAD = -2
"""glibc's ``mallopt`` parameter: extra memory kept at the top of the heap when it grows."""
TOP_PAD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the
    kernel at once; returns whether it could (glibc only).

    A CPU training step frees and allocates the same large temporaries every iteration;
    by default glibc hands them back and the next step faults them in again, which cost
    the PCT step about 0.17 of a supervised step on the quickstart network
    (benchmarks/README.md). The price: up to 256 MiB more resident memory.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
