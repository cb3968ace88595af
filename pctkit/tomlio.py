"""TOML in and out: ``tomllib`` (``tomli`` before Python 3.11) reads, ``tomli-w`` writes.

A leaf module: recipes and export bundles both write TOML through it.
"""

from __future__ import annotations

import sys
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text."""
    return tomllib.loads(text)


def dumps(data: dict[str, Any], header: str = "") -> str:
    """TOML text of ``data`` after ``header`` as comment lines. ``None`` values, which
    TOML cannot hold, are left out."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    return comments + ("\n" if comments else "") + _one_line_arrays(tomli_w.dumps(_without_none(data)))


def _one_line_arrays(text: str, width: int = 100) -> str:
    """tomli-w writes one array item per line; short arrays of plain values read
    better on one line (``out_indices = [1, 3]``)."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.endswith(" = ["):
            end = index + 1
            while (
                end < len(lines) and lines[end].startswith("    ") and not lines[end].rstrip().endswith("[")
            ):
                end += 1
            items = [item.strip().removesuffix(",") for item in lines[index + 1 : end]]
            joined = f"{line}{', '.join(items)}]"
            if end < len(lines) and lines[end] == "]" and len(joined) <= width:
                out.append(joined)
                index = end + 1
                continue
        out.append(line)
        index += 1
    return "\n".join(out) + "\n"


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_none(item) for item in value]
    return value
