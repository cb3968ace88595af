"""pctkit.artifacts.bundle, ``pctkit export`` and ``pctkit.load_model``: a trained net that
travels without its run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import run_cli

import pctkit
from pctkit.artifacts.bundle import Bundle, ExportError, choose_role, is_bundle
from pctkit.artifacts.models import read_metadata
from pctkit.engine.inference import load_bundle, net_from_file


def test_bundle_holds_weights_metadata_model_recipe_and_card(tiny_bundle: Path, tiny_run_dir: Path) -> None:
    assert sorted(p.name for p in tiny_bundle.iterdir()) == ["README.md", "model.safetensors", "recipe.toml"]
    assert is_bundle(tiny_bundle) and not is_bundle(tiny_run_dir)
    metadata = read_metadata(tiny_bundle / "model.safetensors")
    assert metadata["format"] == "pctkit.bundle.v1"
    assert metadata["class_names"] == ["background", "0", "1", "2"]
    assert metadata["role"] == "retrained"
    assert metadata["pctkit_version"] == pctkit.__version__
    assert metadata["experiment"] == "tiny" and metadata["num_classes"] == 4
    assert metadata["input_size"] == [32, 32]
    assert metadata["environment"]["components"]["model.backbone"]["type"] == "timm"
    assert metadata["environment"]["packages"]["pctkit"] == pctkit.__version__
    assert len(metadata["mean"]) == len(metadata["std"]) == 3
    assert len(metadata["palette"]) == 4
    recipe = Bundle(tiny_bundle).read_recipe()
    assert recipe["model"]["backbone"]["model_name"] == "test_resnet"
    assert set(recipe) == {"model", "evaluation"} and "num_pictures" not in recipe["evaluation"]
    card = (tiny_bundle / "README.md").read_text()
    results = json.loads((tiny_run_dir / "results.json").read_text())
    for role, summary in results["nets"].items():
        assert f"{summary['miou']:.4f}" in card, role
    assert "retrained (this bundle)" in card and "pctkit.load_model" in card


def test_load_model_rebuilds_the_net_from_the_bundle_alone(tiny_bundle: Path, tiny_run_dir: Path) -> None:
    net = pctkit.load_model(tiny_bundle)
    assert isinstance(net, torch.nn.Module) and not net.training
    reference, _ = net_from_file(tiny_run_dir / "retrained_net.safetensors")
    images = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(images), reference(images))


def test_load_model_takes_a_run_directory_with_a_net_or_one_weights_file(
    tiny_bundle: Path, tiny_run_dir: Path, tmp_path: Path
) -> None:
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hybrid, _ = net_from_file(tiny_run_dir / "hybrid_net.safetensors")
    with torch.no_grad():
        expected = hybrid(images)
        assert torch.equal(pctkit.load_model(tiny_run_dir, net="hybrid")(images), expected)
        assert torch.equal(pctkit.load_model(tiny_run_dir / "hybrid_net.safetensors")(images), expected)
        assert torch.equal(pctkit.load_model(tiny_run_dir)(images), pctkit.load_model(tiny_bundle)(images))
    with pytest.raises(ExportError, match="choosing a net"):
        pctkit.load_model(tiny_bundle, net="hybrid")
    with pytest.raises(ExportError, match="no such file or folder"):
        pctkit.load_model(tmp_path / "nowhere")
    with pytest.raises(ExportError, match="neither a bundle"):
        pctkit.load_model(tmp_path)


def test_a_folder_that_is_no_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is not a pctkit bundle"):
        load_bundle(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "recipe.toml").write_text("[evaluation]\n")
    with pytest.raises(ExportError, match=r"recipe\.toml has no \[model\] section"):
        Bundle(tmp_path).read_recipe()


def test_choose_role_defaults_to_the_retrained_net(tiny_run_dir: Path, tmp_path: Path) -> None:
    assert choose_role(tiny_run_dir, None) == "retrained"
    assert choose_role(tiny_run_dir, "pseudo") == "pseudo"
    with pytest.raises(ExportError, match="has no supervised net; it has: retrained, hybrid, pseudo"):
        choose_role(tiny_run_dir, "supervised")
    with pytest.raises(ExportError, match="holds no trained net"):
        choose_role(tmp_path, None)


def test_export_of_a_missing_net_lists_the_available_ones(
    tiny_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli(["export", str(tiny_run_dir), "--net", "supervised", "--out", str(tmp_path)], monkeypatch)
        == 1
    )
    error = capsys.readouterr().err
    assert "hybrid, pseudo" in error and "Traceback" not in error


def test_onnx_export_matches_pytorch(
    tiny_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "bundle"
    arguments = ["export", str(tiny_run_dir), "--net", "hybrid", "--out", str(out), "--format", "onnx"]
    assert run_cli(arguments, monkeypatch) == 0
    assert read_metadata(out / "model.safetensors")["role"] == "hybrid"
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    net = load_bundle(out).net
    for shape in ((1, 3, 32, 32), (2, 3, 48, 40)):  # batch and size differ from the export's
        images = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = net(images).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
