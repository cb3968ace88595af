"""The building blocks of the recipe schema: strict sections, component sections, and
the declaration of a component slot (see :mod:`pctkit.recipe.schema`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pctkit.typed_values import TypedValues

SLOT_KEY = "x-pctkit-kind"
"""The JSON Schema key of a component slot's field that names its component kind."""

RESUME_KEY = "x-pctkit-resume"
MAY_CHANGE_ON_RESUME: dict[str, Any] = {RESUME_KEY: "may change"}
"""``json_schema_extra`` of keys that may differ between a run and its resumption."""


class StrictModel(TypedValues):
    """A recipe section: unknown keys are errors, and so are values of the wrong TOML
    type (``"0.5"`` or ``true`` for a number)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ComponentSpec(BaseModel):
    """A component section: ``type`` names a registered component, the rest are its
    parameters."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Name of a registered component (see `pctkit list`).")

    def parameters(self) -> dict[str, Any]:
        """The component's parameters, as keyword arguments for its factory."""
        data = dict(self)
        data.pop("type")
        return data


def component(kind: str, description: str, default: str | None = None, *, optional: bool = False) -> Any:
    """Declare a component slot of ``kind``: a section whose ``type`` names a component.

    Args:
        kind: the registry kind (``"backbones"``, ``"methods"``, ...).
        description: what the slot is for.
        default: the component used when the recipe omits the section.
        optional: the section may be absent (``None``): another one stands in for it.
    """
    extra: dict[str, Any] = {SLOT_KEY: kind}
    if default is not None:
        return Field(
            default_factory=lambda: ComponentSpec(type=default),
            description=description,
            json_schema_extra=extra,
        )
    if optional:
        return Field(None, description=description, json_schema_extra=extra)
    return Field(description=description, json_schema_extra=extra)


def slot_kind(field: Any) -> str | None:
    """The component kind of a model field declared with :func:`component`, else ``None``."""
    extra = getattr(field, "json_schema_extra", None)
    return extra.get(SLOT_KEY) if isinstance(extra, dict) else None
