"""pctkit.engine.refine: post-processing in this process or in worker processes, with
the same confusion matrix either way."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from pctkit.engine.refine import Refiner, picklable_problem
from pctkit.metrics import ConfusionMatrix


class Sharpen:
    """A picklable stand-in for the dense CRF: favours higher classes on bright pixels,
    so that it changes some predictions but not all."""

    def __call__(
        self, image: npt.NDArray[np.uint8], probabilities: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        assert image.dtype == np.uint8 and image.shape[:2] == probabilities.shape[1:]
        bright = image.mean(axis=2) / 255.0
        classes = np.arange(len(probabilities), dtype=np.float32)[:, None, None]
        sharpened = probabilities * (1.0 + classes * bright[None])
        result: npt.NDArray[np.float32] = (sharpened / sharpened.sum(axis=0, keepdims=True)).astype(
            np.float32
        )
        return result


class Broken:
    def __call__(self, image: Any, probabilities: Any) -> Any:
        raise ValueError("the binding failed on this image")


def _images(count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = []
    for index in range(count):
        height, width = 12 + index, 9 + 2 * index  # sizes vary, as VOC's do
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        logits = torch.randn(4, height, width, generator=generator)
        mask = torch.randint(0, 4, (height, width), generator=generator)
        mask[0, :3] = 255
        images.append((image, logits, mask))
    return images


def _counted(postprocess: Any, workers: int, images: list[Any]) -> torch.Tensor:
    matrix = ConfusionMatrix(4)
    with Refiner(postprocess, matrix, workers) as refiner:
        for image, logits, mask in images:
            refiner.add(image, logits, mask)
    return matrix.matrix


def test_workers_count_the_same_images_as_one_process() -> None:
    images = _images(7)
    here = _counted(Sharpen(), 0, images)
    assert int(here.sum()) == sum(int((mask != 255).sum()) for *_, mask in images)
    plain = ConfusionMatrix(4)
    for _, logits, mask in images:
        plain.update(logits.argmax(0), mask)
    assert not torch.equal(here, plain.matrix)  # the post-processing changed predictions
    assert torch.equal(_counted(Sharpen(), 2, images), here)


def test_a_worker_error_reaches_the_caller_and_the_pool_stops() -> None:
    with pytest.raises(ValueError, match="the binding failed on this image"):
        _counted(Broken(), 1, _images(3))


def test_a_post_processing_that_cannot_be_pickled_is_named() -> None:
    def local(image: Any, probabilities: Any) -> Any:
        return probabilities

    assert picklable_problem(Sharpen()) is None
    problem = picklable_problem(local)
    assert problem is not None and "cannot be sent to worker processes" in problem
    with pytest.raises(ValueError, match=r"evaluation.postprocess_workers = 2: function cannot be sent"):
        _counted(local, 2, _images(1))
    # In this process it needs no pickling: the identity leaves the plain predictions.
    plain = ConfusionMatrix(4)
    for _, logits, mask in _images(2):
        plain.update(logits.argmax(0), mask)
    assert torch.equal(_counted(local, 0, _images(2)), plain.matrix)
