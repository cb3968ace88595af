"""The two training stages: cross training (the recipe's method) and retraining.

:class:`TrainingStage` is what both do: build the method with fresh nets, one
optimizer and schedule per net, restore the newest intact checkpoint, train with the
shared loop and its hooks, save the nets.
"""

from __future__ import annotations

from typing import Any

from pctkit.artifacts import checkpoints
from pctkit.artifacts.checkpoints import CheckpointError
from pctkit.artifacts.models import WeightsFileError, load_weights
from pctkit.engine.build import build_component, build_optimizer, build_scheduler
from pctkit.engine.context import RunContext, RunOutputs, StageClock
from pctkit.engine.data import IterationBatches, TrainingImages, micro_batches
from pctkit.engine.distributed import all_reduce_sum, barrier, unwrap
from pctkit.engine.hooks import Hooks, MetricsWindow, NonFiniteGuard, StopPolicy, Validation
from pctkit.engine.loop import TrainingJob, train
from pctkit.engine.settings_checks import learning_rate_factor
from pctkit.engine.state import job_state, load_job_state, seed_stage
from pctkit.methods.base import Method, MethodInputs
from pctkit.methods.supervised import Supervised
from pctkit.recipe.schema import ComponentSpec, Model, TrainingLoop


class TrainingStage:
    """What both training stages do; subclasses say which method, data and settings."""

    name = ""

    def method(self, context: RunContext) -> Method:
        """The method (with its freshly initialised nets) this stage trains."""
        raise NotImplementedError

    def settings(self, context: RunContext) -> tuple[TrainingLoop, Model]:
        """The loop settings and the nets' model section."""
        raise NotImplementedError

    def components(self, context: RunContext, role: str) -> tuple[ComponentSpec, ComponentSpec]:
        """The optimizer and the schedule of the net of ``role``."""
        raise NotImplementedError

    def streams(self, context: RunContext, method: Method, start: int) -> list[tuple[Any, IterationBatches]]:
        """The datasets and samplers of the batches, from iteration ``start``."""
        raise NotImplementedError

    def batch_size(self, context: RunContext, method: Method) -> int:
        """Images per iteration over all workers (for the linear scaling rule)."""
        raise NotImplementedError

    def title(self, context: RunContext) -> str:
        """The progress line's title."""
        return self.name.replace("_", " ")

    def run(self, context: RunContext, outputs: RunOutputs) -> None:
        method = self.method(context)
        loop, model = self.settings(context)
        self.publish(context, outputs, method)
        unreadable: list[WeightsFileError] = []
        if context.progress.done(self.name):
            unreadable = self.load_final_weights(context, method)
            if not unreadable:
                return
        optimizers = {}
        for role, net in method.nets.items():
            optimizers[role] = build_optimizer(
                self.components(context, role)[0], net, loop.classifier_lr_multiplier, loop.head_lr_multiplier
            )
            for group in optimizers[role].param_groups:  # before the schedule records its base
                group["lr"] *= learning_rate_factor(loop, self.batch_size(context, method))
        job = TrainingJob(
            stage=self.name,
            method=method,
            optimizers=optimizers,
            schedulers={
                role: build_scheduler(self.components(context, role)[1], o, loop.iterations)
                for role, o in optimizers.items()
            },
            batches=lambda start: micro_batches(
                self.streams(context, method, start),
                loop.accumulate,
                context.device,
                num_workers=context.recipe.loader.num_workers,
                pin_memory=context.recipe.loader.pin_memory and context.device.type == "cuda",
                persistent_workers=context.recipe.loader.persistent_workers,
                channels_last=context.recipe.experiment.channels_last,
            ),
            iterations=loop.iterations,
            device=context.device,
            precision=context.recipe.experiment.precision,
            scaler=context.scaler(),
        )
        clock = context.clock(self.name)
        try:
            start = self.restore(context, job)
            if unreadable:
                self.rewrite_final_weights(context, unreadable, start, loop.iterations)
            else:
                if start == 0:  # no checkpoint of this stage: its own generators' start
                    seed_stage(context.recipe.experiment.seed, self.name)
                title = self.title(context)
                with context.reporter.task(title, loop.iterations, start) as (advance, describe):
                    train(job, self.hooks(context, job, loop, advance, describe, clock), start)
        except BaseException:
            context.save_time(clock)
            raise
        for role, net in method.nets.items():
            context.save_net(net, role, model)
        if not unreadable:
            context.complete(self.name, clock)

    def load_final_weights(self, context: RunContext, method: Method) -> list[WeightsFileError]:
        """Load the final weights of a complete stage; returns the problems of those that
        are missing or damaged."""
        problems = []
        for role, net in method.nets.items():
            try:
                load_weights(unwrap(net), context.run_dir.net_weights(role))
            except WeightsFileError as error:
                problems.append(error)
        return problems

    def rewrite_final_weights(
        self, context: RunContext, problems: list[WeightsFileError], start: int, iterations: int
    ) -> None:
        """Say that the final weights of a complete stage are written again from its last
        checkpoint (restored into the nets: the same tensors); refuse when that
        checkpoint is gone."""
        if start < iterations:
            raise WeightsFileError(
                "; ".join(str(problem) for problem in problems)
                + f". No intact checkpoint of {self.name} at its last iteration ({iterations}) is left "
                "to write it again from: restore the file from a copy, or train the stage again in "
                "a new run"
            )
        for problem in problems:
            context.reporter.warning(f"{problem}; writing it again from the stage's last checkpoint")

    def publish(self, context: RunContext, outputs: RunOutputs, method: Method) -> None:
        """Hand the stage's nets on to later stages."""
        outputs.nets.update(method.nets)

    def restore(self, context: RunContext, job: TrainingJob) -> int:
        """Load the stage's newest intact checkpoint; returns the iteration to start from."""

        def skipped(folder: Any, problem: str) -> None:
            context.reporter.warning(f"skipping damaged checkpoint {folder.name}: {problem}")

        store = context.checkpoints
        newest = store.newest_intact(self.name, skipped)
        if newest is None:
            damaged = store.periodic_list(self.name)
            if damaged:
                names = ", ".join(str(folder) for folder in damaged)
                raise CheckpointError(
                    f"no intact checkpoint of {self.name} to resume from; damaged: {names}. Restore them "
                    f"from a copy, or delete them to train {self.name} again from its start"
                )
            return 0
        state, _ = checkpoints.read(newest)
        start = load_job_state(job, state)
        context.reporter.message(
            f"resuming {self.title(context)} at iteration {start} of {job.iterations} "
            f"from {newest.relative_to(context.run_dir.path)}"
        )
        return start

    def hooks(
        self,
        context: RunContext,
        job: TrainingJob,
        loop: TrainingLoop,
        advance: Any,
        describe: Any,
        clock: StageClock,
    ) -> Hooks:
        """The stage's hooks: guard, metrics, validation, checkpoints, stops."""
        store = context.checkpoints
        method = job.method

        def write(folder: Any, iteration: int, kind: str, score: float | None = None) -> None:
            if context.world.is_main:
                metadata: dict[str, Any] = {"stage": self.name, "iteration": iteration, "kind": kind}
                if score is not None:
                    metadata["score"] = score
                checkpoints.write(folder, job_state(job, iteration), metadata)
                if kind == "periodic":
                    store.prune(self.name, context.recipe.checkpoint.keep_last)
                    context.save_time(clock)
            barrier()

        def evaluate() -> dict[str, dict[str, float]]:
            scores = {}
            for role, net in method.nets.items():
                summary = context.evaluate(net, f"validation of the {role} net").summary()
                scores[role] = {"miou": summary["miou"], "miou_with_labels": summary["miou_with_labels"]}
            return scores

        metric = "miou_with_labels" if method.predicts_with_image_labels else "miou"
        validation = None
        if loop.eval_interval:
            validation = Validation(
                stage=self.name,
                interval=loop.eval_interval,
                evaluate=evaluate,
                selects=f"{method.labeller}.{metric}",
                log=context.log,
                save_best=lambda iteration, score: write(store.best(self.name), iteration, "best", score),
                best=store.best_score(self.name),
                nets=list(method.nets.values()),
                report=context.reporter.message,
            )
        return Hooks(
            guard=NonFiniteGuard(
                self.name, context.recipe.experiment.skip_nonfinite, context.log, job.iterations + 1
            ),
            metrics=MetricsWindow(
                self.name,
                loop.log_interval,
                context.log,
                context.reporter.describe_record(describe),
                method.log_metrics,
                context.device,
            ),
            validation=validation,
            checkpoint_interval=context.recipe.checkpoint.interval,
            save_checkpoint=lambda iteration: write(
                store.periodic(self.name, iteration), iteration, "periodic"
            ),
            stop=StopPolicy(
                self.name, context.run_dir.path, context.device, context.stop_after.get(self.name)
            ),
            progress=advance,
            nets=list(method.nets.values()),
        )


