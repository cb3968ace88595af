"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pctkit.components.datasets.voc_layout import write_tiny_voc


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """A tiny VOC + SBD folder (12 training images, 4 in train.txt, 4 validation)."""
    return write_tiny_voc(tmp_path / "voc")
