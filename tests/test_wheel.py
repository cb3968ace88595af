"""A non-editable install: build the wheel, install it into a fresh venv, run the CLI.

The editable install used everywhere else reads recipes straight from the source tree,
so it cannot show that they ship as package data. Here the wheel is built from a copy of
the sources (``--no-build-isolation``: offline, with the setuptools of this
environment), installed without dependencies into a new venv, and that venv borrows
torch and the rest from this environment through a ``.pth`` file -- placed after its
own site-packages, so ``import pctkit`` finds the wheel's copy, never the editable one.
The slowest test file (about a minute): three CLI processes, one a tiny training run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from tiny_run import TINY_QUICKSTART, set_options, subprocess_environment

from pctkit.recipe.builtin import builtin_recipes
from pctkit.recipe.json_schema import SCHEMA_FILE

REPO = Path(__file__).resolve().parent.parent

TINY_RUN = [*TINY_QUICKSTART, "model.head.channels=16"]

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing but the venv's own paths: no PYTHONPATH, no user site-packages.
    environment = subprocess_environment(PYTHONNOUSERSITE="1")
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with pctkit installed from its wheel; returns the venv folder."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools installed")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    shutil.copytree(REPO / "pctkit", source / "pctkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)], root)
    (wheel,) = dist.glob("pctkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    for name in builtin_recipes():
        assert f"pctkit/recipes/{name}.toml" in packaged
    # The schema the recipes' `#:schema` line points at ships beside them.
    assert f"pctkit/schema/{SCHEMA_FILE}" in packaged

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], root)
    site_packages = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
    ).stdout.strip()
    # torch, timm, pydantic, ... come from this environment, after the wheel's own files.
    (Path(site_packages) / "borrowed_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_is_the_pctkit_that_runs(wheel_venv: Path, tmp_path: Path) -> None:
    location = _run(
        [str(wheel_venv / "bin" / "python"), "-c", "import pctkit; print(pctkit.__file__)"], tmp_path
    )
    assert Path(location.stdout.strip()).is_relative_to(wheel_venv)


def test_builtin_recipes_ship_in_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    pctkit = str(wheel_venv / "bin" / "pctkit")
    listing = _run([pctkit, "recipes"], tmp_path).stdout
    assert all(name in listing for name in builtin_recipes())

    overrides = set_options(TINY_RUN)
    report = json.loads(_run([pctkit, "validate", "quickstart", "--json", *overrides], tmp_path).stdout)
    assert report["valid"] is True
    assert Path(report["recipe"]).is_relative_to(wheel_venv)  # the packaged copy, not the repo's

    _run([pctkit, "run", "quickstart", "--out", "run", "--quiet", *overrides], tmp_path)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["nets"]) == {"hybrid", "pseudo", "retrained"}
