"""pctkit.artifacts.models: network weights with the metadata to use them alone, and
errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pctkit.artifacts.models import (
    WeightsFileError,
    load_weights,
    read_metadata,
    read_tensors,
    save_net,
    without_initial_weights,
)
from pctkit.version import __version__

MODEL = {"backbone": {"type": "timm", "pretrained": "weights/r.safetensors", "model_name": "x"}, "head": {}}


class Net(nn.Module):
    def __init__(self, width: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, width, 1)
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.2, 0.2]).view(1, 3, 1, 1))


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "hybrid_net.safetensors"
    save_net(
        path,
        Net(),
        role="hybrid",
        class_names=["background", "cat"],
        model_section=MODEL,
        extra={"input_size": [32, 32]},
    )
    return path


def test_saved_weights_carry_what_rebuilds_and_uses_the_net(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    metadata = read_metadata(path)
    assert metadata["format"] == "pctkit.net.v1" and metadata["pctkit_version"] == __version__
    assert metadata["role"] == "hybrid" and metadata["class_names"] == ["background", "cat"]
    assert metadata["mean"] == pytest.approx([0.5, 0.4, 0.3]) and metadata["std"] == pytest.approx([0.2] * 3)
    assert metadata["model"] == MODEL and metadata["input_size"] == [32, 32]
    fresh = Net()
    nn.init.zeros_(fresh.conv.weight)
    load_weights(fresh, path)
    assert torch.equal(fresh.conv.weight, Net().conv.weight)


def test_missing_and_truncated_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsFileError, match=r"missing\.safetensors: the file is missing"):
        read_metadata(tmp_path / "missing.safetensors")
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(WeightsFileError, match=rf"{path.name}: not a complete safetensors file"):
        read_tensors(path)
    with pytest.raises(WeightsFileError, match=path.name):
        load_weights(Net(), path)


def test_tensors_that_do_not_fit_the_network_are_listed(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with pytest.raises(WeightsFileError) as raised:
        load_weights(Net(width=3), path)
    message = str(raised.value)
    assert (
        str(path) in message
        and "2 of another shape" in message
        and "conv.weight [2, 3, 1, 1] in the file, [3, 3, 1, 1] in the network" in message
    )
    with pytest.raises(WeightsFileError, match=r"1 tensors missing from the file: extra"):

        class Larger(Net):
            def __init__(self) -> None:
                super().__init__()
                self.extra = nn.Linear(1, 1, bias=False)

        load_weights(Larger(), path)


def test_without_initial_weights_drops_pretrained_keys_only() -> None:
    cleaned = without_initial_weights(MODEL)
    assert cleaned == {"backbone": {"type": "timm", "model_name": "x"}, "head": {}}
    assert MODEL["backbone"]["pretrained"] == "weights/r.safetensors"  # the input is untouched
    assert json.dumps(cleaned)
