"""The built-in methods, registered through entry points as plugins' methods are.

Each factory takes :class:`~pctkit.methods.base.MethodInputs` positionally and its
recipe parameters as typed keywords. The implementations are imported when a method is
built, so that listing the methods imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pctkit.methods.base import Method, MethodInputs


def pct(
    inputs: MethodInputs,
    /,
    *,
    score_power: float = 8.0,
    score_momentum: float = 0.99,
    strong_weight: float = 1.0,
    cls_weight: float = 1.0,
    h2p_weight: float = 1.0,
    p2h_weight: float = 1.0,
    weight_rule: Literal["released", "strict"] = "released",
    p2h_mean: Literal["all_weak_pixels", "valid_pixels"] = "all_weak_pixels",
) -> Method:
    """Progressive cross training: hybrid and pseudo nets teach each other (the method).

    Args:
        score_power: power γ of the weak images' weight w = (min J)^γ.
        score_momentum: momentum m of the dynamic evaluation's running counts.
        strong_weight: weight of L_CCE(H, gt) on the strong half.
        cls_weight: weight of the hybrid net's classification loss on the whole batch.
        h2p_weight: weight of L_CCE(P, Ŷ_h) on the weak half (hybrid -> pseudo).
        p2h_weight: weight of the w-weighted L_CCE(H, Ŷ_p) on the weak half (pseudo -> hybrid).
        weight_rule: 'released': classes the pseudo net has never hit (J = 0) leave the
            min, an image with no scored class gets w = 1 (the authors' code); 'strict':
            they count, and w = 0 until every present class is hit.
        p2h_mean: 'all_weak_pixels': the pseudo -> hybrid mean divides by every pixel of
            the weak half (the authors' code); 'valid_pixels': by its labelled pixels.
    """
    from pctkit.methods.pct import PCT, PCTSettings

    for name, value in (
        ("score_power", score_power),
        *_weights(strong_weight, cls_weight, h2p_weight, p2h_weight),
    ):
        _non_negative(name, value)
    if not 0.0 <= score_momentum < 1.0:
        from pctkit.components.contracts import ParameterError

        raise ParameterError("score_momentum", f"must be in [0, 1), got {score_momentum}")
    settings = PCTSettings(
        strong=strong_weight,
        cls=cls_weight,
        h2p=h2p_weight,
        p2h=p2h_weight,
        score_power=score_power,
        weight_rule=weight_rule,
        p2h_mean=p2h_mean,
    )
    return PCT(inputs, settings, score_momentum)


def hybrid(inputs: MethodInputs, /, *, strong_weight: float = 1.0, cls_weight: float = 1.0) -> Method:
    """The hybrid net alone: strong class-aware CE plus the image-label classification loss.

    Args:
        strong_weight: weight of L_CCE(H, gt) on the strong half.
        cls_weight: weight of the classification loss on the whole batch.
    """
    from pctkit.methods.hybrid import Hybrid

    for name, value in _weights(strong_weight, cls_weight):
        _non_negative(name, value)
    return Hybrid(inputs, strong_weight, cls_weight)


def supervised(inputs: MethodInputs, /) -> Method:
    """One net on the strong masks only, plain cross entropy: the baseline without image labels.

    Its net starts from the hybrid net's initial weights, so the arms of an ablation
    differ in their losses only.
    """
    from pctkit.components.losses import cross_entropy
    from pctkit.methods.supervised import Supervised

    return Supervised(inputs.new_net("supervised", init_like="hybrid"), "supervised", cross_entropy())


def _weights(*values: float) -> list[tuple[str, float]]:
    names = ("strong_weight", "cls_weight", "h2p_weight", "p2h_weight")
    return list(zip(names, values, strict=False))


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        from pctkit.components.contracts import ParameterError

        raise ParameterError(name, f"must be >= 0, got {value}")
