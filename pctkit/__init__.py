"""pctkit: progressive cross training for semi-and-weakly supervised segmentation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
