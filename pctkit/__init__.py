"""pctkit: progressive cross training for semi-and-weakly supervised segmentation."""

from __future__ import annotations

from typing import Any

from pctkit.version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy: `import pctkit` (and the CLI's start) must not import torch for this.
    if name == "load_model":
        from pctkit.engine.inference import load_model

        return load_model
    raise AttributeError(f"module 'pctkit' has no attribute {name!r}")
