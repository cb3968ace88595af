"""Built-in backbones, and checks of what a backbone asks of its inputs.

Light: importing this package imports neither torch nor timm.
"""

from __future__ import annotations


def nearby_multiples(size: int, multiple: int) -> list[int]:
    """The two multiples of ``multiple`` around ``size``, the nearer first (both > 0)."""
    below = size // multiple * multiple
    above = below + multiple
    ordered = [above, below] if above - size < size - below else [below, above]
    return [value for value in ordered if value > 0]


def crop_size_issue(backbone: object, crop_size: int) -> str | None:
    """What is wrong with training crops of ``crop_size`` for ``backbone``, or ``None``.

    A backbone whose inputs must be multiples of some size (a ViT's patch size) states
    it as ``input_multiple``; it resizes other inputs to the nearest multiple, which
    works but wastes the crop's exact pixels and rescales every training image a little.
    ``crop_size`` 0 (no crop) and backbones without ``input_multiple`` are fine.

    Returns:
        a sentence naming the patch size and the nearest crop sizes that fit, e.g.
        ``"512 is not a multiple of the patch size 14 ...: use 518 or 504"``.
    """
    multiple = getattr(backbone, "input_multiple", None)
    if not isinstance(multiple, int) or multiple <= 1 or crop_size <= 0 or crop_size % multiple == 0:
        return None
    options = " or ".join(str(value) for value in nearby_multiples(crop_size, multiple))
    return (
        f"{crop_size} is not a multiple of the backbone's patch size {multiple}: every crop would "
        f"be resized to {nearby_multiples(crop_size, multiple)[0]} before the backbone; use {options}"
    )
