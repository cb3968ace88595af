"""Metrics records as TensorBoard event files, where the tensorboard package is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write event files) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_scalars(record: dict[str, Any], class_names: list[str] | None = None) -> dict[str, float]:
    """The numbers of one metrics record, by TensorBoard tag (``stage/terms/loss_p2h``,
    ``stage/method/J/<class>``, ``stage/nets/<net>/miou``)."""
    stage = str(record.get("stage", "run"))
    scalars: dict[str, float] = {}

    def walk(tag: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            scalars[tag] = float(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{tag}/{key}", inner)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                name = class_names[index] if class_names and index < len(class_names) else str(index)
                walk(f"{tag}/{name}", inner)

    for key, value in record.items():
        if key not in ("kind", "time", "stage", "iteration", "selects"):
            walk(f"{stage}/{key}", value)
    return scalars


class TensorBoardLog:
    """Writes metrics records as TensorBoard event files (``tensorboard --logdir``).

    Create it with :meth:`open` only where :func:`tensorboard_available`; every record
    is flushed at once, so the event files are as current as ``metrics.jsonl``.
    """

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    @classmethod
    def open(cls, log_dir: Path) -> TensorBoardLog | None:
        """A log in ``log_dir``, or ``None`` without the tensorboard package."""
        return cls(log_dir) if tensorboard_available() else None

    def write(self, record: dict[str, Any], class_names: list[str] | None = None) -> None:
        """Add one record's scalars at its iteration (0 for records without one)."""
        step = int(record.get("iteration", 0))
        walltime = record.get("time")
        for tag, value in tensorboard_scalars(record, class_names).items():
            self.writer.add_scalar(tag, value, step, walltime=walltime)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