class CrossTraining(TrainingStage):
    """Stage 1: the recipe's method (PCT: the hybrid and pseudo nets) on strong and weak
    images."""

    name = "cross_training"

    def method(self, context: RunContext) -> Method:
        recipe = context.recipe
        inputs = MethodInputs(
            num_classes=context.data.num_classes,
            new_net=lambda role, init_like=None: context.new_net(recipe.model, role, init_like),
            segmentation_loss=build_component("losses", recipe.loss.segmentation),
            classification_loss=build_component("losses", recipe.loss.classification),
            reduce_sum=all_reduce_sum,
        )
        method: Method = build_component("methods", recipe.method, inputs)
        unused = sorted(set(recipe.nets) - set(method.nets))
        if unused:  # validate refuses names no method has; these belong to another method
            context.reporter.warning(
                f"[nets] {', '.join(unused)}: method {recipe.method.type!r} has no such net "
                f"({', '.join(method.nets)}); the section is unused"
            )
        context.stage_one_nets = [method.labeller, *(r for r in method.nets if r != method.labeller)]
        return method

    def settings(self, context: RunContext) -> tuple[TrainingLoop, Model]:
        return context.recipe.cross_training, context.recipe.model

    def components(self, context: RunContext, role: str) -> tuple[ComponentSpec, ComponentSpec]:
        return context.recipe.net_optimizer(role), context.recipe.net_scheduler(role)

    def title(self, context: RunContext) -> str:
        return f"cross training ({context.recipe.method.type})"

    def batch_size(self, context: RunContext, method: Method) -> int:
        settings = context.recipe.cross_training
        return settings.strong_batch_size + (settings.weak_batch_size if method.draws_weak_images else 0)

    def streams(self, context: RunContext, method: Method, start: int) -> list[tuple[Any, IterationBatches]]:
        recipe, data, world = context.recipe, context.data, context.world
        settings = recipe.cross_training
        strong = TrainingImages(
            data.train, data.num_classes, context.augmentation("strong"), require_masks=True
        )
        seed = recipe.experiment.seed
        streams: list[tuple[Any, IterationBatches]] = [
            (
                strong,
                IterationBatches(
                    data.strong_indices,
                    settings.strong_batch_size,
                    seed,
                    "strong",
                    start,
                    settings.iterations,
                    world.rank,
                    world.world_size,
                ),
            )
        ]
        if method.draws_weak_images and settings.weak_batch_size > 0:
            weak = IterationBatches(
                list(range(len(data.train))),
                settings.weak_batch_size,
                seed,
                "weak",
                start,
                settings.iterations,
                world.rank,
                world.world_size,
            )
            weak_images = TrainingImages(data.train, data.num_classes, context.augmentation("weak"))
            streams.append((weak_images, weak))
        return streams

    def publish(self, context: RunContext, outputs: RunOutputs, method: Method) -> None:
        outputs.nets.update(method.nets)
        outputs.labeller = method.labeller


