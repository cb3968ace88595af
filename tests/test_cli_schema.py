"""``pctkit schema`` (pctkit.cli.schema, pctkit.recipe.json_schema): the recipe JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pctkit.cli.main import app
from pctkit.recipe.json_schema import SCHEMA_FILE, recipe_json_schema


def test_schema_is_json_with_component_parameters(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema == recipe_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    text = json.dumps(schema)
    for name in ("output_stride", "aspp_rates", "score_power", "h2p_weight", "class_aware_cross_entropy"):
        assert name in text
    written = tmp_path / SCHEMA_FILE
    assert runner.invoke(app, ["schema", "--out", str(written)]).exit_code == 0
    assert json.loads(written.read_text()) == schema


def test_every_method_is_a_choice_of_the_method_section() -> None:
    schema = recipe_json_schema()
    titles = {definition.get("title") for definition in schema["$defs"].values()}
    assert {"method 'pct'", "method 'hybrid'", "method 'supervised'"} <= titles
    pct = next(d for d in schema["$defs"].values() if d.get("title") == "method 'pct'")
    assert pct["properties"]["weight_rule"]["enum"] == ["released", "strict"]
    assert pct["additionalProperties"] is False
