"""``pctkit predict`` (pctkit.cli.predict): masks and overlays from a bundle or a run,
matching the run's own evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import one_thread, run_cli

from pctkit.cli.app import UserError
from pctkit.cli.predict import image_files, label_lookup, load_predictor, overlay
from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import build_data
from pctkit.engine.evaluation import evaluate
from pctkit.engine.inference import net_from_file
from pctkit.metrics import ConfusionMatrix
from pctkit.palette import load_mask_png
from pctkit.recipe import load_recipe


@pytest.fixture(scope="module")
def data(tiny_run_dir: Path) -> SegmentationData:
    return build_data(load_recipe(tiny_run_dir / "recipe.toml"))


def _write_validation_images(data: SegmentationData, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(len(data.val)):
        sample = data.val[index]
        Image.fromarray(sample.image).save(folder / f"{sample.name}.png")
        names.append(sample.name)
    return names


def test_predict_writes_the_masks_of_the_in_run_evaluation_and_skips_a_corrupt_image(
    tiny_bundle: Path,
    tiny_run_dir: Path,
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
        run_cli(["predict", str(tiny_bundle), str(tmp_path / "images"), "--out", str(plain_out)], monkeypatch)
        == 1
    )
    error = capsys.readouterr().err
    assert "aaa_corrupt.png" in error and "1 of 5" in error
    arguments = ["predict", str(tiny_bundle), str(tmp_path / "images"), "--out", str(labelled_out)]
    assert run_cli([*arguments, "--image-labels", str(tmp_path / "labels.json"), "--quiet"], monkeypatch) == 1

    # The in-run evaluation of the run's own net, on the same images.
    recipe = load_recipe(tiny_run_dir / "recipe.toml")
    net, _ = net_from_file(tiny_run_dir / "retrained_net.safetensors")
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
        overlaid = np.asarray(Image.open(plain_out / "overlays" / f"{example['name']}.png"))
        assert overlaid.shape == (*plain.shape, 3)
    expected = json.loads((tiny_run_dir / "results.json").read_text())["nets"]["retrained"]
    assert matrix.miou() == pytest.approx(expected["miou"])
    assert recipe.evaluation.scales == (1.0,)  # the comparison above assumes single-scale evaluation


def test_predict_with_labels_for_every_image_and_an_unknown_class(
    tiny_bundle: Path, data: SegmentationData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_validation_images(data, tmp_path / "images")
    image = tmp_path / "images" / f"{data.val[0].name}.png"
    out = tmp_path / "out"
    # Class names win over indices: "2" is the digit 2, class index 3.
    arguments = ["predict", str(tiny_bundle), str(image), "--out", str(out)]
    assert run_cli([*arguments, "--image-labels", "2"], monkeypatch) == 0
    assert set(np.unique(load_mask_png(out / "masks" / image.name))) <= {0, 3}
    assert run_cli([*arguments, "--image-labels", "seven"], monkeypatch) == 1


def test_a_run_net_and_a_bundle_are_both_targets(
    tiny_run_dir: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    assert load_predictor(tiny_run_dir, "pseudo", "cpu").metadata["role"] == "pseudo"
    assert load_predictor(tiny_bundle, None, "cpu").metadata["role"] == "retrained"
    with pytest.raises(
        UserError, match=r"holds one net; choosing a net \(--net\) applies to run directories"
    ):
        load_predictor(tiny_bundle, "hybrid", "cpu")
    with pytest.raises(UserError, match=r"neither a bundle .*, a run directory .* nor a weights file"):
        load_predictor(tmp_path, None, "cpu")


def test_image_files_and_label_lookup(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert image_files([tmp_path]) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    with pytest.raises(UserError, match="no such file or folder"):
        image_files([tmp_path / "missing.png"])
    predictor = load_predictor(tiny_bundle, None, "cpu")
    assert label_lookup(None, predictor)(tmp_path / "a.JPG") is None
    assert label_lookup("0,background", predictor)(tmp_path / "x.png") == [0, 1]
    table = tmp_path / "labels.json"
    table.write_text(json.dumps({"a.JPG": ["1"], "b": [3]}))
    lookup = label_lookup(str(table), predictor)
    assert lookup(tmp_path / "a.JPG") == [2] and lookup(tmp_path / "b.png") == [3]
    assert lookup(tmp_path / "c.png") is None


def test_overlay_blends_only_foreground_pixels() -> None:
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1]], dtype=np.uint8)
    blended = overlay(image, mask, [(0, 0, 0), (200, 0, 0)])
    assert blended[0, 0].tolist() == [100, 100, 100]
    assert blended[0, 1].tolist() == [150, 50, 50]
