"""Recipe values keep the type TOML gave them: no quietly converted numbers.

TOML values are typed, so a number in quotes, ``true`` where a number belongs or ``16.0``
where an integer belongs is a mistake in the recipe, not something to convert. Pydantic's
lax mode would convert all three (``"0.5"`` to 0.5, ``true`` to 1.0, ``16.0`` to 16);
:class:`TypedValues` refuses them, naming the key. Everything else (lists for tuples,
integers for floats, strings for paths and literals) is left to Pydantic.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

_SCALARS = (bool, int, float, str)


def _kinds(annotation: Any) -> set[Any]:
    """The scalar types an annotation accepts (``object`` for anything else)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(member) for member in typing.get_args(annotation)))
    if annotation is type(None):
        return set()
    if origin is typing.Literal:
        return {type(value) for value in typing.get_args(annotation)}
    if annotation in _SCALARS:
        return {annotation}
    return {object}


def _items(annotation: Any) -> Any | None:
    """The item annotation of a homogeneous tuple or list, else ``None``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _items(typing.get_args(annotation)[0])
    arguments = typing.get_args(annotation)
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return arguments[0]
    if origin is list and len(arguments) == 1:
        return arguments[0]
    return None


def _is_toml_scalar(text: str) -> bool:
    """Whether ``text`` would be a number or a boolean without its quotes."""
    if text.strip() in ("true", "false"):
        return True
    try:
        float(text.replace("_", ""))
    except ValueError:
        return False
    return True


def mistyped(value: Any, annotation: Any) -> str | None:
    """Why ``value`` is the wrong kind of TOML value for ``annotation``, or ``None``."""
    kinds = _kinds(annotation)
    if not kinds or object in kinds:
        item = _items(annotation)
        if item is not None and isinstance(value, list | tuple):
            for position, element in enumerate(value):
                problem = mistyped(element, item)
                if problem is not None:
                    return f"item {position}: {problem}"
        return None
    numbers = kinds & {int, float}
    wanted = "an integer" if numbers == {int} else "a number" if numbers else "true or false"
    if isinstance(value, bool):
        if bool not in kinds and numbers:
            return f"expected {wanted}, got the boolean {str(value).lower()}"
    elif isinstance(value, str):
        if str not in kinds and kinds <= {bool, int, float}:
            unquoted = _is_toml_scalar(value)
            return f"expected {wanted}, got the string {value!r}" + (
                ": write it without quotes" if unquoted else ""
            )
    elif isinstance(value, float) and kinds <= {int, bool} and int in kinds:
        return f"expected an integer, got {value!r}"
    elif isinstance(value, int) and kinds == {bool}:
        return f"expected true or false, got {value!r}"
    return None


def _check(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    field = cls.model_fields.get(info.field_name or "")
    if field is not None:
        problem = mistyped(value, field.annotation)
        if problem is not None:
            raise PydanticCustomError("toml_type", problem)
    return value


def typed_values_validator(*fields: str) -> Any:
    """A before-validator of ``fields`` that refuses values of the wrong TOML type, for
    models made with ``create_model(..., __validators__=...)`` (a discriminator field
    such as a component's ``type`` must stay out: Pydantic allows it no validator)."""
    return field_validator(*fields, mode="before")(classmethod(_check))  # type: ignore[arg-type]


class TypedValues(BaseModel):
    """A model whose fields refuse recipe values of the wrong TOML type."""

    @field_validator("*", mode="before")
    @classmethod
    def _typed(cls, value: Any, info: ValidationInfo) -> Any:
        return _check(cls, value, info)
