"""Third-party plugins: the example plugin installed for real, and throwaway ones.

``plugins/pctkit-example-plugin`` is installed into the test environment (``make
install`` does it; the ``example_plugin`` fixture installs it if it is missing). Broken,
clashing and overriding plugins are fake distributions: a ``*.dist-info`` folder with
``METADATA`` and ``entry_points.txt`` next to their modules, in a folder put on
``sys.path`` (or ``PYTHONPATH`` for a subprocess) -- what ``importlib.metadata`` reads
for an installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_run import TINY_QUICKSTART, set_options, subprocess_environment
from typer.testing import CliRunner

from pctkit import registry
from pctkit.cli.main import app
from pctkit.recipe import RecipeError, load_recipe

# Installed if it is missing, for every test here.
pytestmark = pytest.mark.usefixtures("example_plugin")

REPO = Path(__file__).resolve().parent.parent
PLUGIN_PACKAGE = "pctkit-example-plugin"

# Three iterations, each logged; no retraining: the plugin's nets only need to train.
SHORT_QUICKSTART = [
    *TINY_QUICKSTART,
    "cross_training.iterations=3",
    "cross_training.log_interval=1",
    "retrain.enabled=false",
    "retrain.iterations=1",
]
PLUGIN_MODEL = [
    'model.backbone={type = "stair_cnn.v2", widths = [8, 16, 16, 32], blocks_per_stage = 1}',
    'model.head={type = "pyramid_sum", channels = 16}',
]


def invoke(*arguments: str, overrides: list[str] | None = None) -> tuple[int, str, str]:
    """Run a pctkit command in this process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [*arguments, *set_options(overrides or [])], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder on ``sys.path`` for fake distributions; the registry re-reads
    entry points before and after the test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    registry.reset()
    yield site
    for module in [name for name, m in sys.modules.items() if str(site) in str(getattr(m, "__file__", ""))]:
        del sys.modules[module]
    registry.reset()


def add_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """Write the metadata of an installed package ``name`` with these entry points."""
    dist_info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, points in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{point} = {target}" for point, target in points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")


FAKE_COMPONENTS = '''
"""Components of the fake plugins."""
from pctkit.components.heads._deeplabv3plus import FusionHead


def untyped_backbone(*, width=16):
    """A backbone whose parameter has no type annotation."""
    raise AssertionError("never built")


def tiny_backbone(*, width: int = 16):
    """A backbone that would take a built-in's name."""
    raise AssertionError("never built")


def my_fusion(in_channels, in_strides, num_classes, /, *, width: int = 8):
    """A replacement for the built-in fusion head."""
    return FusionHead(in_channels, num_classes, width, 0.0)
'''


@pytest.fixture
def broken_plugins(fake_site: Path) -> Path:
    """One package with an entry point whose import raises, an untyped factory, a
    taken name, a bad name, and a deprecation alias of nothing."""
    (fake_site / "fake_components.py").write_text(FAKE_COMPONENTS)
    (fake_site / "fake_broken_import.py").write_text(
        'raise RuntimeError("this plugin needs a library that is not installed")\n'
    )
    add_distribution(
        fake_site,
        "fake-broken-plugin",
        {
            "pctkit.backbones": {
                "raising": "fake_broken_import:backbone",
                "untyped": "fake_components:untyped_backbone",
                "timm": "fake_components:tiny_backbone",
                "deprecated:old_thing": "fake_components:nothing_registers_this",
            },
            "pctkit.heads": {"BadName": "fake_components:my_fusion"},
        },
    )
    return fake_site


# --------------------------------------------------------------------------- the example plugin


def test_example_plugin_is_listed_with_its_package() -> None:
    code, out, _ = invoke("list", "--json")
    assert code == 0
    listed = {(c["kind"], c["name"]): c for c in json.loads(out)["components"]}
    for key in [("backbones", "stair_cnn.v1"), ("backbones", "stair_cnn.v2"), ("heads", "pyramid_sum")]:
        assert listed[key]["origin"] == PLUGIN_PACKAGE
        assert listed[key]["description"]
    assert listed[("backbones", "timm")]["origin"] == "pctkit"
    assert set(listed[("backbones", "stair_cnn.v2")]["parameters"]) == {
        "widths",
        "out_stages",
        "blocks_per_stage",
    }
    channels = listed[("heads", "pyramid_sum")]["parameters"]["channels"]
    assert channels["description"] == "width every map is projected to, and of the 3x3 refinement."

    code, out, _ = invoke("list", "backbones", "--pattern", "stair*")
    assert code == 0
    assert PLUGIN_PACKAGE in out and "stair_cnn.v2" in out and "timm" not in out


