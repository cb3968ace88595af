"""Old spellings of recipe keys, rewritten to the current ones with a note for each.

A recipe written for an earlier pctkit keeps working: each moved key is rewritten in
the raw data before validation, and a note (shown by ``pctkit validate`` and ``pctkit
run``) gives the new spelling. The saved, resolved recipe of a run uses the new one.
"""

from __future__ import annotations

from typing import Any

from pctkit.recipe.issues import RecipeIssue

# cross_training.loss_weights.<term> -> the parameter of each built-in method that has it.
_LOSS_WEIGHTS = {"strong": "strong_weight", "cls": "cls_weight", "h2p": "h2p_weight", "p2h": "p2h_weight"}
_METHOD_PARAMETERS = {
    "pct": {"score_power", "score_momentum", *_LOSS_WEIGHTS.values()},
    "hybrid": {"strong_weight", "cls_weight"},
    "supervised": set(),
}


def _note(path: str, message: str, hint: str) -> RecipeIssue:
    return RecipeIssue(path=path, message=f"deprecated: {message}", hint=hint)


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_STREAMS = ("strong", "weak", "retrain")


def _migrate_augmentation(raw: dict[str, Any]) -> list[RecipeIssue]:
    """``[augmentation]`` keys of one pipeline for every stream -> one ``scale_crop_flip``
    section per stream (the same augmentation, bit for bit)."""
    section = raw.get("augmentation")
    if not isinstance(section, dict):
        return []
    flat = {key: value for key, value in section.items() if key not in _STREAMS}
    if not flat:
        return []
    for key in flat:
        del section[key]
    for stream in _STREAMS:
        section.setdefault(stream, {"type": "scale_crop_flip", **flat})
    return [
        _note(
            "augmentation",
            "one augmentation pipeline per stream now",
            "write [augmentation.strong], [augmentation.weak] and [augmentation.retrain], each with "
            'type = "scale_crop_flip" and these keys',
        )
    ]


def migrate(raw: dict[str, Any]) -> list[RecipeIssue]:
    """Rewrite old spellings in ``raw`` in place; returns one note per rewritten key."""
    notes: list[RecipeIssue] = _migrate_augmentation(raw)
    cross = raw.get("cross_training")
    if not isinstance(cross, dict):
        return notes
    if "skip_nonfinite" in cross:
        value = cross.pop("skip_nonfinite")
        experiment = raw.setdefault("experiment", {})
        if isinstance(experiment, dict):
            experiment.setdefault("skip_nonfinite", value)
        notes.append(
            _note(
                "cross_training.skip_nonfinite",
                "skip_nonfinite governs both training stages and moved to [experiment]",
                f"write [experiment] skip_nonfinite = {_toml(value)}",
            )
        )
    moved = {key: cross.pop(key) for key in ("mode", "score_power", "score_momentum") if key in cross}
    weights = cross.pop("loss_weights", None)
    if not moved and weights is None:
        return notes
    method = raw.get("method")
    if not isinstance(method, dict):
        method = raw["method"] = {}
    if "mode" in moved:
        mode = moved.pop("mode")
        if method.get("type") not in (None, mode):
            method.clear()  # another method: the old one's parameters would not fit it
        method["type"] = mode
        notes.append(
            _note(
                "cross_training.mode",
                "the stage-1 method is a component now",
                f"write [method] type = {_toml(mode)} (its parameters go in [method] too)",
            )
        )
    method_type = method.setdefault("type", "pct")
    accepted = _METHOD_PARAMETERS.get(str(method_type))
    renamed = dict(moved)
    if isinstance(weights, dict):
        renamed.update({_LOSS_WEIGHTS.get(str(k), f"{k}_weight"): v for k, v in weights.items()})
    for key, value in renamed.items():
        old = next((f"cross_training.loss_weights.{k}" for k, v in _LOSS_WEIGHTS.items() if v == key), None)
        old = old or f"cross_training.{key}"
        if accepted is not None and key not in accepted:
            notes.append(
                _note(
                    old,
                    f"method {method_type!r} has no parameter {key!r}; the key has no effect",
                    "remove it",
                )
            )
            continue
        method.setdefault(key, value)
        notes.append(
            _note(old, "method parameters moved to [method]", f"write [method] {key} = {_toml(value)}")
        )
    return notes
