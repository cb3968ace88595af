"""``self_training``: a stage-1 method of its own, the baseline a third party might add.

Confidence-threshold self-training with one net: the strong images teach it through
their masks; on the weak images it learns from its own class-aware predictions (the
argmax over the classes each image contains), but only at pixels where it is at least
``threshold`` sure. No pseudo net, no dynamic evaluation.

A method follows pctkit's method contract (``pctkit.methods.base``): the factory takes
``MethodInputs`` positionally (pctkit supplies nets, losses and the class count) and
its typed keyword parameters; the object it returns trains ``nets`` through ``step``.
This module imports only that light contract: the step's code is imported when the
method is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pctkit.methods.base import Method, MethodInputs


def self_training(inputs: MethodInputs, /, *, threshold: float = 0.9, weak_weight: float = 1.0) -> Method:
    """Self-training with a confidence threshold: one net learns from its own sure labels.

    Args:
        threshold: least class-aware softmax probability a weak pixel's own prediction
            needs to become its label; other weak pixels are ignored.
        weak_weight: weight of the loss on the weak images' confident pixels.
    """
    from pctkit.components.contracts import ParameterError

    if not 0.0 <= threshold < 1.0:
        raise ParameterError("threshold", f"must be in [0, 1), got {threshold}", "0.9 is a common choice")
    if weak_weight < 0:
        raise ParameterError("weak_weight", f"must be >= 0, got {weak_weight}")
    from pctkit_example_plugin._self_training import SelfTraining

    return SelfTraining(inputs, threshold, weak_weight)
