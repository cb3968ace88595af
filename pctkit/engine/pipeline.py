"""A whole run: cross training, pseudo labels, retraining, evaluation, artifacts.

The run directory holds everything: the resolved recipe (``recipe.toml``), metrics as
JSON lines, checkpoints, final weights as safetensors, pseudo labels as palette PNGs,
``results.json`` and ``predictions.png``. ``progress.json`` records which stages are
complete, so a resumed run continues in the stage where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pctkit.artifacts.io import append_jsonl, atomic_write_json, atomic_write_text
from pctkit.artifacts.models import load_weights, save_net
from pctkit.artifacts.pictures import prediction_grid
from pctkit.artifacts.report import TensorBoardLog
from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import (
    build_component,
    build_data,
    build_net,
    build_optimizer,
    build_scheduler,
    resolve_device,
)
from pctkit.engine.checks import batch_issues, device_issues, learning_rate_factor
from pctkit.engine.cross_training import (
    Batch,
    PCTWeights,
    StepResult,
    hybrid_step,
    pct_step,
    supervised_step,
)
from pctkit.engine.data import (
    AugmentationSettings,
    IterationBatches,
    TrainingImages,
    images_to_float,
    make_loader,
    stable_seed,
)
from pctkit.engine.distributed import WorldInfo, all_reduce_max, barrier, init_distributed, unwrap
from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.engine.evaluation import EvaluationResult, evaluate
from pctkit.engine.pseudo_labels import generate_pseudo_labels, weak_indices
from pctkit.engine.reporting import Reporter
from pctkit.engine.trainer import (
    LoopContext,
    Stage,
    StopRequest,
    TrainingInterrupted,
    restore_latest,
    run_stage,
)
from pctkit.recipe import Recipe, RecipeError, resolved_toml, validate_recipe_data
from pctkit.recipe.schema import Model

STAGES = ("cross_training", "pseudo_labels", "retraining", "evaluation")

# Keys that may change between a run and its resumption: where and how often it
# reports, not what it computes.
RESUME_MUTABLE = (
    "experiment.output_dir",
    "cross_training.log_interval",
    "cross_training.eval_interval",
    "retrain.log_interval",
    "retrain.eval_interval",
    "evaluation.num_pictures",
    "checkpoint.interval",
    "checkpoint.keep_last",
    "loader.num_workers",
    "loader.pin_memory",
    "loader.persistent_workers",
)


class RunError(RuntimeError):
    """A run cannot start or continue (existing directory, changed recipe, ...)."""


@dataclass
class RunOutcome:
    """What a finished run reports."""

    run_dir: Path
    results: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- set-up


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def flat_items(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(data, dict):
        items: dict[str, Any] = {}
        for key, value in data.items():
            items.update(flat_items(value, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: data}


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two recipes, except those a resume may change."""
    old, new = flat_items(saved), flat_items(current)
    keys = sorted(set(old) | set(new))
    return [
        f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
        for key in keys
        if old.get(key) != new.get(key) and key not in RESUME_MUTABLE
    ]


