"""The recipe schema: every section and key a recipe may hold, with its default.

The static models below are what the engine reads. Component sections (``[data]``,
``[model.backbone]``, ``[optimizer]``, ...) are typed here as :class:`ComponentSpec`
(``type`` plus the component's own parameters); :func:`recipe_model` builds, from the
registry, a subclass of :class:`Recipe` in which each such section is the union of the
registered components' parameter models, so that validation and the JSON Schema know
every component's parameters, plugins' included.
"""

from __future__ import annotations

import copy
from functools import reduce
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from pctkit import registry


class StrictModel(BaseModel):
    """A recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ComponentSpec(BaseModel):
    """A component section: ``type`` names a registered component, the rest are its
    parameters."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Name of a registered component (see `pctkit list`).")

    def parameters(self) -> dict[str, Any]:
        """The component's parameters, as keyword arguments for its factory."""
        data = dict(self)
        data.pop("type")
        return data


# Where component sections live: recipe path -> component kind.
COMPONENT_SECTIONS: dict[tuple[str, ...], str] = {
    ("data",): "datasets",
    ("model", "backbone"): "backbones",
    ("model", "head"): "heads",
    ("loss", "segmentation"): "losses",
    ("loss", "classification"): "losses",
    ("optimizer",): "optimizers",
    ("scheduler",): "schedulers",
    ("retrain", "model", "backbone"): "backbones",
    ("retrain", "model", "head"): "heads",
    ("retrain", "loss"): "losses",
    ("retrain", "optimizer"): "optimizers",
    ("retrain", "scheduler"): "schedulers",
}


class Experiment(StrictModel):
    """Run identity, hardware and numerics."""

    name: str = Field(description="Name of the experiment; the run directory is named after it.")
    seed: int = Field(0, description="Seed of every random number generator.")
    output_dir: str = Field("runs", description="Folder that holds run directories.")
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


class Augmentation(StrictModel):
    """Training-time augmentation, applied to image and mask together."""

    scale_range: tuple[float, float] = Field(
        (1.0, 1.0), description="Random rescale factor range (min, max)."
    )
    crop_size: int = Field(
        0, ge=0, description="Square random crop (ignore-padded if smaller); 0 keeps the size."
    )
    horizontal_flip: bool = Field(False, description="Random horizontal flips.")
    color_jitter: float = Field(
        0.0, ge=0.0, le=1.0, description="Strength of brightness/contrast/saturation jitter."
    )
    gaussian_blur: float = Field(0.0, ge=0.0, le=1.0, description="Probability of a Gaussian blur.")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="Maximum random rotation, degrees.")

    @model_validator(mode="after")
    def _ordered_scales(self) -> Augmentation:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {list(self.scale_range)}")
        return self


class Loader(StrictModel):
    """Data loading."""

    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    pin_memory: bool = Field(True, description="Pin host memory (CUDA only).")
    persistent_workers: bool = Field(True, description="Keep workers alive between epochs.")


class Model(StrictModel):
    """A segmentation network: backbone + head."""

    backbone: ComponentSpec = Field(description="The feature extractor.")
    head: ComponentSpec = Field(description="The segmentation head.")
    sync_batchnorm: bool = Field(False, description="Convert BatchNorm to SyncBatchNorm under DDP.")
    activation_checkpointing: bool = Field(
        False, description="Recompute backbone activations in backward to save memory."
    )


class Losses(StrictModel):
    """The losses of cross training."""

    segmentation: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(type="class_aware_cross_entropy"),
        description="Pixel loss of all four PCT terms (the method: class-aware CE).",
    )
    classification: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(type="max_pool_soft_margin"),
        description="Image-label loss of the hybrid net.",
    )


class LossWeights(StrictModel):
    """Weights of the four PCT loss terms (all 1 in the method)."""

    strong: float = Field(1.0, ge=0, description="L_CCE(H, gt) on the strong half.")
    cls: float = Field(1.0, ge=0, description="Classification loss of H on the whole batch.")
    h2p: float = Field(1.0, ge=0, description="L_CCE(P, Ŷ_h) on the weak half.")
    p2h: float = Field(1.0, ge=0, description="w-weighted L_CCE(H, Ŷ_p) on the weak half.")


