"""The engine: runs recipes, stage by stage (:func:`run`, :func:`resume`).

Names are imported on first use, so ``import pctkit.engine`` stays cheap until one is
needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pctkit.engine.errors import RunError
    from pctkit.engine.run import RunOutcome, resume, run
    from pctkit.methods.dynamic_evaluation import DynamicEvaluation

_EXPORTS = {
    "run": "pctkit.engine.run",
    "resume": "pctkit.engine.run",
    "RunError": "pctkit.engine.errors",
    "RunOutcome": "pctkit.engine.run",
    "DynamicEvaluation": "pctkit.methods.dynamic_evaluation",
}

__all__ = ["DynamicEvaluation", "RunError", "RunOutcome", "resume", "run"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pctkit.engine' has no attribute {name!r}")