def prepare_run_dir(recipe: Recipe, run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Create the run directory and write the resolved recipe, or check it on resume."""
    recipe_file = run_dir / "recipe.toml"
    current = recipe.model_dump(mode="json")
    if resume:
        saved_json = run_dir / "recipe.json"
        if not saved_json.is_file():
            raise RunError(f"cannot resume: {run_dir} holds no run (no recipe.json)")
        differences = recipe_differences(_with_current_defaults(json.loads(saved_json.read_text())), current)
        if differences:
            raise RunError(
                "cannot resume: the recipe differs from the one the run was started with:\n  "
                + "\n  ".join(differences)
                + f"\nResume with the saved recipe ({recipe_file}) or start a new run."
            )
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunError(
                f"run directory {run_dir} already exists. Resume it with "
                f"`pctkit run RECIPE --resume {run_dir}`, choose another with --out, "
                "or replace it with --overwrite."
            )
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    header = (
        "The resolved recipe of this run: every key, defaults included.\n"
        "Re-run it with: pctkit run " + str(recipe_file)
    )
    atomic_write_text(recipe_file, resolved_toml(recipe, header=header))
    atomic_write_json(run_dir / "recipe.json", current)


def scale_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Multiply every group's learning rate (before the schedule records its base)."""
    for group in optimizer.param_groups:
        group["lr"] *= factor


def _with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe re-validated by this pctkit, so that keys added since it was
    written compare at their defaults; as saved if it no longer validates."""
    try:
        return validate_recipe_data(saved).model_dump(mode="json")
    except RecipeError:
        return saved


def read_progress(run_dir: Path) -> dict[str, Any]:
    """Which stages of a run are complete (``progress.json``)."""
    path = run_dir / "progress.json"
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {"completed": [], "seconds": {}}


# --------------------------------------------------------------------------- the run


class Run:
    """One run of a recipe in one directory. Create, then call :meth:`execute`."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        reporter: Reporter | None = None,
        *,
        stop_after: dict[str, int] | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = run_dir
        self.device = resolve_device(recipe.experiment.device)
        self.world: WorldInfo = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.world.distributed:
            self.device = torch.device("cuda", self.world.local_rank)
        self.reporter = reporter or Reporter()
        self.reporter.enabled = self.reporter.enabled and self.world.is_main
        self.stop_after = stop_after or {}
        # Both are set up in execute(): constructing a Run touches no file, so a recipe
        # it refuses leaves no run directory behind.
        self.progress: dict[str, Any] = {"completed": [], "seconds": {}}
        self.tensorboard: TensorBoardLog | None = None
        self.data: SegmentationData | None = None
        # The same checks `pctkit validate` runs, so a job fails before it trains.
        problems = batch_issues(recipe, self.world.world_size) + device_issues(recipe, self.world.world_size)
        if problems:
            raise RunError(
                "; ".join(
                    f"{issue.path}: {issue.message}" + (f"; {issue.hint}" if issue.hint else "")
                    for issue in problems
                )
            )

    # ---------------------------------------------------------------- helpers

    def log(self, record: dict[str, Any]) -> None:
        """Append a metrics record (rank 0), to ``metrics.jsonl`` and, where the
        tensorboard package is installed, to event files in ``tensorboard/``."""
        if self.world.is_main:
            stamped = {"time": time.time(), **record}
            append_jsonl(self.run_dir / "metrics.jsonl", stamped)
            if self.tensorboard is not None:
                self.tensorboard.write(stamped, self.data.class_names if self.data else None)

    def _record_peak_memory(self, stage: str) -> None:
        """The stage's peak allocated memory, max over workers, then reset the counter
        for the next stage; ``"n/a"`` off CUDA."""
        peaks = self.progress.setdefault("peak_memory_gib", {})
        if self.device.type != "cuda":
            peaks[stage] = "n/a"
            return
        peak = torch.tensor([torch.cuda.max_memory_allocated(self.device) / 2**30], device=self.device)
        peaks[stage] = round(float(all_reduce_max(peak)), 3)
        torch.cuda.reset_peak_memory_stats(self.device)

    def _complete(self, stage: str, seconds: float) -> None:
        if stage != "evaluation":  # recorded before results.json is written
            self._record_peak_memory(stage)
        self.progress["completed"].append(stage)
        self.progress["seconds"][stage] = self.progress["seconds"].get(stage, 0.0) + seconds
        if self.world.is_main:
            atomic_write_json(self.run_dir / "progress.json", self.progress)
        barrier()

    def _done(self, stage: str) -> bool:
        return stage in self.progress["completed"]

    def _new_net(self, model: Model, role: str) -> nn.Module:
        assert self.data is not None
        # Each net's initialisation depends on the seed and its role only, so the
        # arms of an ablation start from the same weights. The supervised baseline's
        # net starts as the hybrid net does: its arm differs from 'hybrid' and 'pct'
        # in the losses only.
        init_role = "hybrid" if role == "supervised" else role
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed(self.recipe.experiment.seed, "init", init_role))
            net: nn.Module = build_net(model, self.data.num_classes)
        net = net.to(self.device)
        if self.recipe.experiment.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.world.distributed:
            if model.sync_batchnorm:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.recipe.experiment.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        return net

    def _scaler(self) -> torch.amp.GradScaler | None:
        if self.recipe.experiment.precision == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None

    def _context(self, stage: str, advance: Any, describe: Any) -> LoopContext:
        return LoopContext(
            run_dir=self.run_dir,
            device=self.device,
            precision=self.recipe.experiment.precision,
            log=self.log,
            progress=advance,
            describe=describe,
            stop_after=self.stop_after.get(stage),
        )

    def _evaluate(self, net: nn.Module, num_examples: int = 0) -> EvaluationResult:
        assert self.data is not None
        settings = self.recipe.evaluation
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
        )

    def _save(self, net: nn.Module, role: str, model: Model) -> None:
        assert self.data is not None
        if self.world.is_main:
            save_net(
                self.run_dir / f"{role}_net.safetensors",
                unwrap(net),
                role=role,
                class_names=self.data.class_names,
                model_section=model.model_dump(mode="json"),
                extra=self._net_hints(),
            )
        barrier()

    def _net_hints(self) -> dict[str, Any]:
        """What a user of the saved weights needs beyond the classes: the palette and the
        input size the net was trained at (the crop, else the first training image)."""
        assert self.data is not None
        crop = self.recipe.augmentation.crop_size
        height, width = (crop, crop) if crop else self.data.train[0].image.shape[:2]
        hints: dict[str, Any] = {"input_size": [int(height), int(width)]}
        if self.data.palette:
            hints["palette"] = self.data.palette
        return hints

    def _batches(
        self, streams: list[tuple[TrainingImages, IterationBatches]], accumulate: int
    ) -> Iterator[list[Batch]]:
        """Per iteration: the streams' slices concatenated (strong first), split into
        ``accumulate`` micro-batches, on the device."""
        loader_settings = self.recipe.loader
        loaders = [
            make_loader(
                dataset,
                sampler,
                loader_settings.num_workers,
                loader_settings.pin_memory and self.device.type == "cuda",
                loader_settings.persistent_workers,
            )
            for dataset, sampler in streams
        ]
        channels_last = self.recipe.experiment.channels_last
        for parts in zip(*loaders, strict=True):
            micro: list[Batch] = []
            for index in range(accumulate):
                pieces = [
                    {
                        key: part[key].chunk(accumulate)[index]
                        for key in ("image", "mask", "image_labels", "has_mask")
                    }
                    for part in parts
                ]
                micro.append(
                    Batch(
                        images=images_to_float(
                            torch.cat([p["image"] for p in pieces]), self.device, channels_last
                        ),
                        masks=torch.cat([p["mask"] for p in pieces]).to(self.device, non_blocking=True),
                        image_labels=torch.cat([p["image_labels"] for p in pieces]).to(
                            self.device, non_blocking=True
                        ),
                        has_mask=torch.cat([p["has_mask"] for p in pieces]).to(
                            self.device, non_blocking=True
                        ),
                        num_strong=int(pieces[0]["image"].shape[0]),
                    )
                )
            yield micro

    # ---------------------------------------------------------------- stages

    def net_roles(self) -> list[str]:
        """The stage-1 networks of the recipe's mode."""
        mode = self.recipe.cross_training.mode
        return {"pct": ["hybrid", "pseudo"], "hybrid": ["hybrid"], "supervised": ["supervised"]}[mode]

    def cross_training(self) -> dict[str, nn.Module]:
        """Stage 1: train the nets of the recipe's mode; returns them."""
        recipe, data = self.recipe, self.data
        assert data is not None
        settings = recipe.cross_training
        roles = self.net_roles()
        nets = {role: self._new_net(recipe.model, role) for role in roles}
        if self._done("cross_training"):
            for role, net in nets.items():
                load_weights(unwrap(net), self.run_dir / f"{role}_net.safetensors")
            return nets
        optimizers = {
            role: build_optimizer(recipe.optimizer, net, settings.classifier_lr_multiplier)
            for role, net in nets.items()
        }
        for optimizer in optimizers.values():
            scale_learning_rate(optimizer, learning_rate_factor(settings))
        schedulers = {
            role: build_scheduler(recipe.scheduler, opt, settings.iterations)
            for role, opt in optimizers.items()
        }
        segmentation_loss = build_component("losses", recipe.loss.segmentation)
        classification_loss = build_component("losses", recipe.loss.classification)
        weights = PCTWeights(**settings.loss_weights.model_dump(), score_power=settings.score_power)
        dynamic_evaluation = DynamicEvaluation(data.num_classes, settings.score_momentum)
        augmentation = AugmentationSettings(**recipe.augmentation.model_dump())
        dataset = TrainingImages(data.train, data.num_classes, augmentation)
        seed = recipe.experiment.seed
        extra: dict[str, Any] = {"dynamic_evaluation": dynamic_evaluation} if settings.mode == "pct" else {}

        def compute(batch: Batch, micro_index: int) -> Any:
            if settings.mode == "pct":
                return pct_step(
                    nets["hybrid"],
                    nets["pseudo"],
                    batch,
                    dynamic_evaluation,
                    segmentation_loss,
                    classification_loss,
                    weights,
                    new_iteration=micro_index == 0,
                )
            if settings.mode == "hybrid":
                return hybrid_step(nets["hybrid"], batch, segmentation_loss, classification_loss, weights)
            return supervised_step(nets["supervised"], batch.images, batch.masks)

        def micro_batches(start: int) -> Iterator[list[Batch]]:
            streams = [
                (
                    dataset,
                    IterationBatches(
                        data.strong_indices,
                        settings.strong_batch_size,
                        seed,
                        "strong",
                        start,
                        settings.iterations,
                        self.world.rank,
                        self.world.world_size,
                    ),
                )
            ]
            if settings.mode != "supervised" and settings.weak_batch_size > 0:
                streams.append(
                    (
                        dataset,
                        IterationBatches(
                            list(range(len(data.train))),
                            settings.weak_batch_size,
                            seed,
                            "weak",
                            start,
                            settings.iterations,
                            self.world.rank,
                            self.world.world_size,
                        ),
                    )
                )
            return self._batches(streams, settings.accumulate)

        def validate(iteration: int) -> dict[str, Any]:
            metrics: dict[str, Any] = {}
            for role, net in nets.items():
                summary = self._evaluate(net).summary()
                metrics[f"{role}_miou"] = summary["miou"]
                metrics[f"{role}_miou_with_labels"] = summary["miou_with_labels"]
            return metrics

        def log_extra() -> dict[str, Any]:
            if settings.mode != "pct":
                return {}
            return {"J": [round(float(v), 5) for v in dynamic_evaluation.scores]}

        first = roles[0]
        stage = Stage(
            name="cross_training",
            nets=nets,
            optimizers=optimizers,
            schedulers=schedulers,
            extra_state=extra,
            micro_batches=micro_batches,
            compute=compute,
            total_iterations=settings.iterations,
            accumulate=settings.accumulate,
            log_interval=settings.log_interval,
            eval_interval=settings.eval_interval,
            checkpoint_interval=recipe.checkpoint.interval,
            keep_last=recipe.checkpoint.keep_last,
            skip_nonfinite=settings.skip_nonfinite,
            evaluate=validate if settings.eval_interval else None,
            log_extra=log_extra,
            best_metric=f"{first}_miou_with_labels" if first != "supervised" else "supervised_miou",
        )
        scaler = self._scaler()
        started = time.perf_counter()
        with self.reporter.task(f"cross training ({settings.mode})", settings.iterations) as (
            advance,
            describe,
        ):
            context = self._context("cross_training", advance, describe)
            start = restore_latest(stage, context, scaler)
            advance(start)
            run_stage(stage, context, start, scaler)
        for role, net in nets.items():
            self._save(net, role, recipe.model)
        self._complete("cross_training", time.perf_counter() - started)
        return nets

    def pseudo_labels(self, labeller: nn.Module) -> dict[str, Any]:
        """Stage 2a: label every weak training image with the final hybrid net."""
        data, settings = self.data, self.recipe.retrain.pseudo_labels
        assert data is not None
        indices = weak_indices(len(data.train), data.strong_indices)
        started = time.perf_counter()
        with self.reporter.task("pseudo labels", len(indices)) as (advance, _), StopRequest() as stop:

            def advance_or_stop(count: int) -> None:
                # Called once labels are on disk: stopping here loses nothing, and a
                # resumed run labels only the images still missing.
                advance(count)
                if stop.requested is not None:
                    raise TrainingInterrupted(
                        f"{stop.requested} during pseudo labels: the labels written so far are kept",
                        self.run_dir,
                    )

            quality = generate_pseudo_labels(
                unwrap(labeller),
                data.train,
                indices,
                self.run_dir / "pseudo_labels",
                data.num_classes,
                self.device,
                scales=settings.scales,
                flip=settings.flip,
                batch_size=settings.batch_size,
                precision=self.recipe.experiment.precision,
                colors=data.palette,
                progress=advance_or_stop,
            )
        scored = int(quality.matrix.sum()) > 0
        summary = {"images": len(indices), "miou": quality.miou() if scored else None}
        self.log({"stage": "pseudo_labels", "pseudo_label_quality": summary})
        if not self._done("pseudo_labels"):
            self._complete("pseudo_labels", time.perf_counter() - started)
        return summary

    def retraining(self) -> nn.Module:
        """Stage 2b: a fresh net, fully supervised on ground truth + pseudo labels."""
        recipe, data = self.recipe, self.data
        assert data is not None
        settings = recipe.retrain
        net = self._new_net(settings.model, "retrained")
        if self._done("retraining"):
            load_weights(unwrap(net), self.run_dir / "retrained_net.safetensors")
            return net
        optimizer = build_optimizer(settings.optimizer, net, settings.classifier_lr_multiplier)
        scale_learning_rate(optimizer, learning_rate_factor(settings))
        scheduler = build_scheduler(settings.scheduler, optimizer, settings.iterations)
        loss_fn = build_component("losses", settings.loss)
        augmentation = AugmentationSettings(**recipe.augmentation.model_dump())
        dataset = TrainingImages(data.train, data.num_classes, augmentation, self.run_dir / "pseudo_labels")
        seed = recipe.experiment.seed

        def compute(batch: Batch, micro_index: int) -> StepResult:
            loss = loss_fn(net(batch.images), batch.masks, batch.image_labels)
            return StepResult(loss, {"loss_ce": loss.detach()})

        def micro_batches(start: int) -> Iterator[list[Batch]]:
            sampler = IterationBatches(
                list(range(len(data.train))),
                settings.batch_size,
                seed,
                "retrain",
                start,
                settings.iterations,
                self.world.rank,
                self.world.world_size,
            )
            return self._batches([(dataset, sampler)], settings.accumulate)

        def validate(iteration: int) -> dict[str, Any]:
            summary = self._evaluate(net).summary()
            return {
                "retrained_miou": summary["miou"],
                "retrained_miou_with_labels": summary["miou_with_labels"],
            }

        stage = Stage(
            name="retraining",
            nets={"retrained": net},
            optimizers={"retrained": optimizer},
            schedulers={"retrained": scheduler},
            extra_state={},
            micro_batches=micro_batches,
            compute=compute,
            total_iterations=settings.iterations,
            accumulate=settings.accumulate,
            log_interval=settings.log_interval,
            eval_interval=settings.eval_interval,
            checkpoint_interval=recipe.checkpoint.interval,
            keep_last=recipe.checkpoint.keep_last,
            skip_nonfinite=recipe.cross_training.skip_nonfinite,
            evaluate=validate if settings.eval_interval else None,
            best_metric="retrained_miou",
        )
        scaler = self._scaler()
        started = time.perf_counter()
        with self.reporter.task("retraining", settings.iterations) as (advance, describe):
            context = self._context("retraining", advance, describe)
            start = restore_latest(stage, context, scaler)
            advance(start)
            run_stage(stage, context, start, scaler)
        self._save(net, "retrained", settings.model)
        self._complete("retraining", time.perf_counter() - started)
        return net

    def final_evaluation(
        self, nets: dict[str, nn.Module], pseudo_label_quality: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Evaluate every net on the validation split; write results and pictures."""
        assert self.data is not None
        num_pictures = self.recipe.evaluation.num_pictures
        results: dict[str, Any] = {"nets": {}, "class_names": self.data.class_names}
        evaluations: dict[str, EvaluationResult] = {}
        started = time.perf_counter()
        with self.reporter.task("evaluation", len(nets)) as (advance, _):
            for role, net in nets.items():
                evaluations[role] = self._evaluate(net, num_examples=num_pictures)
                results["nets"][role] = evaluations[role].summary()
                advance(1)
        results["pseudo_labels"] = pseudo_label_quality
        self.log(
            {
                "stage": "evaluation",
                "results": {
                    k: {"miou": v["miou"], "miou_with_labels": v["miou_with_labels"]}
                    for k, v in results["nets"].items()
                },
            }
        )
        self._record_peak_memory("evaluation")  # a collective: every rank, before rank 0 writes
        if self.world.is_main:
            if num_pictures:
                self._pictures(evaluations)
            self.progress["seconds"]["evaluation"] = time.perf_counter() - started
            results["seconds"] = self.progress["seconds"]
            results["peak_memory_gib"] = self.progress["peak_memory_gib"]
            atomic_write_json(self.run_dir / "results.json", results)
        if not self._done("evaluation"):
            self._complete("evaluation", time.perf_counter() - started)
        return results

    def _pictures(self, evaluations: dict[str, EvaluationResult]) -> None:
        assert self.data is not None
        first = next(iter(evaluations.values()))
        images = [example["image"].permute(1, 2, 0).numpy() for example in first.examples]
        gt = [example["mask"].clamp(max=255).to(torch.uint8).numpy() for example in first.examples]
        columns: list[tuple[str, list[Any]]] = [("ground truth", gt)]
        for role, result in evaluations.items():
            # Stage-1 nets are shown as the method reports them (with image labels);
            # the retrained net as deployed (plain).
            key = "prediction" if role == "retrained" else "prediction_with_labels"
            title = f"{role}" + ("" if role == "retrained" else " (labels)")
            columns.append((title, [example[key].to(torch.uint8).numpy() for example in result.examples]))
        prediction_grid(images, columns, self.run_dir / "predictions.png", self.data.palette)

    def execute(self) -> RunOutcome:
        """Run every stage not yet complete; returns the results."""
        recipe = self.recipe
        seed_everything(recipe.experiment.seed, recipe.experiment.deterministic)
        # Read here, not at construction: under torchrun rank 0 may have replaced the
        # run directory (--overwrite) after the other ranks constructed theirs.
        self.progress = read_progress(self.run_dir)
        if self.world.is_main:
            self.tensorboard = TensorBoardLog.open(self.run_dir / "tensorboard")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        self.reporter.message(f"[bold]pctkit[/] run [cyan]{recipe.experiment.name}[/] -> {self.run_dir}")
        self.data = build_data(recipe)
        data = self.data
        self.reporter.message(
            f"data: {len(data.strong_indices)} strong + {len(data.train) - len(data.strong_indices)} weak "
            f"training images, {len(data.val)} validation images, {data.num_classes} classes; "
            f"device {self.device}, {self.world.world_size} worker(s), {recipe.experiment.precision}"
        )
        nets = self.cross_training()
        labeller = nets.get("hybrid", nets.get("supervised"))
        assert labeller is not None
        quality: dict[str, Any] | None = None
        if recipe.retrain.enabled:
            quality = self.pseudo_labels(labeller)
            nets["retrained"] = self.retraining()
        results = self.final_evaluation(nets, quality)
        return RunOutcome(self.run_dir, results, {"total": time.perf_counter() - started})
