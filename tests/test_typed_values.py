"""pctkit.typed_values: recipe values keep their TOML type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError, create_model

from pctkit.typed_values import TypedValues, mistyped, typed_values_validator

UNQUOTE = ": write it without quotes"


@pytest.mark.parametrize(
    ("value", "annotation", "problem"),
    [
        ("0.5", float, "expected a number, got the string '0.5'" + UNQUOTE),
        ("many", int, "expected an integer, got the string 'many'"),
        ("true", bool, "expected true or false, got the string 'true'" + UNQUOTE),
        (True, float, "expected a number, got the boolean true"),
        (16.0, int, "expected an integer, got 16.0"),
        (0, bool, "expected true or false, got 0"),
        ([1.0, "x"], tuple[float, ...], "item 1: expected a number, got the string 'x'"),
        (True, int | None, "expected an integer, got the boolean true"),
        ("3", Annotated[int, Field(gt=0)], "expected an integer, got the string '3'" + UNQUOTE),
    ],
)
def test_values_of_the_wrong_toml_type_are_named(value: object, annotation: object, problem: str) -> None:
    assert mistyped(value, annotation) == problem


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (3, float),  # an integer is a number
        (3, int),
        (True, bool),
        ("auto", float | Literal["auto"]),
        ("runs", Path),
        ([1, 2], tuple[int, ...]),
        ("x", str | int),
        (1.5, float | None),
        (None, int | None),
    ],
)
def test_values_of_the_right_type_pass(value: object, annotation: object) -> None:
    assert mistyped(value, annotation) is None


def test_models_refuse_mistyped_values_naming_the_field() -> None:
    class Section(TypedValues):
        iterations: int = 1
        lr: float = 0.1

    assert Section.model_validate({"iterations": 3, "lr": 1}).lr == 1.0
    with pytest.raises(ValidationError) as raised:
        Section.model_validate({"iterations": 3.0, "lr": "0.1"})
    assert {(error["loc"], error["type"]) for error in raised.value.errors()} == {
        (("iterations",), "toml_type"),
        (("lr",), "toml_type"),
    }

    # Models made at run time (a component's section) name their fields one by one.
    component: type[BaseModel] = create_model(
        "Component",
        type=(Literal["x"], "x"),
        size=(int, 1),
        __validators__={"typed": typed_values_validator("size")},
    )
    with pytest.raises(ValidationError, match="expected an integer, got the boolean true"):
        component.model_validate({"type": "x", "size": True})