class CrossTraining(StrictModel):
    """Stage 1: progressive cross training of the hybrid and pseudo nets."""

    mode: Literal["pct", "hybrid", "supervised"] = Field(
        "pct",
        description="'pct' (the method), 'hybrid' (hybrid net only: strong CCE + "
        "classification loss), 'supervised' (one net, strong masks only, plain CE).",
    )
    iterations: int = Field(gt=0, description="Training iterations.")
    strong_batch_size: int = Field(ge=1, description="Strong images per iteration (global).")
    weak_batch_size: int = Field(ge=0, description="Weak images per iteration (global).")
    score_momentum: float = Field(
        0.99, ge=0.0, lt=1.0, description="Momentum m of the dynamic evaluation counts."
    )
    score_power: float = Field(8.0, ge=0.0, description="Power γ of w = (min J)^γ.")
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    classifier_lr_multiplier: float = Field(
        10.0, gt=0, description="Learning-rate multiple of the final classifier layer."
    )
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps per iteration.")
    reference_batch_size: int = Field(
        0,
        ge=0,
        description="The batch (strong + weak, over all workers) the learning rate was set for; "
        "0: not stated. `pctkit validate` reports when the recipe's batch differs.",
    )
    scale_lr: bool = Field(
        False,
        description="Scale the learning rate linearly: lr x (strong + weak) / reference_batch_size.",
    )
    log_interval: int = Field(50, ge=1, description="Iterations between logged metrics.")
    eval_interval: int = Field(
        0, ge=0, description="Iterations between validations; 0 validates at the end only."
    )
    skip_nonfinite: bool = Field(
        False, description="Skip a step whose loss is NaN/inf instead of stopping the run."
    )


class PseudoLabels(StrictModel):
    """How the final hybrid net labels the weak images."""

    scales: tuple[float, ...] = Field(
        (0.5, 0.75, 1.0, 1.25, 1.5), min_length=1, description="Test-time scales."
    )
    flip: bool = Field(True, description="Also average horizontally flipped inputs.")
    batch_size: int = Field(8, ge=1, description="Images per forward pass.")


def _default_retrain_loss() -> ComponentSpec:
    return ComponentSpec(type="cross_entropy")


class Retrain(StrictModel):
    """Stage 2: pseudo labels from the hybrid net, then fully supervised retraining."""

    enabled: bool = Field(True, description="Run stage 2.")
    iterations: int = Field(gt=0, description="Retraining iterations.")
    batch_size: int = Field(ge=1, description="Images per iteration (global).")
    classifier_lr_multiplier: float = Field(
        10.0, gt=0, description="Learning-rate multiple of the final classifier layer."
    )
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps per iteration.")
    reference_batch_size: int = Field(
        0,
        ge=0,
        description="The batch (over all workers) the learning rate was set for; 0: not stated. "
        "`pctkit validate` reports when batch_size differs.",
    )
    scale_lr: bool = Field(
        False, description="Scale the learning rate linearly: lr x batch_size / reference_batch_size."
    )
    model: Model = Field(description="The retrained network (defaults to [model]).")
    loss: ComponentSpec = Field(default_factory=_default_retrain_loss)
    optimizer: ComponentSpec = Field(description="Optimizer (defaults to [optimizer]).")
    scheduler: ComponentSpec = Field(description="Schedule (defaults to [scheduler]).")
    pseudo_labels: PseudoLabels = Field(default_factory=PseudoLabels)
    log_interval: int = Field(50, ge=1, description="Iterations between logged metrics.")
    eval_interval: int = Field(
        0, ge=0, description="Iterations between validations; 0 validates at the end only."
    )


class Evaluation(StrictModel):
    """Validation."""

    batch_size: int = Field(16, ge=1, description="Images per forward pass (padded).")
    scales: tuple[float, ...] = Field((1.0,), min_length=1, description="Test-time scales.")
    flip: bool = Field(False, description="Average horizontally flipped inputs.")
    num_pictures: int = Field(8, ge=0, description="Validation images drawn in predictions.png.")
    mode: Literal["whole", "sliding"] = Field(
        "whole",
        description="'whole': each image in one forward pass; 'sliding': overlapping square "
        "windows, logits averaged where they overlap (bounded memory on large images).",
    )
    window: int = Field(512, ge=16, description="Side of a sliding window, pixels (mode 'sliding').")
    stride: int = Field(341, ge=1, description="Step between sliding windows, pixels (mode 'sliding').")

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

    interval: int = Field(0, ge=0, description="Iterations between checkpoints; 0: stage ends only.")
    keep_last: int = Field(2, ge=1, description="How many periodic checkpoints to keep.")


