"""Everything derived from the component slots declared in :mod:`pctkit.recipe.schema`.

- :func:`component_slots`: where the slots are (``("model", "backbone") -> "backbones"``);
- :func:`recipe_model`: the :class:`~pctkit.recipe.schema.Recipe` subclass in which each
  slot is the union of the registered components' parameter models, discriminated by
  ``type``, so that validation and the JSON Schema know every component's parameters,
  plugins' included.
"""

from __future__ import annotations

import typing
import warnings
from functools import reduce
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from pctkit import registry
from pctkit.component_info import RegistryError, location_fields
from pctkit.recipe.schema import RESUME_KEY, ComponentSpec, Recipe, StrictModel, slot_kind
from pctkit.typed_values import typed_values_validator

ANY_KEY = "*"
"""Stands for any key of a table of sections (``nets.<role>``) in a slot path."""


def _sections(annotation: Any) -> tuple[type[StrictModel] | None, bool]:
    """The section model an annotation holds, and whether it is a table of them
    (``dict[str, Section]``)."""
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation, False
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, StrictModel):
            return value, True
    return None, False


def component_slots(
    model: type[BaseModel] = Recipe, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], str]:
    """Every component slot of the schema: recipe path -> component kind."""
    found: dict[tuple[str, ...], str] = {}
    for name, field in model.model_fields.items():
        kind = slot_kind(field)
        if kind is not None:
            found[(*prefix, name)] = kind
            continue
        section, table = _sections(field.annotation)
        if section is not None:
            path = (*prefix, name, ANY_KEY) if table else (*prefix, name)
            found.update(component_slots(section, path))
    return found


def slot_defaults(
    model: type[BaseModel] = Recipe, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], str]:
    """The slots that name a default component: recipe path -> that component's name."""
    found: dict[tuple[str, ...], str] = {}
    for name, field in model.model_fields.items():
        if slot_kind(field) is not None:
            if field.default_factory is not None:
                found[(*prefix, name)] = str(field.default_factory().type)  # type: ignore[call-arg]
            continue
        section, table = _sections(field.annotation)
        if section is not None:
            found.update(slot_defaults(section, (*prefix, name, ANY_KEY) if table else (*prefix, name)))
    return found


def with_default_types(raw: dict[str, Any]) -> None:
    """Give a partly written section of a slot with a default component that default's
    ``type``, in place: ``--set method.score_power=2`` alone means the default method."""
    for path, name in slot_defaults().items():
        nodes: list[Any] = [raw]
        for part in path[:-1]:
            nodes = [
                child
                for node in nodes
                if isinstance(node, dict)
                for child in (node.values() if part == ANY_KEY else [node.get(part)])
            ]
        for node in nodes:
            section = node.get(path[-1]) if isinstance(node, dict) else None
            if isinstance(section, dict) and "type" not in section:
                section["type"] = name


def location_keys(data: dict[str, Any]) -> list[str]:
    """Dotted keys of a recipe's component parameters marked as locations
    (``Annotated[str, LOCATION]``): paths a resume may change."""
    keys: list[str] = []
    for path, kind in component_slots().items():
        found: list[tuple[tuple[str, ...], Any]] = [((), data)]
        for part in path:
            found = [
                ((*where, key), child)
                for where, node in found
                if isinstance(node, dict)
                for key, child in (node.items() if part == ANY_KEY else [(part, node.get(part))])
            ]
        for where, spec in found:
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                continue
            try:
                with warnings.catch_warnings():  # a deprecated name is reported where it is read
                    warnings.simplefilter("ignore")
                    parameters = registry.get(kind, spec["type"]).parameters
            except RegistryError:
                continue
            keys += [".".join((*where, name)) for name in location_fields(parameters)]
    return keys


def slot_at(path: tuple[str, ...]) -> str | None:
    """The component kind of the slot at ``path`` (table keys match any name)."""
    for slot, kind in component_slots().items():
        if len(slot) == len(path) and all(s in (ANY_KEY, p) for s, p in zip(slot, path, strict=True)):
            return kind
    return None


