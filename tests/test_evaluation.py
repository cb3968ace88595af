"""pctkit.engine.evaluation: mIoU at full resolution, whole images or sliding windows."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from pctkit.components.datasets.voc import voc
from pctkit.engine.evaluation import SlidingWindow, class_aware_or_plain, evaluate


class ShapeRecorder(nn.Module):
    """A per-pixel net (1x1 convolution) that records the input sizes it sees."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, images: Tensor) -> Tensor:
        self.sizes.append((int(images.shape[-2]), int(images.shape[-1])))
        logits: Tensor = self.conv(images)
        return logits


def test_sliding_window_covers_the_image_with_windows() -> None:
    net = ShapeRecorder()
    images = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        whole = net(images)
        net.sizes.clear()
        sliding = SlidingWindow(net, window=16, stride=10)(images)
    # Rows start at 0, 10, 20, 21; columns at 0, 10, 20, 30, 34: the last flush with the edge.
    assert net.sizes == [(16, 16)] * 20
    assert torch.allclose(sliding, whole, atol=1e-5)  # a per-pixel net sees no seams


def test_sliding_window_larger_than_the_image_is_one_pass() -> None:
    net = ShapeRecorder()
    with torch.no_grad():
        SlidingWindow(net, window=512, stride=341)(torch.rand(1, 3, 40, 30))
    assert net.sizes == [(40, 30)]


def test_evaluation_at_full_resolution_whole_or_sliding(tiny_voc: Path) -> None:
    data = voc(root=str(tiny_voc), num_strong=4)
    net = ShapeRecorder()
    whole = evaluate(net, data.val, data.class_names, torch.device("cpu"), batch_size=1)
    assert sorted(set(net.sizes)) == [(48, 64), (56, 60)]  # every image at its own size
    net.sizes.clear()
    sliding = evaluate(
        net, data.val, data.class_names, torch.device("cpu"), batch_size=2, sliding_window=(32, 21)
    )
    assert set(net.sizes) == {(32, 32)}
    assert torch.equal(sliding.plain.matrix, whole.plain.matrix)
    labelled = sum(int((data.val[i].mask != 255).sum()) for i in range(len(data.val)))  # type: ignore[operator]
    assert int(whole.plain.matrix.sum()) == labelled


def test_results_summarise_plain_and_class_aware_scores(tiny_voc: Path) -> None:
    data = voc(root=str(tiny_voc), num_strong=4)
    result = evaluate(
        ShapeRecorder(), data.val, data.class_names, torch.device("cpu"), batch_size=2, num_examples=2
    )
    summary = result.summary()
    assert set(summary) >= {"miou", "miou_with_labels", "iou", "iou_with_labels", "pixel_accuracy"}
    assert list(summary["iou"]) == data.class_names
    assert 0.0 <= summary["miou"] <= summary["miou_with_labels"] <= 1.0  # labels only remove wrong classes
    assert len(result.examples) == 2
    example = result.examples[0]
    assert set(example["prediction_with_labels"].unique().tolist()) <= {0, *data.val[0].image_labels}


def test_class_aware_or_plain() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0]])[:, :, None, None]
    assert class_aware_or_plain(logits, None).item() == 1
    assert class_aware_or_plain(logits, torch.tensor([[1.0, 0.0, 1.0]])).item() == 2