def test_schema_knows_the_plugin_parameters() -> None:
    code, out, _ = invoke("schema")
    assert code == 0
    definitions = json.loads(out)["$defs"]
    backbone = next(d for d in definitions.values() if d.get("title") == "backbone 'stair_cnn.v2'")
    assert backbone["properties"]["blocks_per_stage"] == {
        "default": 1,
        "description": "residual 3x3 blocks after each stage's strided convolution.",
        "title": "Blocks Per Stage",
        "type": "integer",
    }
    assert any(d.get("title") == "head 'pyramid_sum'" for d in definitions.values())


def test_validate_knows_the_plugin_parameters() -> None:
    recipe = REPO / "recipes" / "quickstart.toml"
    with pytest.raises(RecipeError) as caught:
        load_recipe(
            recipe,
            [
                'model.backbone={type = "stair_cnn.v2", blocks_per_stage = "two", width = [8]}',
                'model.head={type = "pyramid_sum"}',
            ],
        )
    problems = {issue.path: issue for issue in caught.value.issues}
    assert "model.backbone.blocks_per_stage" in problems
    assert problems["model.backbone.width"].hint == "did you mean 'widths'?"

    code, out, _ = invoke("validate", "quickstart", "--json", overrides=SHORT_QUICKSTART + PLUGIN_MODEL)
    assert code == 0, out
    report = json.loads(out)
    assert report["valid"] is True
    assert any("model: builds" in line for line in report["checked"])

    # The backbone's own argument checks reach the user through validate.
    bad_stages = ['model.backbone={type = "stair_cnn.v2", out_stages = [3, 1]}']
    code, out, _ = invoke("validate", "quickstart", "--json", overrides=SHORT_QUICKSTART + bad_stages)
    assert code == 1
    assert "out_stages must be increasing" in out


def test_quickstart_trains_with_the_plugin_backbone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, out, err = invoke(
        "run", "quickstart", "--out", str(run_dir), "--quiet", overrides=SHORT_QUICKSTART + PLUGIN_MODEL
    )
    assert code == 0, err
    assert "hybrid" in out
    resolved = (run_dir / "recipe.toml").read_text()
    assert 'type = "stair_cnn.v2"' in resolved and 'type = "pyramid_sum"' in resolved
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [step for step in steps if step.get("stage") == "cross_training" and step["kind"] == "train"]
    losses = [step["terms"]["loss"] for step in trained]
    assert len(losses) == 3 and all(0 < loss < 100 for loss in losses)
    from safetensors import safe_open

    with safe_open(str(run_dir / "hybrid_net.safetensors"), "pt") as weights:
        assert any(key.startswith("backbone.stages.") for key in weights.keys())  # noqa: SIM118
        assert any(key.startswith("head.laterals.") for key in weights.keys())  # noqa: SIM118


def test_quickstart_trains_with_the_plugin_method(tmp_path: Path) -> None:
    """A third-party method runs in the same stages as the built-in ones: its net is
    trained, labels the pseudo labels, is retrained from, evaluated and exported."""
    run_dir = tmp_path / "run"
    overrides = [
        *TINY_QUICKSTART,
        "method.type=self_training",
        "method.threshold=0.5",
        "cross_training.log_interval=1",
    ]
    code, out, err = invoke("run", "quickstart", "--out", str(run_dir), "--quiet", overrides=overrides)
    assert code == 0, err
    assert "student" in out and "retrained" in out
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [step for step in steps if step.get("stage") == "cross_training" and step["kind"] == "train"]
    assert set(trained[-1]["terms"]) == {"loss_strong", "loss_weak", "confident", "loss"}
    assert set(trained[-1]["lr"]) == {"student"}
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["nets"]) == {"student", "retrained"}
    assert json.loads((run_dir / "progress.json").read_text())["nets"] == ["student"]
    assert 'type = "self_training"' in (run_dir / "recipe.toml").read_text()
    code, _, err = invoke("export", str(run_dir), "--net", "student", "--out", str(tmp_path / "bundle"))
    assert code == 0, err