# --------------------------------------------------------------------------- unions


def component_model(component: registry.Component) -> type[ComponentSpec]:
    """A section model for one component: ``type`` pinned to its name, its parameters."""
    fields: dict[str, Any] = {
        "type": (Literal[component.name], Field(description=component.description)),
    }
    for name, info in component.parameters.model_fields.items():
        fields[name] = (info.annotation, info)
    parameters = [name for name in fields if name != "type"]
    model: type[ComponentSpec] = create_model(
        f"{registry.singular(component.kind).capitalize()}_{component.name.replace('.', '_')}",
        __base__=ComponentSpec,
        __config__=None,
        __doc__=component.description,
        __validators__={"typed_values": typed_values_validator(*parameters)} if parameters else None,
        **fields,
    )
    model.model_config["extra"] = "forbid"
    model.model_config["title"] = f"{registry.singular(component.kind)} {component.name!r}"
    model.model_rebuild(force=True)
    return model


def component_union(kind: str) -> Any:
    """The type of a section of ``kind``: a union of every usable component's model,
    discriminated by ``type``."""
    models = [component_model(c) for c in registry.list_components(kind)]
    if not models:
        return ComponentSpec
    if len(models) == 1:
        return models[0]
    union: Any = reduce(lambda a, b: Union[a, b], models)  # type: ignore[arg-type, return-value]  # noqa: UP007
    return Annotated[union, Field(discriminator="type")]


def _slot_field(field: FieldInfo, union: Any) -> tuple[Any, Any]:
    """A slot's field with the union as its type; a default component becomes raw data
    (the union member is chosen by its ``type``)."""
    extra = dict(field.json_schema_extra) if isinstance(field.json_schema_extra, dict) else None
    if field.default_factory is not None:
        default = field.default_factory().model_dump()  # type: ignore[call-arg]
        info = Field(
            default_factory=lambda: dict(default), description=field.description, json_schema_extra=extra
        )
        return union, info
    if field.default is None and not field.is_required():
        return union | None, Field(None, description=field.description, json_schema_extra=extra)
    return union, Field(description=field.description, json_schema_extra=extra)


def _derive(model: type[StrictModel], unions: dict[str, Any], cache: dict[type, type]) -> type[StrictModel]:
    """``model`` with every slot typed by its union, sections derived recursively."""
    if model in cache:
        return cache[model]
    overrides: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind = slot_kind(field)
        if kind is not None:
            overrides[name] = _slot_field(field, unions[kind])
            continue
        section, table = _sections(field.annotation)
        if section is None:
            continue
        derived = _derive(section, unions, cache)
        if derived is section:
            continue
        annotation: Any = dict[str, derived] if table else derived  # type: ignore[valid-type]
        info = _copy_field(field, derived, table)
        overrides[name] = (annotation, info)
    if not overrides:
        cache[model] = model
        return model
    derived_model: type[StrictModel] = create_model(
        model.__name__, __base__=model, __doc__=model.__doc__, **overrides
    )
    cache[model] = derived_model
    return derived_model


def _copy_field(field: FieldInfo, derived: type[StrictModel], table: bool) -> Any:
    """A section field re-declared for the derived section model, same default."""
    if field.is_required():
        return Field(description=field.description)
    if table:
        return Field(default_factory=dict, description=field.description)
    return Field(default_factory=lambda: derived(), description=field.description)


def recipe_model() -> type[Recipe]:
    """The :class:`Recipe` subclass whose component slots know every registered
    component's parameters (built from the registry on each call)."""
    kinds = set(component_slots().values())
    unions = {kind: component_union(kind) for kind in sorted(kinds)}
    derived = _derive(Recipe, unions, {})
    assert issubclass(derived, Recipe)
    return derived


def resume_mutable_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Dotted keys declared with :data:`MAY_CHANGE_ON_RESUME`, found by walking the schema."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(RESUME_KEY):
            keys.append(f"{prefix}{name}")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, StrictModel):
            keys += resume_mutable_keys(annotation, f"{prefix}{name}.")
    return keys
