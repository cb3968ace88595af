"""Parameter checks shared by the augmentation factories (no torch: factories stay light)."""

from __future__ import annotations

from pctkit.components.contracts import ParameterError

MAX_SEED = 2**63
"""Seeds are ints in ``[0, MAX_SEED)`` (the engine's 63-bit stable seeds)."""

IMAGENET_MEAN_COLOUR = (124, 116, 104)
"""ImageNet's mean (0.485, 0.456, 0.406) times 255, rounded: the colour a normalised
image has where the released code pads it with 0 after normalising."""


def ordered_range(
    parameter: str,
    value: tuple[float, float],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> tuple[float, float]:
    """``(low, high)`` with ``low <= high`` inside the allowed bounds, as floats.

    Raises:
        ParameterError: naming ``parameter``, when the range is reversed or out of bounds.
    """
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ParameterError(parameter, f"must satisfy min <= max, got [{value[0]}, {value[1]}]")
    if positive and low <= 0:
        raise ParameterError(
            parameter, f"must satisfy 0 < min <= max, got [{value[0]}, {value[1]}]", hint="e.g. [0.5, 2.0]"
        )
    if minimum is not None and low < minimum:
        raise ParameterError(parameter, f"must not go below {minimum}, got [{value[0]}, {value[1]}]")
    if maximum is not None and high > maximum:
        raise ParameterError(parameter, f"must not go above {maximum}, got [{value[0]}, {value[1]}]")
    return low, high


def within(parameter: str, value: float, minimum: float, maximum: float) -> float:
    """``value`` as a float, checked to lie in ``[minimum, maximum]``."""
    if not minimum <= value <= maximum:
        raise ParameterError(parameter, f"must lie in [{minimum}, {maximum}], got {value}")
    return float(value)


def crop_side(value: int) -> int:
    """A crop side: 0 (no crop) or a positive number of pixels."""
    if value < 0:
        raise ParameterError("crop_size", f"must be >= 0 (0 keeps the size), got {value}")
    return int(value)


def fill_colour(value: tuple[int, int, int]) -> tuple[int, int, int]:
    """An RGB colour of three values in 0..255."""
    if len(value) != 3 or not all(0 <= int(channel) <= 255 for channel in value):
        raise ParameterError(
            "fill",
            f"must be three values in 0..255 (R, G, B), got {list(value)}",
            hint="e.g. [124, 116, 104]",
        )
    red, green, blue = (int(channel) for channel in value)
    return red, green, blue
