"""The recipe schema: every section and key a recipe may hold, with its default.

The static models below are what the engine reads. A *component slot* (``[data]``,
``[model.backbone]``, ``[method]``, ...) is declared once, with :func:`component`: its
kind, description and default component. Everything else is derived from those
declarations: the map of slot paths (:func:`component_slots`), the registry-aware model
in which each slot is the union of the registered components' parameter models
(:func:`recipe_model`), and from it the JSON Schema.

Keys that a resumed run may change (where and how often it reports, not what it
computes) are declared with :data:`MAY_CHANGE_ON_RESUME`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from pctkit.recipe.base import (
    MAY_CHANGE_ON_RESUME,
    RESUME_KEY,
    SLOT_KEY,
    ComponentSpec,
    StrictModel,
    component,
    slot_kind,
)

# Re-exported: the schema's building blocks are read through this module too.
__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "RESUME_KEY",
    "SLOT_KEY",
    "ComponentSpec",
    "StrictModel",
    "component",
    "slot_kind",
]

# --------------------------------------------------------------------------- sections


class Experiment(StrictModel):
    """Run identity, hardware and numerics."""

    name: str = Field(description="Name of the experiment; the run directory is named after it.")
    seed: int = Field(0, description="Seed of every random number generator.")
    output_dir: str = Field(
        "runs", description="Folder that holds run directories.", json_schema_extra=MAY_CHANGE_ON_RESUME
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision; fp16 uses a gradient scaler and needs CUDA."
    )
    channels_last: bool = Field(False, description="Use the channels-last memory format.")
    compile: bool = Field(False, description="Compile the networks with torch.compile.")
    deterministic: bool = Field(True, description="Use deterministic algorithms (bit-exact resume on CPU).")
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads of torch's operations (torch.set_num_threads); 0 keeps torch's choice. "
        "On a small or shared machine 1 is often fastest: threads that wait for each other cost more "
        "than they give.",
        json_schema_extra=MAY_CHANGE_ON_RESUME,
    )
    skip_nonfinite: bool = Field(
        False,
        description="Skip a training step whose loss is NaN/inf instead of stopping the run "
        "(both training stages).",
    )


class Augmentation(StrictModel):
    """Training-time augmentation: one pipeline per stream, applied to image and mask
    together (see `pctkit list augmentations`)."""

    strong: ComponentSpec = component(
        "augmentations",
        "The strong (pixel-labelled) images of stage 1 (released code: random_ops_crop).",
        "scale_crop_flip",
    )
    weak: ComponentSpec = component(
        "augmentations", "The weak images of stage 1 (released code: crop only).", "scale_crop_flip"
    )
    retrain: ComponentSpec = component(
        "augmentations", "Every image of retraining (released code: the strong stream).", "scale_crop_flip"
    )


class Loader(StrictModel):
    """Data loading."""

    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes.", json_schema_extra=MAY_CHANGE_ON_RESUME
    )
    pin_memory: bool = Field(
        True, description="Pin host memory (CUDA only).", json_schema_extra=MAY_CHANGE_ON_RESUME
    )
    persistent_workers: bool = Field(
        True, description="Keep workers alive between epochs.", json_schema_extra=MAY_CHANGE_ON_RESUME
    )


class Model(StrictModel):
    """A segmentation network: backbone + head."""

    backbone: ComponentSpec = component("backbones", "The feature extractor.")
    head: ComponentSpec = component("heads", "The segmentation head.")
    sync_batchnorm: bool = Field(False, description="Convert BatchNorm to SyncBatchNorm under DDP.")
    activation_checkpointing: bool = Field(
        False, description="Recompute backbone activations in backward to save memory."
    )


class Losses(StrictModel):
    """The losses the stage-1 method builds its terms from."""

    segmentation: ComponentSpec = component(
        "losses",
        "Pixel loss of the method's segmentation terms (PCT: class-aware CE).",
        "class_aware_cross_entropy",
    )
    classification: ComponentSpec = component(
        "losses", "Image-label loss of the hybrid net.", "max_pool_soft_margin"
    )


class TrainingLoop(StrictModel):
    """The loop settings every training stage has."""

    iterations: int = Field(gt=0, description="Training iterations.")
    classifier_lr_multiplier: float = Field(
        10.0, gt=0, description="Learning-rate multiple of the final classifier layer."
    )
    head_lr_multiplier: float = Field(
        1.0, gt=0, description="Learning-rate multiple of the rest of the head (40 in UniMatch V2 for ViTs)."
    )
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps per iteration.")
    reference_batch_size: int = Field(
        0,
        ge=0,
        description="The batch (per iteration, over all workers) the learning rate was set for; "
        "0: not stated. `pctkit validate` reports when the stage's batch differs.",
    )
    scale_lr: bool = Field(
        False,
        description="Scale the learning rate linearly: lr x batch / reference_batch_size.",
    )
    log_interval: int = Field(
        50, ge=1, description="Iterations between logged metrics.", json_schema_extra=MAY_CHANGE_ON_RESUME
    )
    eval_interval: int = Field(
        0,
        ge=0,
        description="Iterations between validations; 0 validates at the end only.",
        json_schema_extra=MAY_CHANGE_ON_RESUME,
    )


class CrossTraining(TrainingLoop):
    """Stage 1: the method's networks (PCT: the hybrid and pseudo nets) on strong and
    weak images."""

    strong_batch_size: int = Field(ge=1, description="Strong images per iteration (global).")
    weak_batch_size: int = Field(
        ge=0, description="Weak images per iteration (global); unused by methods that draw none."
    )


class NetSettings(StrictModel):
    """One stage-1 net's own optimizer or schedule, over the shared ones."""

    optimizer: ComponentSpec | None = component(
        "optimizers", "This net's optimizer (default: [optimizer]).", optional=True
    )
    scheduler: ComponentSpec | None = component(
        "schedulers", "This net's learning-rate schedule (default: [scheduler]).", optional=True
    )


