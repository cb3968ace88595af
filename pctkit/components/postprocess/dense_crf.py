"""``dense_crf``: fully connected CRF refinement of class probabilities (pydensecrf2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pctkit.components.contracts import ParameterError

MIN_PROBABILITY = 1e-5
"""Probabilities are clipped to this before the log (pydensecrf's ``unary_from_softmax``
default, which the released code uses)."""

INSTALL_HINT = "pip install 'pctkit[crf]'"


@dataclass(frozen=True)
class DenseCRF:
    """Mean-field inference of a dense CRF with a Gaussian and a bilateral kernel.

    Unary energies are ``-log(max(p, 1e-5))``. Pairwise: a Gaussian (smoothness)
    kernel over position and a bilateral (appearance) kernel over position and RGB,
    each with Potts compatibility.
    """

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 32.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 1

    def __call__(
        self, image: npt.NDArray[np.uint8], probabilities: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Refined probabilities ``(C, H, W)`` of ``image`` ``(H, W, 3)`` uint8."""
        import pydensecrf.densecrf as dcrf

        if probabilities.ndim != 3:
            raise ValueError(f"probabilities must be (C, H, W), got shape {probabilities.shape}")
        classes, height, width = probabilities.shape
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(
                f"image must be uint8 ({height}, {width}, 3) to match the probabilities, "
                f"got {image.dtype} {image.shape}"
            )
        unary = -np.log(np.clip(probabilities.reshape(classes, -1), MIN_PROBABILITY, 1.0))
        crf = dcrf.DenseCRF2D(width, height, classes)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=self.gaussian_sxy, compat=self.gaussian_compat)
        crf.addPairwiseBilateral(
            sxy=self.bilateral_sxy,
            srgb=self.bilateral_srgb,
            rgbim=np.ascontiguousarray(image),
            compat=self.bilateral_compat,
        )
        refined = np.asarray(crf.inference(self.iterations), dtype=np.float32)
        return refined.reshape(classes, height, width)


def dense_crf(
    *,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 32.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
    iterations: int = 1,
) -> DenseCRF:
    """Dense CRF refinement of softmax probabilities (needs the ``crf`` extra: pydensecrf2).

    The defaults are the released PCT code's (``lib/utils/DenseCRF.py``), which applies
    it to the softmax of the test-time-averaged logits of the retrained net.

    Args:
        gaussian_sxy: spatial standard deviation of the smoothness kernel, pixels.
        gaussian_compat: weight of the smoothness kernel (Potts).
        bilateral_sxy: spatial standard deviation of the appearance kernel, pixels.
        bilateral_srgb: colour standard deviation of the appearance kernel (0..255 RGB).
        bilateral_compat: weight of the appearance kernel (Potts).
        iterations: mean-field iterations.
    """
    for name, value in {
        "gaussian_sxy": gaussian_sxy,
        "bilateral_sxy": bilateral_sxy,
        "bilateral_srgb": bilateral_srgb,
    }.items():
        if not value > 0:
            raise ParameterError(name, f"must be > 0, got {value}")
    for name, value in {"gaussian_compat": gaussian_compat, "bilateral_compat": bilateral_compat}.items():
        if value < 0:
            raise ParameterError(name, f"must be >= 0 (0 disables the kernel), got {value}")
    if iterations < 1:
        raise ParameterError("iterations", f"must be >= 1, got {iterations}", hint="the released code uses 1")
    try:
        import pydensecrf.densecrf  # noqa: F401  (the binding is optional)
    except ImportError as error:
        raise ParameterError(
            "type", f"dense_crf needs pydensecrf2, which is not installed ({error})", hint=INSTALL_HINT
        ) from None
    return DenseCRF(
        gaussian_sxy=float(gaussian_sxy),
        gaussian_compat=float(gaussian_compat),
        bilateral_sxy=float(bilateral_sxy),
        bilateral_srgb=float(bilateral_srgb),
        bilateral_compat=float(bilateral_compat),
        iterations=int(iterations),
    )
