"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_run import finished_run, one_thread, run_cli

from pctkit import registry
from pctkit.components.datasets.voc_layout import write_tiny_voc

EXAMPLE_PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "pctkit-example-plugin"
EXAMPLE_PLUGIN_PACKAGE = "pctkit-example-plugin"


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """A tiny VOC + SBD folder (12 training images, 4 in train.txt, 4 validation)."""
    return write_tiny_voc(tmp_path / "voc")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a whole test module (``pytest.mark.usefixtures``, so that
    module fixtures that train run on one thread too): tiny tensors run far faster on
    one thread than on several fighting other processes for a shared machine's cores."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def example_plugin() -> None:
    """The example plugin, installed (editable) into this environment if it is not."""
    try:
        importlib.metadata.distribution(EXAMPLE_PLUGIN_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-e",
                str(EXAMPLE_PLUGIN_DIR),
            ],
            check=True,
        )
        importlib.invalidate_caches()
    if importlib.util.find_spec("pctkit_example_plugin") is None:
        # Installed during this session: its path file is read by the next interpreter only.
        sys.path.append(str(EXAMPLE_PLUGIN_DIR / "src"))
    registry.reset()


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished tiny run of ``tiny_run`` (tests must not change it)."""
    pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn
    with one_thread():
        return finished_run(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The retrained net of the tiny run exported with ``pctkit export``, then moved away
    from its run."""
    exported = tmp_path_factory.mktemp("export") / "bundle"
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert run_cli(["export", str(tiny_run_dir), "--out", str(exported)], monkeypatch) == 0
    elsewhere = tmp_path_factory.mktemp("shipped") / "model"
    shutil.copytree(exported, elsewhere)
    return elsewhere
