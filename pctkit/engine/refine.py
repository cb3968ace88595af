"""Post-processing of final predictions (the dense CRF), image by image, here or in
worker processes.

The dense CRF of the released code takes about 1.7 s per VOC image on one CPU core:
40 minutes over VOC val in one process. With ``evaluation.postprocess_workers = N`` the
images are refined in N processes while the network predicts the next batches. The
scores are the same: a confusion matrix is a sum of counts, whatever the order in which
images are added to it.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from pctkit.metrics import ConfusionMatrix

Postprocess = Callable[[npt.NDArray[np.uint8], npt.NDArray[np.float32]], npt.NDArray[np.float32]]
"""A post-processing component: ``(image (H, W, 3) uint8, probabilities (C, H, W)) -> probabilities``."""


def refined_labels(
    postprocess: Postprocess, pixels: npt.NDArray[np.uint8], probabilities: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    """The plain prediction ``(H, W)`` of one image after post-processing its class
    probabilities (run in a worker process when there are workers)."""
    labels: npt.NDArray[np.int64] = postprocess(pixels, probabilities).argmax(axis=0)
    return labels


def refine(postprocess: Postprocess, image: Tensor, logits: Tensor) -> Tensor:
    """The plain prediction ``(H, W)`` of one image after post-processing its softmax
    probabilities (logits averaged first, as the released code does before its CRF)."""
    return torch.from_numpy(refined_labels(postprocess, *_inputs(image, logits)))


def _inputs(image: Tensor, logits: Tensor) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    probabilities = torch.softmax(logits.float(), dim=0).cpu().numpy()
    pixels = image.permute(1, 2, 0).contiguous().cpu().numpy()
    return pixels, probabilities


def picklable_problem(postprocess: Postprocess) -> str | None:
    """Why ``postprocess`` cannot be sent to worker processes, or ``None``."""
    try:
        pickle.dumps(postprocess)
    except Exception as error:  # pickle raises several kinds
        return f"{type(postprocess).__name__} cannot be sent to worker processes ({error})"
    return None


class Refiner:
    """Adds post-processed predictions to a confusion matrix: in this process, or in
    ``workers`` processes (at most two images per worker in flight). A context manager:
    leaving it waits for every image and stops the workers."""

    def __init__(self, postprocess: Postprocess, matrix: ConfusionMatrix, workers: int = 0) -> None:
        self.postprocess = postprocess
        self.matrix = matrix
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self.pending: deque[tuple[Future[npt.NDArray[np.int64]], Tensor]] = deque()

    def __enter__(self) -> Refiner:
        if self.workers > 0:
            problem = picklable_problem(self.postprocess)
            if problem is not None:
                raise ValueError(f"evaluation.postprocess_workers = {self.workers}: {problem}; set it to 0")
            # spawn: workers do not inherit the parent's threads, CUDA state or open files.
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self

    def add(self, image: Tensor, logits: Tensor, mask: Tensor) -> None:
        """Refine one image's prediction (``image (3, H, W)`` uint8, ``logits (C, H, W)``)
        and count it against ``mask (H, W)``."""
        if self.pool is None:
            self.matrix.update(refine(self.postprocess, image, logits), mask)
            return
        future = self.pool.submit(refined_labels, self.postprocess, *_inputs(image, logits))
        self.pending.append((future, mask))
        while len(self.pending) > 2 * self.workers:
            self._count_oldest()

    def _count_oldest(self) -> None:
        future, mask = self.pending.popleft()
        self.matrix.update(torch.from_numpy(future.result()), mask)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                while self.pending:
                    self._count_oldest()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=kind is None, cancel_futures=kind is not None)
