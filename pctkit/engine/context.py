"""The run context: what every stage of a run shares, built once before the first.

:class:`RunContext` holds the recipe, the device and the worker's place among the
workers, the dataset, the run directory and the reporter, and offers what stages do
alike: making, evaluating and saving networks, logging records, completing a stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pctkit.artifacts.checkpoints import Checkpoints
from pctkit.artifacts.models import save_net
from pctkit.artifacts.run_dir import Progress, RunDirectory
from pctkit.artifacts.tensorboard import TensorBoardLog
from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import build_component, fresh_net, prepare_net
from pctkit.engine.data import Augment
from pctkit.engine.distributed import WorldInfo, all_reduce_max, barrier, unwrap
from pctkit.engine.evaluation import EvaluationResult, evaluate
from pctkit.engine.memory import memory_kind, peak_memory_gib, reset_peak_memory
from pctkit.engine.refine import Postprocess
from pctkit.engine.reporting import Reporter
from pctkit.recipe.schema import Model, Recipe


@dataclass
class RunOutputs:
    """What stages hand on: every trained net (stage-1 nets, then the retrained one),
    which of them labels pseudo labels, and the pseudo labels' quality."""

    nets: dict[str, nn.Module] = field(default_factory=dict)
    labeller: str = ""
    pseudo_label_quality: dict[str, Any] | None = None
    results: dict[str, Any] = field(default_factory=dict)
    """``results.json``, once the final evaluation has run."""


@dataclass
class StageClock:
    """Wall time spent in one stage: earlier sessions' (``before``) plus this one's."""

    stage: str
    before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def total(self) -> float:
        """Seconds spent in the stage over every session so far."""
        return self.before + time.perf_counter() - self.started


@dataclass
class RunContext:
    """Everything the stages of one run share.

    Attributes:
        stop_after: testing aid: stop a training stage (by name) after this iteration,
            as a SIGTERM would.
        stage_one_nets: the roles of the stage-1 method's nets, the labeller first.
    """

    recipe: Recipe
    run_dir: RunDirectory
    device: torch.device
    world: WorldInfo
    data: SegmentationData
    reporter: Reporter
    progress: Progress
    stop_after: dict[str, int] = field(default_factory=dict)
    tensorboard: TensorBoardLog | None = None
    stage_one_nets: list[str] = field(default_factory=list)

    @property
    def checkpoints(self) -> Checkpoints:
        """The run's checkpoints."""
        return Checkpoints(self.run_dir)

    # ---------------------------------------------------------------- records

    def log(self, record: dict[str, Any]) -> None:
        """Append a metrics record (rank 0), to ``metrics.jsonl`` and, where the
        tensorboard package is installed, to event files."""
        if not self.world.is_main:
            return
        stamped: Any = {**record, "time": time.time()}
        self.run_dir.append_record(stamped)
        if self.tensorboard is not None:
            self.tensorboard.write(stamped, self.data.class_names)

    def complete(self, stage: str, clock: StageClock, *, record_memory: bool = True) -> None:
        """Mark a stage complete: its time and peak memory go to ``progress.json``."""
        if record_memory:
            self.record_peak_memory(stage)
        self.progress.completed.append(stage)
        self.progress.seconds[stage] = clock.total()
        self.write_progress()
        barrier()

    def clock(self, stage: str) -> StageClock:
        """The wall time of a stage over all sessions of the run, from now on."""
        return StageClock(stage, self.progress.seconds.get(stage, 0.0))

    def save_time(self, clock: StageClock) -> None:
        """Record a stage's time so far (at checkpoints, and when a session stops), so
        ``progress.json`` adds up every session's time spent in it."""
        self.progress.seconds[clock.stage] = clock.total()
        self.write_progress()

    def write_progress(self) -> None:
        """Write ``progress.json`` (rank 0)."""
        if self.world.is_main:
            self.run_dir.write_progress(self.progress, self.stage_one_nets)

    def record_peak_memory(self, stage: str) -> None:
        """The stage's peak memory, max over workers; then start the next stage's."""
        peak = torch.tensor([peak_memory_gib(self.device)], device=self.device)
        self.progress.peak_memory_gib[stage] = round(float(all_reduce_max(peak)), 3)
        self.progress.memory_kind = memory_kind(self.device)
        reset_peak_memory(self.device)

    # ---------------------------------------------------------------- networks

    def new_net(self, model: Model, role: str, init_like: str | None = None) -> nn.Module:
        """A fresh network for ``role``, on the device, wrapped as the recipe asks.

        Its initialisation depends on the seed and on ``init_like or role`` only, so the
        arms of an ablation start from the same weights.
        """
        net = fresh_net(model, self.data.num_classes, self.recipe.experiment.seed, init_like or role)
        return prepare_net(
            net,
            self.device,
            channels_last=self.recipe.experiment.channels_last,
            distributed=self.world.distributed,
            sync_batchnorm=model.sync_batchnorm,
            compile_backend="inductor" if self.recipe.experiment.compile else None,
        )

    def evaluate(
        self, net: nn.Module, title: str, num_examples: int = 0, postprocess: Postprocess | None = None
    ) -> EvaluationResult:
        """The network's mIoU on the validation split, as the recipe evaluates, with a
        progress task of its own under ``title``, advanced per image: a VOC validation,
        five scales or a dense CRF, takes minutes."""
        settings = self.recipe.evaluation
        with self.reporter.task(title, len(self.data.val)) as (advance, _):
            # The bare net: DDP's forward would sync buffers, and ranks hold unequal shards.
            return evaluate(
                unwrap(net),
                self.data.val,
                self.data.class_names,
                self.device,
                batch_size=settings.batch_size,
                scales=settings.scales,
                flip=settings.flip,
                precision=self.recipe.experiment.precision,
                num_examples=num_examples,
                sliding_window=(settings.window, settings.stride) if settings.mode == "sliding" else None,
                progress=advance,
                postprocess=postprocess,
                postprocess_workers=settings.postprocess_workers,
            )

    def save_net(self, net: nn.Module, role: str, model: Model) -> None:
        """Write a net's final weights with its metadata (rank 0)."""
        if self.world.is_main:
            save_net(
                self.run_dir.net_weights(role),
                unwrap(net),
                role=role,
                class_names=self.data.class_names,
                model_section=model.model_dump(mode="json"),
                extra=self.net_hints(),
            )
        barrier()

    def net_hints(self) -> dict[str, Any]:
        """What a user of saved weights needs beyond the classes: the palette and the
        input size the net was trained at (the crop, else the first training image)."""
        crop = int(getattr(self.augmentation("strong"), "crop_size", 0))
        height, width = (crop, crop) if crop else self.data.train[0].image.shape[:2]
        hints: dict[str, Any] = {"input_size": [int(height), int(width)]}
        if self.data.palette:
            hints["palette"] = self.data.palette
        return hints

    def augmentation(self, stream: str) -> Augment:
        """The augmentation component of a stream (``strong``, ``weak``, ``retrain``)."""
        augment: Augment = build_component("augmentations", getattr(self.recipe.augmentation, stream))
        return augment

    def postprocess(self, role: str) -> Postprocess | None:
        """The final evaluation's post-processing of ``role``'s net, if the recipe asks."""
        settings = self.recipe.evaluation
        if settings.postprocess is None or role not in settings.postprocess_nets:
            return None
        postprocess: Postprocess = build_component("postprocess", settings.postprocess)
        return postprocess

    def scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16, else ``None``."""
        if self.recipe.experiment.precision == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None
