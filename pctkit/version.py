"""The pctkit version (a leaf module: weights and bundles record it)."""

__version__ = "0.2.0"
