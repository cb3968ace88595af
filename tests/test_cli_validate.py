"""``pctkit validate`` (pctkit.cli.validate), and user mistakes reaching the console
entry point (pctkit.cli.main) as messages with exit code 1, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import FEW_SCENES, run_cli, set_options, subprocess_environment
from typer.testing import CliRunner

from pctkit.cli.main import app

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"
PCTKIT = Path(sys.executable).parent / "pctkit"

BAD_RECIPE = """\
[experiment]
name = "bad"

[method]
type = "pct"

[data]
type = "digit_scenes"

[model.backbone]
type = "timm"
model_name = "test_resnet"
outptu_stride = 16

[model.head]
type = "fusoin"

[cross_training]
iterations = "many"
strong_batch_size = 2
weak_batch_size = 2

[optimizer]
type = "adamw"

[retrain]
iterations = 3
batch_size = 4
"""
# Fewer scenes: the build check generates the dataset.
SMALL_DATA = set_options(FEW_SCENES)
BAD_PATHS = {"model.backbone.outptu_stride", "model.head.type", "cross_training.iterations"}

# The build check's tiny forward pass runs far faster on one thread on a shared machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def runner() -> CliRunner:
    # Wide lines: Rich must not wrap a message in the middle of what a test looks for.
    return CliRunner(env={"COLUMNS": "300", "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def bad_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_RECIPE, encoding="utf-8")
    return path


def test_validate_passes_on_quickstart(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(QUICKSTART), *SMALL_DATA])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "model: builds" in result.output
    assert "pct for 1800 iterations" in result.output


def test_validate_lists_every_error_and_exits_1(runner: CliRunner, bad_recipe: Path) -> None:
    result = runner.invoke(app, ["validate", str(bad_recipe)])
    assert result.exit_code == 1
    assert "3 problem(s)" in result.output
    for path in BAD_PATHS:
        assert path in result.output
    assert "did you mean 'fusion'?" in result.output
    assert "did you mean 'output_stride'?" in result.output
    assert f"{bad_recipe}:16" in result.output  # file:line of the head type


def test_validate_json_output(runner: CliRunner, bad_recipe: Path) -> None:
    result = runner.invoke(app, ["validate", str(bad_recipe), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert {issue["path"] for issue in report["issues"]} == BAD_PATHS
    head = next(issue for issue in report["issues"] if issue["path"] == "model.head.type")
    assert head["line"] == 16 and head["hint"] == "did you mean 'fusion'?" and head["source"] == "recipe"


def test_validate_json_of_a_valid_recipe(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--json", *SMALL_DATA])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["issues"] == []
    assert any("model" in line for line in report["checked"])


def test_validate_reports_override_mistakes_as_set(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "model.head.chanels=8"])
    assert result.exit_code == 1
    assert "model.head.chanels" in result.output and "[--set]" in result.output


def test_validate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert "recipe file not found" in result.output
    assert "Traceback" not in result.output


def test_real_command_exit_codes_without_traceback(bad_recipe: Path) -> None:
    completed = subprocess.run(
        [str(PCTKIT), "validate", str(bad_recipe)],
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stdout + completed.stderr
    for path in BAD_PATHS:
        assert path in completed.stderr


def test_console_entry_point_turns_a_missing_recipe_into_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `run` leaves recipe errors to the entry point's handler (CliRunner would not show it).
    assert run_cli(["run", str(tmp_path / "missing.toml")], monkeypatch) == 1
    captured = capsys.readouterr()
    assert "recipe file not found" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_validate_reports_build_check_issues_at_their_line(runner: CliRunner, tmp_path: Path) -> None:
    """A component's ParameterError from the build check points at its key and line."""
    text = QUICKSTART.read_text().replace("score_momentum = 0.99", "score_momentum = 1.0")
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path), "--json", *SMALL_DATA])
    assert result.exit_code == 1
    (issue,) = json.loads(result.stdout)["issues"]
    assert (issue["path"], issue["source"]) == ("method.score_momentum", "check")
    assert issue["message"] == "must be in [0, 1), got 1.0"
    assert issue["line"] == next(n for n, line in enumerate(text.splitlines(), 1) if "score_momentum" in line)
    # From --set, it says so.
    result = runner.invoke(
        app, ["validate", str(QUICKSTART), "--json", *SMALL_DATA, "--set", "method.score_momentum=1.5"]
    )
    (issue,) = json.loads(result.stdout)["issues"]
    assert (issue["path"], issue["source"], issue["line"]) == ("method.score_momentum", "--set", None)


def test_validate_with_workers_checks_that_batches_split(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--nproc", "3", "--json", *SMALL_DATA])
    assert result.exit_code == 1
    paths = {issue["path"] for issue in json.loads(result.stdout)["issues"]}
    assert paths == {
        "cross_training.strong_batch_size",
        "cross_training.weak_batch_size",
        "retrain.batch_size",
    }
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--nproc", "2", *SMALL_DATA])
    assert result.exit_code == 0, result.output
    assert "4 + 4 per micro-batch (2 worker(s) x 1 micro-batch(es))" in result.output


def test_validate_reports_schema_and_build_check_mistakes_together(runner: CliRunner, tmp_path: Path) -> None:
    """Keys the schema refuses are set aside (a required one gets a stand-in) and the
    build and data checks run on the rest: one run of validate shows both kinds."""
    text = (
        QUICKSTART.read_text()
        .replace("score_power = 8.0", 'score_power = "eight"')  # schema, has a default
        .replace(
            "iterations = 1800\nstrong_batch_size", "iterations = 0\nstrong_batch_size"
        )  # schema, required
        .replace("out_indices = [0, 3]", "out_indices = [0, 9]")  # build check
        .replace("max_digit_size = 18", "max_digit_size = 40")  # data check: over the canvas
    )
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path), "--json", *SMALL_DATA])
    assert result.exit_code == 1
    issues = {issue["path"]: issue for issue in json.loads(result.stdout)["issues"]}
    assert set(issues) == {
        "method.score_power",
        "cross_training.iterations",
        "model.backbone.out_indices",
        "data.max_digit_size",
    }
    assert issues["model.backbone.out_indices"]["source"] == "check"
    assert issues["model.backbone.out_indices"]["line"] == next(
        n for n, line in enumerate(text.splitlines(), 1) if line.startswith("out_indices")
    )
    # A mistake the schema refuses in a section hides that section's checks, whose
    # findings could come from the stand-in; a file that does not parse has no checks.
    broken = text.replace("output_stride = 32", "output_stride = 'x'")
    path.write_text(broken)
    paths = {
        i["path"] for i in json.loads(runner.invoke(app, ["validate", str(path), "--json"]).stdout)["issues"]
    }
    assert "model.backbone.output_stride" in paths and "model.backbone.out_indices" not in paths
    assert "data.max_digit_size" in paths
    path.write_text(text + "\n[[broken")
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert [i["path"] for i in json.loads(result.stdout)["issues"]] == [""]
