"""What the registry knows of a component: its record, the registry's errors, and the
component's recipe parameters, read from its factory's signature and docstring.

A factory's *recipe parameters* are its typed keyword arguments. Arguments the engine
supplies at build time (a head's input channels, an optimizer's parameter groups) are
positional-only, before ``/``, and are not recipe parameters. Every recipe parameter
must carry a type annotation; descriptions come from the ``Args:`` section of the
docstring, whose first line is the component's description.
"""

from __future__ import annotations

import difflib
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from pctkit.typed_values import TypedValues


class RegistryError(Exception):
    """A component cannot be found or used."""


class BrokenComponentError(RegistryError):
    """A component exists but cannot be used: its plugin fails to import, or its
    factory breaks the parameter rules."""


def singular(kind: str) -> str:
    """``"backbones"`` -> ``"backbone"``, ``"losses"`` -> ``"loss"``."""
    if kind.endswith("sses"):
        return kind[:-2]
    if kind.endswith("ss"):  # "postprocess" names one already
        return kind
    return kind[:-1] if kind.endswith("s") else kind


class UnknownComponentError(RegistryError, KeyError):
    """No component of that kind has that name."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = available
        self.suggestions = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        super().__init__(name)

    def __str__(self) -> str:
        message = f"unknown {singular(self.kind)} {self.name!r}"
        if self.suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        if self.available:
            message += f" Available: {', '.join(self.available)}."
        return message


class DeprecatedNameWarning(DeprecationWarning):
    """A recipe names a component by a deprecated alias."""


# Python hides DeprecationWarning outside __main__; a recipe's author must see this one.
warnings.filterwarnings("default", category=DeprecatedNameWarning)


@dataclass(frozen=True)
class PluginProblem:
    """A plugin entry point or component that could not be used."""

    kind: str
    name: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"{singular(self.kind)} {self.name!r} from package {self.origin!r}: {self.error}"


@dataclass
class Component:
    """A registered component: its factory, where it comes from, and its parameters."""

    kind: str
    name: str
    factory: Callable[..., Any]
    origin: str
    description: str
    parameters: type[BaseModel]
    """A Pydantic model of the recipe parameters (``type`` excluded)."""
    replaced_by: str | None = None
    """Set on a deprecation alias (``name`` is then the old name): the name it points to."""

    @property
    def builtin(self) -> bool:
        """Whether the component ships with pctkit itself."""
        return self.origin == "pctkit"

    def build(self, *runtime_args: Any, **parameters: Any) -> Any:
        """Call the factory: engine-supplied arguments first, then recipe parameters."""
        return self.factory(*runtime_args, **parameters)


def docstring_parts(obj: Any) -> tuple[str, dict[str, str]]:
    """The first docstring line and the per-argument descriptions of ``Args:``."""
    doc = inspect.getdoc(obj) or ""
    description = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    arguments: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith((" ", "\t")):
            break  # the next section starts at the left margin
        match = re.match(r"^\s{0,8}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if match and line.startswith(("    ", "\t")) and not line.startswith(("        ",)):
            current = match.group(1)
            arguments[current] = match.group(2).strip()
        elif current and stripped:
            arguments[current] = f"{arguments[current]} {stripped}".strip()
    return description, arguments


def _parameter_hints(target: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """The evaluated annotations of a factory's recipe parameters only.

    The return type and the engine-supplied positional-only arguments are not read, so
    a factory module may name them under ``TYPE_CHECKING`` and import torch lazily:
    listing components then imports no heavy library.
    """
    namespace = dict(getattr(inspect.unwrap(target), "__globals__", {}))
    hints: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY or parameter.name == "self":
            continue
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            annotation = eval(annotation, namespace)
        hints[parameter.name] = annotation
    return hints


class Location:
    """Marks a parameter that says where an input is, not what it is: a folder or file
    path (``root: Annotated[str, LOCATION]``). A resume may change it, for inputs
    staged to another path (a node-local disk, another cluster); the engine then checks
    that what it finds there is the run's own: the data's classes, counts, strong set and
    names, a file's SHA-256 (:mod:`pctkit.engine.data_identity`).
    """

    def __repr__(self) -> str:
        return "LOCATION"


LOCATION = Location()
"""The :class:`Location` marker, for ``typing.Annotated``."""


LOCATION_KEY = "x-pctkit-location"
"""JSON Schema key of a component parameter marked with ``Annotated[..., LOCATION]``:
a path that a resume may change (:class:`Location`)."""


def _is_location(hint: Any) -> bool:
    return get_origin(hint) is Annotated and any(isinstance(item, Location) for item in get_args(hint)[1:])


def location_fields(model: type[BaseModel]) -> list[str]:
    """The parameters of a component's parameter model that are locations."""
    return [
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(LOCATION_KEY)
    ]


class ComponentParameters(TypedValues):
    """The base of every component's parameter model: unknown keys and values of the
    wrong TOML type are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def parameters_model(kind: str, name: str, factory: Callable[..., Any]) -> type[BaseModel]:
    """A Pydantic model of a factory's recipe parameters.

    Raises:
        BrokenComponentError: a recipe parameter has no type annotation, or the factory
            takes ``*args``/``**kwargs`` beyond its positional-only runtime inputs.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(target)
        hints = _parameter_hints(target, signature)
    except (TypeError, ValueError, NameError, SyntaxError) as error:
        raise BrokenComponentError(f"cannot read the signature of {name!r}: {error}") from error
    _, descriptions = docstring_parts(factory)
    if inspect.isclass(factory) and not descriptions:
        _, descriptions = docstring_parts(factory.__init__)
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.name == "self" or parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise BrokenComponentError(
                f"{singular(kind)} {name!r}: *args/**kwargs cannot be recipe parameters; "
                "declare each parameter with a type"
            )
        if parameter.name not in hints:
            raise BrokenComponentError(
                f"{singular(kind)} {name!r}: parameter {parameter.name!r} has no type "
                "annotation; every recipe parameter must be typed"
            )
        if parameter.name == "type":
            raise BrokenComponentError(
                f"{singular(kind)} {name!r}: 'type' is reserved for the component name"
            )
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        extra: dict[str, Any] | None = {LOCATION_KEY: True} if _is_location(hints[parameter.name]) else None
        fields[parameter.name] = (
            hints[parameter.name],
            Field(default, description=descriptions.get(parameter.name), json_schema_extra=extra),
        )
    model_name = "".join(part.capitalize() for part in re.split(r"[._]", name)) + "Parameters"
    model: type[BaseModel] = create_model(model_name, __base__=ComponentParameters, **fields)
    return model