class Retraining(TrainingStage):
    """Stage 2b: a fresh net, fully supervised on ground truth + pseudo labels."""

    name = "retraining"

    def method(self, context: RunContext) -> Method:
        retrain = context.recipe.retrain
        net = context.new_net(retrain.model, "retrained")
        return Supervised(net, "retrained", build_component("losses", retrain.loss))

    def settings(self, context: RunContext) -> tuple[TrainingLoop, Model]:
        return context.recipe.retrain, context.recipe.retrain.model

    def components(self, context: RunContext, role: str) -> tuple[ComponentSpec, ComponentSpec]:
        return context.recipe.retrain.optimizer, context.recipe.retrain.scheduler

    def batch_size(self, context: RunContext, method: Method) -> int:
        return context.recipe.retrain.batch_size

    def streams(self, context: RunContext, method: Method, start: int) -> list[tuple[Any, IterationBatches]]:
        recipe, data, world = context.recipe, context.data, context.world
        dataset = TrainingImages(
            data.train, data.num_classes, context.augmentation("retrain"), context.run_dir.pseudo_labels
        )
        sampler = IterationBatches(
            list(range(len(data.train))),
            recipe.retrain.batch_size,
            recipe.experiment.seed,
            "retrain",
            start,
            recipe.retrain.iterations,
            world.rank,
            world.world_size,
        )
        return [(dataset, sampler)]
