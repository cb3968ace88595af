"""Training augmentations: image and mask transformed together, decided by a seed.

Augmentation contract
---------------------
An augmentation factory (entry-point group ``pctkit.augmentations``) takes only
keyword recipe parameters and returns a picklable callable object::

    aug(image, mask, seed) -> (image, mask)

- ``image``: ``uint8`` tensor ``(3, H, W)``, RGB; ``mask``: ``int64`` tensor ``(H, W)``
  of class indices, 255 (:data:`pctkit.constants.IGNORE_INDEX`) where no label.
  The output has the same types; its size may differ from the input's.
- ``seed``: an ``int`` in ``[0, 2**63)``. The output is a function of
  ``(image, mask, seed)`` alone: no global random state is read or changed (no
  ``random``, ``numpy.random.*`` or ``torch`` global generator), so the same seed gives
  the same pixels in the main process, in any DataLoader worker, and after a resume.
- Geometry is shared by image and mask. Masks are resampled with nearest neighbour and
  filled with 255 wherever no source pixel exists; images are filled with a colour
  (the dataset's mean colour unless the component says otherwise).
- Attribute ``crop_size: int``: the side of the square output, or 0 when the output
  size is not fixed (the input's size, or a rescaled one).

Built-in augmentations:

- ``scale_crop_flip``: the augmentation pctkit's recipes had before components
  (scale, rotation, crop, flip, colour jitter, blur), bit-identical to it.
- ``random_ops_crop``: the released PCT code's strong stream (random photometric and
  joint geometric operations, then a random crop).
- ``crop``: the released code's weak stream (a random crop only).

The factory modules import no torch, so that listing components stays fast; the
implementations live in the private modules they import when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor


class Augmentation(Protocol):
    """What every augmentation factory returns (see the module's contract)."""

    crop_size: int

    def __call__(self, image: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]: ...
