"""pctkit.recipe.text: TOML lines of keys, ``--set`` overrides, parsing."""

from __future__ import annotations

import textwrap

import pytest

from pctkit.recipe import RecipeError
from pctkit.recipe.text import apply_override, key_lines, line_of, parse_override, parse_recipe_text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a.b=3", 3),
        ("a.b=2.5", 2.5),
        ("a.b=1e-3", 1e-3),
        ("a.b=true", True),
        ("a.b=[1, 2]", [1, 2]),
        ("a.b=[0.5,1.0]", [0.5, 1.0]),
        ('a.b="3"', "3"),
        ("a.b=/data/voc", "/data/voc"),
        ("a.b=resnet50", "resnet50"),
        (" a.b = 4 ", 4),
    ],
)
def test_override_values_are_read_as_toml_else_as_strings(text: str, value: object) -> None:
    path, parsed = parse_override(text)
    assert path == ("a", "b")
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["a.b", "a..b=1", "=3"])
def test_malformed_overrides_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="override"):
        parse_override(text)


def test_key_lines_of_tables_dotted_keys_and_multiline_arrays() -> None:
    text = textwrap.dedent(
        """\
        [a]
        x = 1
        b.c = [
          1,
          2,
        ]
        y = 2 # [not a header]

        [a.d]
        z = "]"
        """
    )
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "x")] == 2
    assert lines[("a", "b", "c")] == 3
    assert lines[("a", "y")] == 7
    assert lines[("a", "d")] == 9 and lines[("a", "d", "z")] == 10


def test_line_of_falls_back_to_the_nearest_stated_ancestor() -> None:
    lines = {("a",): 1, ("a", "x"): 2}
    assert line_of(lines, ("a", "x")) == 2
    assert line_of(lines, ("a", "missing", "deeper")) == 1
    assert line_of(lines, ("b",)) is None


def test_apply_override_creates_tables_and_a_new_type_empties_its_section() -> None:
    data: dict[str, object] = {"method": {"type": "pct", "score_power": 4.0}}
    apply_override(data, ("method", "type"), "hybrid")
    assert data["method"] == {"type": "hybrid"}  # PCT's parameters would not fit
    apply_override(data, ("method", "type"), "hybrid")
    apply_override(data, ("method", "cls_weight"), 0.5)
    assert data["method"] == {"type": "hybrid", "cls_weight": 0.5}  # the same type keeps it
    apply_override(data, ("a", "b", "c"), 1)
    assert data["a"] == {"b": {"c": 1}}
    with pytest.raises(ValueError, match=r"a\.b\.c is a value, not a table"):
        apply_override(data, ("a", "b", "c", "d"), 2)


def test_type_overrides_apply_first_whatever_their_order() -> None:
    text = '[method]\ntype = "pct"\nscore_power = 4.0\n'
    raw, lines, overridden = parse_recipe_text(text, ["method.cls_weight=0.5", "method.type=hybrid"])
    assert raw["method"] == {"type": "hybrid", "cls_weight": 0.5}
    assert overridden == {("method", "cls_weight"), ("method", "type")}
    assert lines[("method", "score_power")] == 3


def test_invalid_toml_reports_line_and_column() -> None:
    text = '[experiment]\nname = "x"\nseed = = 3\n'
    with pytest.raises(RecipeError) as caught:
        parse_recipe_text(text, file="broken.toml")
    (issue,) = caught.value.issues
    assert issue.message.startswith("invalid TOML")
    assert (issue.line, issue.column) == (3, 8)
    assert "[broken.toml:3:8]" in str(caught.value)


def test_malformed_overrides_are_all_reported_as_from_set() -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe_text("", ["a.b", "c..d=1"])
    assert [issue.source for issue in caught.value.issues] == ["--set", "--set"]
