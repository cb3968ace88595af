"""``pctkit list`` (pctkit.cli.components): every component with its origin, description
and parameters; readable at 80 columns. (That listing imports no torch is checked in
``test_architecture.py``.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from tiny_run import subprocess_environment
from typer.testing import CliRunner

from pctkit import registry
from pctkit.cli.components import plain_docstring, render_docstring
from pctkit.cli.main import app

PLUGIN_PACKAGE = "pctkit-example-plugin"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "300", "HF_HUB_OFFLINE": "1"})


def test_list_shows_components_with_origin_and_parameters(runner: CliRunner) -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in (
        "pct",
        "supervised",
        "timm",
        "fusion",
        "deeplabv3plus",
        "class_aware_cross_entropy",
        "digit_scenes",
        "adamw",
        "poly",
    ):
        assert name in result.output
    assert "built-in" in result.output
    assert "output_stride: int" in result.output and "aspp_rates" in result.output
    assert "score_power: float = 8.0" in result.output


def test_list_one_kind(runner: CliRunner) -> None:
    result = runner.invoke(app, ["list", "backbones"])
    assert result.exit_code == 0, result.output
    assert "timm" in result.output and "output_stride" in result.output
    assert "fusion" not in result.output and "adamw" not in result.output
    # The singular works too.
    assert runner.invoke(app, ["list", "backbone"]).output == result.output
    unknown = runner.invoke(app, ["list", "backbonez"])
    assert unknown.exit_code == 1


def test_list_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["list", "heads", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    fusion = next(c for c in report["components"] if c["name"] == "fusion")
    assert fusion["origin"] == "pctkit" and fusion["kind"] == "heads"
    assert "channels" in fusion["parameters"]
    assert {c["kind"] for c in report["components"]} == {"heads"}
    # JSON descriptions are plain text: no RST literal markup.
    everything = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert not any("`" in c["description"] for c in everything["components"])


def test_docstring_literals_become_cyan_or_plain() -> None:
    text = "through ``features_only`` or `pretrained`; [brackets] stay"
    assert (
        render_docstring(text) == "through [cyan]features_only[/] or [cyan]pretrained[/]; \\[brackets] stay"
    )
    assert plain_docstring(text) == "through features_only or pretrained; [brackets] stay"


@pytest.mark.usefixtures("example_plugin")
def test_list_at_80_columns_keeps_names_and_packages_whole() -> None:
    """A real terminal width: identifiers are never cut, descriptions wrap, and RST
    literal markup (``features_only``) does not show raw."""
    done = subprocess.run(
        [sys.executable, "-m", "pctkit", "list"],
        capture_output=True,
        text=True,
        env=subprocess_environment(COLUMNS="80"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for component in registry.list_components():
        origin = "built-in" if component.builtin else f"package {component.origin}"
        heading = f"  {component.name}  ({origin})"
        assert heading in lines, heading
        for parameter in component.parameters.model_fields:
            assert any(line.startswith(f"      {parameter}: ") for line in lines), (component.name, parameter)
    assert f"(package {PLUGIN_PACKAGE})" in done.stdout
    assert "`" not in done.stdout
    words = " ".join(done.stdout.split())  # descriptions wrap at 80 columns
    assert "Any timm model as a backbone: CNNs, ConvNeXt, Swin, and plain ViTs such as DINOv2." in words
    # Descriptions wrap within the width, each line indented under its component.
    descriptions = [line for line in lines if re.match(r"^ {6}\S", line) and ": " not in line]
    assert descriptions and all(len(line) <= 80 for line in descriptions)
    assert all(line == line.rstrip() for line in lines)