class PseudoLabels(StrictModel):
    """How the final labelling net (PCT: the hybrid net) labels the weak images."""

    scales: tuple[float, ...] = Field(
        (0.5, 0.75, 1.0, 1.25, 1.5), min_length=1, description="Test-time scales."
    )
    flip: bool = Field(True, description="Also average horizontally flipped inputs.")
    batch_size: int = Field(8, ge=1, description="Images per forward pass.")


class Retrain(TrainingLoop):
    """Stage 2: pseudo labels from the stage-1 net, then fully supervised retraining."""

    enabled: bool = Field(True, description="Run stage 2.")
    batch_size: int = Field(ge=1, description="Images per iteration (global).")
    model: Model = Field(description="The retrained network (defaults to [model]).")
    loss: ComponentSpec = component("losses", "Pixel loss of retraining (plain CE).", "cross_entropy")
    optimizer: ComponentSpec = component("optimizers", "Optimizer (defaults to [optimizer]).")
    scheduler: ComponentSpec = component("schedulers", "Schedule (defaults to [scheduler]).")
    pseudo_labels: PseudoLabels = Field(default_factory=PseudoLabels)


class Evaluation(StrictModel):
    """Validation."""

    batch_size: int = Field(16, ge=1, description="Images per forward pass (padded).")
    scales: tuple[float, ...] = Field((1.0,), min_length=1, description="Test-time scales.")
    flip: bool = Field(False, description="Average horizontally flipped inputs.")
    num_pictures: int = Field(
        8,
        ge=0,
        description="Validation images drawn in predictions.png.",
        json_schema_extra=MAY_CHANGE_ON_RESUME,
    )
    mode: Literal["whole", "sliding"] = Field(
        "whole",
        description="'whole': each image in one forward pass; 'sliding': overlapping square "
        "windows, logits averaged where they overlap (bounded memory on large images).",
    )
    window: int = Field(512, ge=16, description="Side of a sliding window, pixels (mode 'sliding').")
    stride: int = Field(341, ge=1, description="Step between sliding windows, pixels (mode 'sliding').")
    postprocess: ComponentSpec | None = component(
        "postprocess",
        "Refines the final predictions of postprocess_nets (dense_crf: the released code's CRF); "
        "results report mIoU with and without it. Absent: none.",
        optional=True,
    )
    postprocess_nets: tuple[str, ...] = Field(
        ("retrained",), description="The nets whose final plain predictions are post-processed."
    )
    postprocess_workers: int = Field(
        0,
        ge=0,
        description="Processes that post-process images while the network predicts the next "
        "batches (per training process under DDP); 0: in the evaluating process. The same "
        "scores either way.",
        json_schema_extra=MAY_CHANGE_ON_RESUME,
    )

    @model_validator(mode="after")
    def _windows_overlap_or_touch(self) -> Evaluation:
        if self.stride > self.window:
            raise ValueError(
                f"stride {self.stride} is larger than window {self.window}: pixels between "
                "windows would get no prediction"
            )
        return self