class Recipe(StrictModel):
    """A complete pctkit recipe."""

    experiment: Experiment
    data: ComponentSpec = Field(description="The dataset.")
    augmentation: Augmentation = Field(default_factory=Augmentation)
    loader: Loader = Field(default_factory=Loader)
    model: Model
    loss: Losses = Field(default_factory=Losses)
    cross_training: CrossTraining
    optimizer: ComponentSpec
    scheduler: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="poly"))
    retrain: Retrain
    evaluation: Evaluation = Field(default_factory=Evaluation)
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)

    @model_validator(mode="before")
    @classmethod
    def _retrain_defaults(cls, data: Any) -> Any:
        """Fill ``retrain.model/optimizer/scheduler`` from the top level where absent,
        so the resolved recipe states them explicitly."""
        return with_retrain_defaults(data)


def with_retrain_defaults(data: Any) -> Any:
    """Raw recipe data with ``retrain.model/optimizer/scheduler`` merged over the
    top-level sections (what :class:`Recipe` validates; error messages read it too)."""
    if not isinstance(data, dict) or not isinstance(data.get("retrain"), dict):
        return data
    data = dict(data)
    retrain = dict(data["retrain"])
    for key in ("model", "optimizer", "scheduler"):
        base = data.get(key, {} if key != "scheduler" else {"type": "poly"})
        if isinstance(base, BaseModel):
            base = base.model_dump()
        retrain[key] = merge_sections(base, retrain.get(key))
    data["retrain"] = retrain
    return data


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


# --------------------------------------------------------------------------- dynamic model


def component_model(component: registry.Component) -> type[ComponentSpec]:
    """A section model for one component: ``type`` pinned to its name, its parameters."""
    fields: dict[str, Any] = {
        "type": (Literal[component.name], Field(description=component.description)),
    }
    for name, info in component.parameters.model_fields.items():
        fields[name] = (info.annotation, info)
    model: type[ComponentSpec] = create_model(
        f"{registry.singular(component.kind).capitalize()}_{component.name.replace('.', '_')}",
        __base__=ComponentSpec,
        __config__=None,
        __doc__=component.description,
        **fields,
    )
    model.model_config["extra"] = "forbid"
    model.model_config["title"] = f"{registry.singular(component.kind)} {component.name!r}"
    model.model_rebuild(force=True)
    return model


def component_union(kind: str) -> Any:
    """The type of a section of ``kind``: a union of every usable component's model,
    discriminated by ``type``."""
    models = [component_model(c) for c in registry.list_components(kind)]
    if not models:
        return ComponentSpec
    if len(models) == 1:
        return models[0]
    union: Any = reduce(lambda a, b: Union[a, b], models)  # type: ignore[arg-type, return-value]  # noqa: UP007
    return Annotated[union, Field(discriminator="type")]


def recipe_model() -> type[Recipe]:
    """The :class:`Recipe` subclass whose component sections know every registered
    component's parameters (built from the registry on each call)."""
    unions = {kind: component_union(kind) for kind in registry.KINDS}

    def section(kind: str, default: dict[str, Any] | None = None, description: str = "") -> Any:
        if default is None:
            return (unions[kind], Field(description=description or None))
        return (unions[kind], Field(default_factory=lambda: dict(default), description=description or None))

    model = create_model(
        "ModelSection",
        __base__=Model,
        __doc__=Model.__doc__,
        backbone=section("backbones", description="The feature extractor."),
        head=section("heads", description="The segmentation head."),
    )
    losses = create_model(
        "LossSection",
        __base__=Losses,
        __doc__=Losses.__doc__,
        segmentation=section(
            "losses",
            {"type": "class_aware_cross_entropy"},
            "Pixel loss of all four PCT terms (the method: class-aware CE).",
        ),
        classification=section(
            "losses", {"type": "max_pool_soft_margin"}, "Image-label loss of the hybrid net."
        ),
    )
    retrain = create_model(
        "RetrainSection",
        __base__=Retrain,
        __doc__=Retrain.__doc__,
        model=(model, Field(description="The retrained network (defaults to [model]).")),
        loss=section("losses", {"type": "cross_entropy"}, "Pixel loss of retraining (plain CE)."),
        optimizer=section("optimizers", description="Optimizer (defaults to [optimizer])."),
        scheduler=section("schedulers", description="Schedule (defaults to [scheduler])."),
    )
    recipe: type[Recipe] = create_model(
        "Recipe",
        __base__=Recipe,
        __doc__=Recipe.__doc__,
        data=section("datasets", description="The dataset."),
        model=(model, ...),
        loss=(losses, Field(default_factory=lambda: losses())),
        optimizer=section("optimizers", description="Optimizer of the cross-training nets."),
        scheduler=section("schedulers", {"type": "poly"}, "Learning-rate schedule of cross training."),
        retrain=(retrain, ...),
    )
    return recipe
