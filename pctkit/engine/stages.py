"""The stages of a run, one shape each: cross training, pseudo labels, retraining,
evaluation.

Every stage runs with the run's :class:`~pctkit.engine.context.RunContext` and passes
what later stages need through :class:`~pctkit.engine.context.RunOutputs`. A stage that
is already complete (``progress.json``) only restores its outputs, so a resumed run
continues in the stage where it stopped. The two training stages are in
:mod:`pctkit.engine.training`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from pctkit.artifacts.pictures import prediction_grid
from pctkit.engine.context import RunContext, RunOutputs
from pctkit.engine.distributed import unwrap
from pctkit.engine.errors import TrainingInterrupted
from pctkit.engine.evaluation import EvaluationResult
from pctkit.engine.pseudo_labels import generate_pseudo_labels, weak_indices
from pctkit.engine.signals import StopRequest
from pctkit.engine.training import CrossTraining, Retraining


class Stage(Protocol):
    """One stage of a run."""

    name: str

    def run(self, context: RunContext, outputs: RunOutputs) -> None:
        """Run the stage, or only restore its outputs when it is complete."""
        ...


# --------------------------------------------------------------------------- pseudo labels


class PseudoLabels:
    """Stage 2a: the labelling net (PCT: the final hybrid net) labels every weak image.

    Labels already on disk are scored, not redone: an interrupted run picks up where it
    stopped, and a complete stage only re-reads its labels' quality.
    """

    name = "pseudo_labels"

    def run(self, context: RunContext, outputs: RunOutputs) -> None:
        data, settings = context.data, context.recipe.retrain.pseudo_labels
        indices = weak_indices(len(data.train), data.strong_indices)
        clock = context.clock(self.name)
        with context.reporter.task("pseudo labels", len(indices)) as (advance, _), StopRequest() as stop:

            def advance_or_stop(count: int) -> None:
                # Called once labels are on disk: stopping here loses nothing.
                advance(count)
                if stop.requested is not None:
                    raise TrainingInterrupted(
                        f"{stop.requested} during pseudo labels: the labels written so far are kept",
                        context.run_dir.path,
                    )

            try:
                quality = generate_pseudo_labels(
                    unwrap(outputs.nets[outputs.labeller]),
                    data.train,
                    indices,
                    context.run_dir.pseudo_labels,
                    data.num_classes,
                    context.device,
                    scales=settings.scales,
                    flip=settings.flip,
                    batch_size=settings.batch_size,
                    precision=context.recipe.experiment.precision,
                    colors=data.palette,
                    progress=advance_or_stop,
                    on_damaged=context.reporter.warning,
                )
            except BaseException:
                context.save_time(clock)
                raise
        scored = int(quality.matrix.sum()) > 0
        summary = {"images": len(indices), "miou": quality.miou() if scored else None}
        context.log({"kind": "pseudo_labels", "stage": self.name, **summary})
        outputs.pseudo_label_quality = summary
        if not context.progress.done(self.name):
            context.complete(self.name, clock)


# --------------------------------------------------------------------------- evaluation


class Evaluation:
    """Every net on the validation split: ``results.json`` and ``predictions.png``."""

    name = "evaluation"

    def run(self, context: RunContext, outputs: RunOutputs) -> None:
        num_pictures = context.recipe.evaluation.num_pictures
        results: dict[str, Any] = {"nets": {}, "class_names": context.data.class_names}
        evaluations: dict[str, EvaluationResult] = {}
        clock = context.clock(self.name)
        for role, net in outputs.nets.items():
            postprocess = context.postprocess(role)
            title = f"evaluation of the {role} net" + (" (with post-processing)" if postprocess else "")
            evaluations[role] = context.evaluate(
                net, title, num_examples=num_pictures, postprocess=postprocess
            )
            results["nets"][role] = evaluations[role].summary()
        results["pseudo_labels"] = outputs.pseudo_label_quality
        scores = {
            k: {"miou": v["miou"], "miou_with_labels": v["miou_with_labels"]}
            for k, v in results["nets"].items()
        }
        context.log({"kind": "evaluation", "stage": self.name, "nets": scores})
        context.record_peak_memory(self.name)  # a collective: every rank, before rank 0 writes
        if context.world.is_main:
            if num_pictures:
                self.pictures(context, evaluations)
            context.progress.seconds[self.name] = clock.total()
            results["seconds"] = context.progress.seconds
            results["peak_memory_gib"] = context.progress.peak_memory_gib
            results["memory_kind"] = context.progress.memory_kind
            context.run_dir.write_results(results)
        outputs.results = results
        if not context.progress.done(self.name):
            context.complete(self.name, clock, record_memory=False)

    def pictures(self, context: RunContext, evaluations: dict[str, EvaluationResult]) -> None:
        """``predictions.png``: image, ground truth and each net's prediction."""
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
        prediction_grid(images, columns, context.run_dir.predictions, context.data.palette)


def stages_of(retrain: bool) -> list[Stage]:
    """The stages of a run, in order."""
    stages: list[Stage] = [CrossTraining()]
    if retrain:
        stages += [PseudoLabels(), Retraining()]
    return [*stages, Evaluation()]
