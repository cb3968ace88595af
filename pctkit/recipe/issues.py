"""Recipe issues: every mistake found in a recipe, with its path, line and a hint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecipeIssue:
    """One mistake in a recipe."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    source: str = "recipe"
    """``"recipe"`` (the file), ``"--set"`` (an override) or ``"check"`` (a build check)."""

    def location(self, file: str | None = None) -> str:
        """``file:line`` or ``--set`` or empty, for messages."""
        if self.source == "--set":
            return "--set"
        if file and self.line is not None:
            return f"{file}:{self.line}" + (f":{self.column}" if self.column else "")
        return file or ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (``pctkit validate --json``)."""
        return {
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
            "source": self.source,
        }


@dataclass
class RecipeError(Exception):
    """A recipe that cannot be used; holds every issue found, not just the first."""

    issues: list[RecipeIssue]
    file: str | None = None
    checked: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{len(self.issues)} problem(s) in recipe {self.file or '<text>'}:"]
        for issue in self.issues:
            where = issue.location(self.file)
            text = f"  {issue.path or '<recipe>'}: {issue.message}"
            if where:
                text += f"  [{where}]"
            if issue.hint:
                text += f"\n      hint: {issue.hint}"
            lines.append(text)
        return "\n".join(lines)
