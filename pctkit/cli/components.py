"""``pctkit list``: every registered component, with its origin, description and parameters.

Identifiers (names, packages, parameter names) are never cut: each component is a block
whose descriptions wrap, whatever the terminal's width.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from pctkit import registry
from pctkit.cli.app import UserError, console, errors
from pctkit.component_info import location_fields

_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")


def render_docstring(text: str) -> str:
    """Docstring text as Rich markup: ``code`` (RST or Markdown) shown in cyan."""
    parts: list[str] = []
    position = 0
    for match in _LITERAL.finditer(text):
        parts.append(escape(text[position : match.start()]))
        parts.append(f"[cyan]{escape(match.group(1) or match.group(2))}[/]")
        position = match.end()
    parts.append(escape(text[position:]))
    return "".join(parts)


def plain_docstring(text: str) -> str:
    """Docstring text without its literal markup (for JSON)."""
    return _LITERAL.sub(lambda match: match.group(1) or match.group(2), text)


def type_name(annotation: object) -> str:
    """``int``, ``tuple[int, ...]``, ``Literal['a', 'b']``: a parameter's type as written."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _print_wrapped(markup: str, indent: int) -> None:
    """Markup text word-wrapped to the console, each line indented (no trailing blanks)."""
    width = max(20, console.width - indent)
    for line in Text.from_markup(markup).wrap(console, width):
        line.rstrip()
        console.print(Text(" " * indent) + line, soft_wrap=True)


def _kind(name: str | None) -> str | None:
    if name is None or name in registry.KINDS:
        return name
    singular_kinds = {registry.singular(k): k for k in registry.KINDS}
    if name in singular_kinds:
        return singular_kinds[name]
    raise UserError(f"unknown kind {name!r}; kinds: {', '.join(registry.KINDS)}")


def list_components(
    kind: Annotated[str | None, typer.Argument(help=f"One of: {', '.join(registry.KINDS)}.")] = None,
    pattern: Annotated[str, typer.Option(help="Wildcard on names, e.g. '*net*'.")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Registered components: origin, description and parameters."""
    kind = _kind(kind)
    components = registry.list_components(kind, pattern)
    problems = registry.problems(kind)
    if as_json:
        document = {
            "components": [
                {
                    "kind": c.kind,
                    "name": c.name,
                    "origin": c.origin,
                    "description": plain_docstring(c.description),
                    "parameters": c.parameters.model_json_schema().get("properties", {}),
                }
                for c in components
            ],
            "problems": [str(p) for p in problems],
        }
        console.print_json(json.dumps(document, default=str))
        return
    for each_kind in [kind] if kind else list(registry.KINDS):
        rows = [c for c in components if c.kind == each_kind]
        if not rows:
            continue
        console.print(f"[bold underline]{each_kind}[/]")
        for component in rows:
            origin = "built-in" if component.builtin else f"package {component.origin}"
            console.print(
                f"  [bold cyan]{escape(component.name)}[/]  [dim]({escape(origin)})[/]", soft_wrap=True
            )
            _print_wrapped(render_docstring(component.description), 6)
            locations = location_fields(component.parameters)
            for name, info in component.parameters.model_fields.items():
                annotation = type_name(info.annotation)
                default = "required" if info.is_required() else f"= {info.default!r}"
                where = " [dim](a location: may change on resume)[/]" if name in locations else ""
                console.print(
                    f"      [green]{escape(name)}[/]: {escape(annotation)} {escape(default)}{where}",
                    soft_wrap=True,
                )
                if info.description:
                    _print_wrapped(render_docstring(info.description), 10)
        console.print()
    for problem in problems:
        errors.print(f"[yellow]unusable[/]: {escape(str(problem))}", highlight=False, soft_wrap=True)