def test_versioned_names_and_the_deprecated_alias() -> None:
    v1 = registry.get("backbones", "stair_cnn.v1")
    v2 = registry.get("backbones", "stair_cnn.v2")
    assert v1.factory is not v2.factory
    with pytest.warns(registry.DeprecatedNameWarning, match="'stair_cnn' is deprecated; use 'stair_cnn.v1'"):
        assert registry.get("backbones", "stair_cnn") is v1

    alias = next(c for c in registry.list_components("backbones") if c.name == "stair_cnn")
    assert alias.replaced_by == "stair_cnn.v1" and alias.description.startswith("Deprecated")

    # A recipe that still says `stair_cnn` validates, and building it warns.
    old_recipe = ['model.backbone={type = "stair_cnn"}', 'model.head={type = "pyramid_sum", channels = 16}']
    with pytest.warns(registry.DeprecatedNameWarning):
        code, out, _ = invoke("validate", "quickstart", "--json", overrides=SHORT_QUICKSTART + old_recipe)
    assert code == 0, out


# --------------------------------------------------------------------------- broken plugins


def test_broken_plugins_are_reported_by_list_and_nothing_else_breaks(broken_plugins: Path) -> None:
    code, out, _ = invoke("list", "--json")
    assert code == 0
    listing = json.loads(out)
    problems = "\n".join(listing["problems"])
    assert (
        "'raising' from package 'fake-broken-plugin': import failed: RuntimeError: this plugin needs"
        in problems
    )
    assert "'untyped' from package 'fake-broken-plugin'" in problems and "no type annotation" in problems
    assert "'old_thing'" in problems and "deprecation alias" in problems
    assert "'BadName'" in problems and "invalid head name" in problems
    names = {c["name"] for c in listing["components"]}
    assert {"timm", "stair_cnn.v2", "fusion"} <= names and not {"raising", "untyped"} & names

    # Commands that do not use the broken components work, and do not mention them.
    code, out, err = invoke("validate", "quickstart", "--json", overrides=SHORT_QUICKSTART)
    assert code == 0, out
    assert "raising" not in out + err and "untyped" not in out + err
    code, out, _ = invoke("schema")
    assert code == 0 and "stair_cnn.v2" in out and "untyped" not in out
    assert invoke("recipes")[0] == 0


def test_validate_reports_a_broken_plugin_when_the_recipe_uses_it(broken_plugins: Path) -> None:
    for name, expected in (("raising", "import failed: RuntimeError"), ("untyped", "no type annotation")):
        code, out, _ = invoke(
            "validate", "quickstart", "--json", overrides=[f'model.backbone={{type = "{name}"}}']
        )
        assert code == 1
        issues = json.loads(out)["issues"]
        assert [issue["path"] for issue in issues] == ["model.backbone.type"]
        assert f"backbone '{name}' cannot be used" in issues[0]["message"]
        assert expected in issues[0]["message"]


def test_a_plugin_cannot_take_a_builtin_name(broken_plugins: Path) -> None:
    timm = registry.get("backbones", "timm")
    assert timm.origin == "pctkit"
    clash = [p for p in registry.problems("backbones") if p.name == "timm"]
    assert len(clash) == 1
    assert clash[0].origin == "fake-broken-plugin"
    assert "already taken by package 'pctkit'" in clash[0].error and "override:timm" in clash[0].error


def test_an_override_entry_point_replaces_a_builtin_on_purpose(fake_site: Path) -> None:
    (fake_site / "fake_components.py").write_text(FAKE_COMPONENTS)
    add_distribution(
        fake_site, "fake-override-plugin", {"pctkit.heads": {"override:fusion": "fake_components:my_fusion"}}
    )
    fusion = registry.get("heads", "fusion")
    assert fusion.origin == "fake-override-plugin"
    assert list(fusion.parameters.model_fields) == ["width"]
    assert not registry.problems("heads")
    # Recipes now validate against the replacement's parameters.
    with pytest.raises(RecipeError, match="unknown key 'channels'"):
        load_recipe(REPO / "recipes" / "quickstart.toml")


def test_a_fresh_process_sees_installed_and_broken_plugins(broken_plugins: Path) -> None:
    environment = subprocess_environment(
        PYTHONPATH=os.pathsep.join([str(broken_plugins), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "pctkit", "list", "backbones"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert PLUGIN_PACKAGE in result.stdout and "stair_cnn.v2" in result.stdout
    assert "unusable" in result.stderr and "import failed: RuntimeError" in result.stderr