class Checkpointing(StrictModel):
    """Checkpoints for resuming."""

    interval: int = Field(
        0,
        ge=0,
        description="Iterations between checkpoints; 0: stage ends only.",
        json_schema_extra=MAY_CHANGE_ON_RESUME,
    )
    keep_last: int = Field(
        2, ge=1, description="How many periodic checkpoints to keep.", json_schema_extra=MAY_CHANGE_ON_RESUME
    )


class Recipe(StrictModel):
    """A complete pctkit recipe."""

    def net_optimizer(self, role: str) -> ComponentSpec:
        """The optimizer of the stage-1 net of ``role``: its own, else ``[optimizer]``."""
        own = self.nets.get(role)
        return self._merged(self.optimizer, own.optimizer if own else None)

    def net_scheduler(self, role: str) -> ComponentSpec:
        """The schedule of the stage-1 net of ``role``: its own, else ``[scheduler]``."""
        own = self.nets.get(role)
        return self._merged(self.scheduler, own.scheduler if own else None)

    @staticmethod
    def _merged(base: ComponentSpec, override: ComponentSpec | None) -> ComponentSpec:
        if override is None:
            return base
        return ComponentSpec.model_validate(merge_sections(base.model_dump(), override.model_dump()))

    experiment: Experiment
    method: ComponentSpec = component(
        "methods", "The stage-1 training method and its parameters (see `pctkit list methods`).", "pct"
    )
    data: ComponentSpec = component("datasets", "The dataset.")
    augmentation: Augmentation = Field(default_factory=Augmentation)
    loader: Loader = Field(default_factory=Loader)
    model: Model
    loss: Losses = Field(default_factory=Losses)
    cross_training: CrossTraining
    optimizer: ComponentSpec = component("optimizers", "Optimizer of the stage-1 nets.")
    scheduler: ComponentSpec = component("schedulers", "Learning-rate schedule of the stage-1 nets.", "poly")
    nets: dict[str, NetSettings] = Field(
        default_factory=dict,
        description="Per-net overrides by role: [nets.pseudo.scheduler] gives the pseudo net a schedule "
        "of its own (the released PCT code keeps its rate constant).",
    )
    retrain: Retrain
    evaluation: Evaluation = Field(default_factory=Evaluation)
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)

    @model_validator(mode="before")
    @classmethod
    def _retrain_defaults(cls, data: Any) -> Any:
        """Fill ``retrain.model/optimizer/scheduler`` from the top level where absent,
        so the resolved recipe states them explicitly."""
        return with_retrain_defaults(data)


RETRAIN_INHERITS = ("model", "optimizer", "scheduler")
"""The ``[retrain]`` sections that default to the top-level section of the same name."""


def with_retrain_defaults(data: Any) -> Any:
    """Raw recipe data with ``retrain.model/optimizer/scheduler`` and the ``[nets]``
    overrides merged over the top-level sections (what :class:`Recipe` validates; error
    messages read it too)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("retrain"), dict):
        retrain = dict(data["retrain"])
        for key in RETRAIN_INHERITS:
            retrain[key] = merge_sections(_section(data, key), retrain.get(key))
        data["retrain"] = retrain
    nets = data.get("nets")
    if isinstance(nets, dict):
        # A net's own optimizer or schedule is written over the shared one.
        data["nets"] = {
            role: {
                key: merge_sections(_section(data, key), value)
                if key in NET_INHERITS and value is not None
                else value
                for key, value in own.items()
            }
            if isinstance(own, dict)
            else own
            for role, own in nets.items()
        }
    return data


NET_INHERITS = ("optimizer", "scheduler")
"""The ``[nets.<role>]`` sections written over the top-level section of the same name."""


def _section(data: dict[str, Any], key: str) -> Any:
    base = data.get(key, _default_section(key))
    return base.model_dump() if isinstance(base, BaseModel) else base


def _default_section(key: str) -> dict[str, Any]:
    """The declared default of a top-level section, as raw data (``{}`` if required)."""
    field = Recipe.model_fields[key]
    if field.default_factory is None:
        return {}
    default = field.default_factory()  # type: ignore[call-arg]
    return default.model_dump() if isinstance(default, BaseModel) else dict(default)


def merge_sections(base: Any, override: Any) -> Any:
    """Deep-merge ``override`` over ``base``; a component section whose ``type``
    differs replaces the base section whole (its parameters would not fit)."""
    if override is None:
        return copy.deepcopy(base)
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    if "type" in override and override.get("type") != base.get("type"):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = merge_sections(base.get(key), value) if key in base else copy.deepcopy(value)
    return merged
