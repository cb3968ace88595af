"""Damaged final weights, injected for real into copies of a finished run and of a bundle:
every reader (``eval``, ``export``, ``predict``, ``report``, ``pctkit.load_model``)
names the file and the problem, with no traceback on the command line and a typed
error in Python."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_run import run_cli

import pctkit
from pctkit.artifacts.io import ArtifactError, save_tensors
from pctkit.artifacts.models import CHECKSUM_KEY, WeightsFileError, read_metadata, read_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor: the file still parses
    path.write_bytes(bytes(data))


def _not_safetensors(path: Path) -> None:
    path.write_text("<html>502 Bad Gateway</html>")  # what a failed download leaves


def _other_network(path: Path) -> None:
    # A well-formed file with intact checksum, for a network with one tensor less.
    metadata = {key: value for key, value in _raw_metadata(path).items() if key != CHECKSUM_KEY}
    tensors = read_tensors(path)
    tensors.pop(sorted(tensors)[-1])
    save_tensors(path, tensors, metadata)


def _raw_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _missing(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "not a complete safetensors file"),
    "flipped bit": (_flip_a_bit, "do not match the checksum written with them"),
    "not safetensors": (_not_safetensors, "not a complete safetensors file"),
    "other network": (_other_network, "tensors missing from the file"),
    "missing": (_missing, "the file is missing"),
}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "scene.png")
    return folder


def _damaged_copy(source: Path, target: Path, weights: str, damage: str) -> Path:
    shutil.copytree(source, target)
    DAMAGE[damage][0](target / weights)
    return target / weights


def _each_refused(
    commands: list[list[str]],
    weights: Path,
    damage: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each command exits 1 with one message naming the file and the problem."""
    for arguments in commands:
        assert run_cli(arguments, monkeypatch) == 1, arguments
        error = " ".join(capsys.readouterr().err.split())  # the console may wrap long lines
        assert "Traceback" not in error
        assert weights.name in error and DAMAGE[damage][1] in error, (arguments, error)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_reader_of_a_run_names_the_damaged_file_and_the_problem(
    damage: str,
    tiny_run_dir: Path,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    weights = _damaged_copy(tiny_run_dir, run_dir, "retrained_net.safetensors", damage)
    commands = [
        ["eval", str(run_dir)],
        ["export", str(run_dir), "--out", str(tmp_path / "bundle")],
        ["predict", str(run_dir), str(images), "--out", str(tmp_path / "masks")],
    ]
    _each_refused(commands, weights, damage, monkeypatch, capsys)
    assert not (tmp_path / "bundle" / "model.safetensors").exists()  # nothing half-exported
    with pytest.raises(WeightsFileError, match=DAMAGE[damage][1]) as raised:
        pctkit.load_model(weights)
    assert str(weights) in str(raised.value) and isinstance(raised.value, ArtifactError)
    # The report still summarises the run, and names the damage and the way out.
    assert run_cli(["report", str(run_dir), "--no-plots"], monkeypatch) == 0
    error = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in error
    if damage != "other network":  # the report builds no network to compare the tensors with
        assert weights.name in error and DAMAGE[damage][1] in error
        assert f"`pctkit resume {run_dir}` writes it again" in error
    # The other nets of the run are untouched and still usable.
    assert run_cli(["eval", str(run_dir), "--net", "hybrid", "--json"], monkeypatch) == 0


@pytest.mark.parametrize("damage", ["truncated", "flipped bit", "other network"])
def test_a_damaged_bundle_is_named_by_eval_predict_and_load_model(
    damage: str,
    tiny_bundle: Path,
    tiny_run_dir: Path,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = tmp_path / "bundle"
    weights = _damaged_copy(tiny_bundle, bundle, "model.safetensors", damage)
    commands = [
        ["eval", str(bundle), "--data", str(tiny_run_dir)],
        ["predict", str(bundle), str(images), "--out", str(tmp_path / "masks")],
    ]
    _each_refused(commands, weights, damage, monkeypatch, capsys)
    with pytest.raises(WeightsFileError, match=DAMAGE[damage][1]):
        pctkit.load_model(bundle)


def test_weights_carry_a_checksum_that_the_bundle_keeps_valid(tiny_run_dir: Path, tiny_bundle: Path) -> None:
    for path in (tiny_run_dir / "retrained_net.safetensors", tiny_bundle / "model.safetensors"):
        recorded = read_metadata(path)[CHECKSUM_KEY]
        assert isinstance(recorded, str) and len(recorded) == 64
        read_tensors(path)  # verifies it
    assert (
        read_metadata(tiny_bundle / "model.safetensors")[CHECKSUM_KEY]
        == read_metadata(tiny_run_dir / "retrained_net.safetensors")[CHECKSUM_KEY]
    )
