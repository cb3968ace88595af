"""Writing a resolved recipe back as TOML (sections in schema order, every key shown)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise ValueError("TOML has no null; the schema must not produce None")
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _write_table(lines: list[str], path: tuple[str, ...], table: dict[str, Any]) -> None:
    # TOML has no null: a key left out reads back as its default, which is where a
    # None (a component's "not set") comes from.
    scalars = [(k, v) for k, v in table.items() if not _is_table(v) and v is not None]
    tables = [(k, v) for k, v in table.items() if _is_table(v)]
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    # 'type' first in component sections: it is what the rest depends on.
    scalars.sort(key=lambda item: item[0] != "type")
    for key, value in scalars:
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        _write_table(lines, (*path, key), value)


def dumps(data: dict[str, Any], header: str = "") -> str:
    """A TOML document for ``data`` (nested dicts become tables)."""
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]
    _write_table(lines, (), data)
    return "\n".join(lines) + "\n"
