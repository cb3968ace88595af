"""How two sets of named tensors differ, in words (a leaf module: weights files and
pretrained backbones both explain a mismatch this way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _listed(names: Sequence[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def mismatch(
    expected: Mapping[str, Sequence[int]],
    found: Mapping[str, Sequence[int]],
    *,
    found_in: str = "the file",
    expected_in: str = "the model",
    limit: int = 4,
) -> str:
    """What keeps ``found`` (name -> shape, from ``found_in``) from loading where
    ``expected`` (``expected_in``) is wanted: tensors missing, unexpected, or of another
    shape, the first few named; ``""`` when they fit."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = sorted(
        f"{name} {list(found[name])} in {found_in}, {list(expected[name])} in {expected_in}"
        for name in expected.keys() & found.keys()
        if list(found[name]) != list(expected[name])
    )
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing from {found_in}: {_listed(missing, limit)}")
    if unexpected:
        parts.append(f"{len(unexpected)} not in {expected_in}: {_listed(unexpected, limit)}")
    if reshaped:
        parts.append(f"{len(reshaped)} of another shape: {_listed(reshaped, 3)}")
    return "; ".join(parts)
