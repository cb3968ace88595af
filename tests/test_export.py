"""Export bundles, ``pctkit.load_model``, ``pctkit predict`` and ``pctkit eval``.

The reference everywhere is the run's own evaluation: a bundle must predict the masks
the run predicted, and score what ``results.json`` says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import finished_run, one_thread, run_cli

import pctkit
from pctkit.artifacts.models import read_metadata
from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import build_data
from pctkit.engine.evaluation import evaluate
from pctkit.engine.inference import load_bundle, net_from_file
from pctkit.metrics import ConfusionMatrix
from pctkit.palette import load_mask_png
from pctkit.recipe import load_recipe

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory)


@pytest.fixture(scope="module")
def data(run_dir: Path) -> SegmentationData:
    return build_data(load_recipe(run_dir / "recipe.toml"))


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The retrained net exported, then moved away from its run."""
    exported = tmp_path_factory.mktemp("export") / "bundle"
    monkeypatch = pytest.MonkeyPatch()
    try:
        assert run_cli(["export", str(run_dir), "--out", str(exported)], monkeypatch) == 0
    finally:
        monkeypatch.undo()
    elsewhere = tmp_path_factory.mktemp("shipped") / "model"
    shutil.copytree(exported, elsewhere)
    return elsewhere


def _write_validation_images(data: SegmentationData, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(len(data.val)):
        sample = data.val[index]
        Image.fromarray(sample.image).save(folder / f"{sample.name}.png")
        names.append(sample.name)
    return names


def test_bundle_holds_weights_metadata_model_recipe_and_card(bundle: Path, run_dir: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "model.safetensors", "recipe.toml"]
    metadata = read_metadata(bundle / "model.safetensors")
    assert metadata["format"] == "pctkit.bundle.v1"
    assert metadata["class_names"] == ["background", "0", "1", "2"]
    assert metadata["role"] == "retrained"
    assert metadata["pctkit_version"] == pctkit.__version__
    assert metadata["input_size"] == [32, 32]
    assert len(metadata["mean"]) == len(metadata["std"]) == 3
    assert len(metadata["palette"]) == 4
    recipe = (bundle / "recipe.toml").read_text()
    assert "[model.backbone]" in recipe and 'model_name = "test_resnet"' in recipe
    assert "[data]" not in recipe and "[optimizer]" not in recipe
    card = (bundle / "README.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    for role, summary in results["nets"].items():
        assert f"{summary['miou']:.4f}" in card, role
    assert "pctkit.load_model" in card


def test_load_model_rebuilds_the_net_from_the_bundle_alone(bundle: Path, run_dir: Path) -> None:
    net = pctkit.load_model(bundle)
    assert isinstance(net, torch.nn.Module) and not net.training
    reference, _ = net_from_file(run_dir / "retrained_net.safetensors")
    images = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(images), reference(images))


def test_predict_writes_the_masks_of_the_in_run_evaluation_and_skips_a_corrupt_image(
    bundle: Path,
    run_dir: Path,
    data: SegmentationData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = _write_validation_images(data, tmp_path / "images")
    (tmp_path / "images" / "aaa_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    labels = {f"{data.val[i].name}.png": data.val[i].image_labels for i in range(len(data.val))}
    (tmp_path / "labels.json").write_text(json.dumps(labels))

    plain_out, labelled_out = tmp_path / "plain", tmp_path / "labelled"
    assert (
        run_cli(["predict", str(bundle), str(tmp_path / "images"), "--out", str(plain_out)], monkeypatch) == 1
    )
    error = capsys.readouterr().err
    assert "aaa_corrupt.png" in error and "1 of 5" in error
    arguments = ["predict", str(bundle), str(tmp_path / "images"), "--out", str(labelled_out)]
    assert run_cli([*arguments, "--image-labels", str(tmp_path / "labels.json"), "--quiet"], monkeypatch) == 1

    # The in-run evaluation of the run's own net, on the same images.
    recipe = load_recipe(run_dir / "recipe.toml")
    net, _ = net_from_file(run_dir / "retrained_net.safetensors")
    with one_thread():
        result = evaluate(
            net, data.val, data.class_names, torch.device("cpu"), batch_size=4, num_examples=len(data.val)
        )
    assert sorted(p.stem for p in (plain_out / "masks").iterdir()) == sorted(names)
    matrix = ConfusionMatrix(len(data.class_names))
    for example in result.examples:
        plain = load_mask_png(plain_out / "masks" / f"{example['name']}.png")
        labelled = load_mask_png(labelled_out / "masks" / f"{example['name']}.png")
        assert np.array_equal(plain, example["prediction"].numpy())
        assert np.array_equal(labelled, example["prediction_with_labels"].numpy())
        matrix.update(torch.from_numpy(plain).long(), example["mask"])
        overlay = np.asarray(Image.open(plain_out / "overlays" / f"{example['name']}.png"))
        assert overlay.shape == (*plain.shape, 3)
    expected = json.loads((run_dir / "results.json").read_text())["nets"]["retrained"]
    assert matrix.miou() == pytest.approx(expected["miou"])
    assert recipe.evaluation.scales == (1.0,)  # the comparison above assumes single-scale evaluation


def test_predict_with_labels_for_every_image_and_an_unknown_class(
    bundle: Path, data: SegmentationData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_validation_images(data, tmp_path / "images")
    image = tmp_path / "images" / f"{data.val[0].name}.png"
    out = tmp_path / "out"
    # Class names win over indices: "2" is the digit 2, class index 3.
    assert (
        run_cli(["predict", str(bundle), str(image), "--out", str(out), "--image-labels", "2"], monkeypatch)
        == 0
    )
    assert set(np.unique(load_mask_png(out / "masks" / image.name))) <= {0, 3}
    arguments = ["predict", str(bundle), str(image), "--out", str(out), "--image-labels", "seven"]
    assert run_cli(arguments, monkeypatch) == 1


def test_eval_of_bundle_and_run_reproduces_the_run_results(
    bundle: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = json.loads((run_dir / "results.json").read_text())["nets"]
    capsys.readouterr()
    assert run_cli(["eval", str(bundle), "--data", str(run_dir), "--json"], monkeypatch) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["miou"] == pytest.approx(results["retrained"]["miou"])
    assert scores["miou_with_labels"] == pytest.approx(results["retrained"]["miou_with_labels"])
    assert scores["iou"] == results["retrained"]["iou"]

    assert run_cli(["eval", str(run_dir), "--net", "hybrid", "--json"], monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["miou_with_labels"] == pytest.approx(
        results["hybrid"]["miou_with_labels"]
    )
    assert run_cli(["eval", str(run_dir), "--net", "pseudo", "--set", "data.num_val=2"], monkeypatch) == 0
    table = capsys.readouterr().out
    assert "pseudo net on 2 images" in table and "mIoU" in table


def test_eval_of_a_bundle_needs_data(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["eval", str(bundle)], monkeypatch) == 1
    assert "--data" in capsys.readouterr().err


def test_export_of_a_missing_net_lists_the_available_ones(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["export", str(run_dir), "--net", "supervised", "--out", str(tmp_path)], monkeypatch) == 1
    assert "hybrid, pseudo" in capsys.readouterr().err


def test_onnx_export_matches_pytorch(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "bundle"
    arguments = ["export", str(run_dir), "--net", "hybrid", "--out", str(out), "--format", "onnx"]
    assert run_cli(arguments, monkeypatch) == 0
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    net = load_bundle(out).net
    for shape in ((1, 3, 32, 32), (2, 3, 48, 40)):  # batch and size differ from the export's
        images = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = net(images).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
