"""What pctkit's training step costs over hand-written PyTorch, and what feeds it.

Four arms run in one process, in alternating blocks of iterations on the same batch
(so that a machine busy with other work slows all arms alike):

- **pctkit PCT**: the recipe's ``pct`` method, built through the registry with
  :class:`~pctkit.methods.base.MethodInputs` as a run builds it, trained by the engine's
  loop (:func:`pctkit.engine.loop.train`) with real hooks (non-finite guard, metrics
  window at the recipe's log interval, stop policy): forward both nets, pseudo labels,
  dynamic evaluation, the four loss terms, one backward, both optimizers and schedules;
- **hand-written PCT**: the same math written directly in PyTorch, as a researcher's
  training script would (:func:`hand_written_pct_step`), on copies of the same nets;
- **pctkit supervised**: the registry's ``supervised`` method (one net, plain cross
  entropy) in the same loop, on the same images, every one with a mask: the cost of
  training one net, the denominator of "PCT / supervised";
- **two supervised nets**: PCT's two nets (same initial weights), each trained as the
  supervised arm trains its one, in one step with one backward: what two nets cost in
  this loop without any PCT work. "PCT / two supervised nets" is the method's own cost.

Targets: pctkit / hand-written <= 1.05; PCT / supervised <= 2.1 (two nets cost 2.0,
the rest is the method's per-pixel work). Before timing, both PCT implementations run
three iterations from the same weights: their losses must agree (the same math).
``--profile N`` then profiles N iterations of the PCT and two-nets arms (``torch.profiler``,
self CPU time per operator) and lists where PCT's time beyond two supervised nets' goes.
Last, the data pipeline (digit scenes through the quickstart's augmentation streams and
the engine's loaders) is timed alone against what the PCT step consumes.

    python benchmarks/step_speed.py                      # CPU, quickstart model, < 1 min
    python benchmarks/step_speed.py --profile 8          # and where the PCT step's time goes
    python benchmarks/step_speed.py --model voc --device cuda --precision bf16 --channels-last

Prints a table and writes ``benchmarks/results/step_speed.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset

import pctkit
from pctkit.engine.build import build_component, build_net, build_optimizer, build_scheduler
from pctkit.engine.data import IterationBatches, TrainingImages, micro_batches, stable_seed
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.hooks import Hooks, MetricsWindow, NonFiniteGuard, StopPolicy
from pctkit.engine.loop import TrainingJob, train
from pctkit.engine.memory import keep_freed_memory
from pctkit.methods.base import Batch, Method, MethodInputs, StatelessMethod, StepResult
from pctkit.methods.supervised import PixelLoss, supervised_step
from pctkit.recipe import ComponentSpec, Recipe, load_recipe

RESULTS = Path(__file__).parent / "results"
RECIPES = Path(pctkit.__file__).parent / "recipes"
IGNORE = 255
TARGETS = {"pctkit_over_hand_written": 1.05, "pct_over_supervised": 2.1}

# Every arm trains every net with the same optimizer and schedule, the hand-written one
# included, so that the arms differ in how the step is written only.
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
POLY_POWER = 0.9
OPTIMIZER = ComponentSpec(type="adamw", lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
SCHEDULER = ComponentSpec(type="poly", power=POLY_POWER)

MODELS: dict[str, dict[str, Any]] = {
    # The quickstart recipe's network, method, image size, classes and batch.
    "quickstart": {"recipe": "quickstart.toml", "overrides": []},
    # The paper's network (DeepLabv3+ on ResNet-101 at output stride 8), crop 384, 5 + 5
    # images of 21 classes; random initial weights (nothing to download).
    "voc": {"recipe": "voc_pct.toml", "overrides": ['model.backbone.pretrained=""']},
}


@dataclass
class Setting:
    """What one benchmark run measures."""

    model: str
    recipe: Recipe
    device: torch.device
    precision: str
    channels_last: bool
    size: int
    strong: int
    weak: int
    num_classes: int
    rounds: int
    block: int
    loader_iterations: int
    loader_workers: tuple[int, ...]


def model_recipe(model: str, overrides: list[str] | None = None) -> Recipe:
    """The built-in recipe behind a benchmark model (its network, method and losses)."""
    spec = MODELS[model]
    return load_recipe(RECIPES / spec["recipe"], [*spec["overrides"], *(overrides or [])])


def recipe_shape(recipe: Recipe) -> dict[str, int]:
    """The batch a recipe trains on: image side, classes, strong and weak images."""
    data = recipe.data.parameters()
    if recipe.data.type == "digit_scenes":
        size = int(data.get("canvas_size", 64))
        num_classes = 1 + len(data.get("digit_classes", range(10)))
    else:  # a real dataset: the strong stream's crop, the declared classes
        size = int(recipe.augmentation.strong.parameters().get("crop_size", 0) or 384)
        num_classes = int(data.get("num_classes", 21))
    loop = recipe.cross_training
    return {
        "size": size,
        "num_classes": num_classes,
        "strong": loop.strong_batch_size,
        "weak": loop.weak_batch_size,
    }


# --------------------------------------------------------------------------- the batch


def make_batch(setting: Setting, seed: int = 0) -> Batch:
    """A generated batch with the structure of a real one: strong images with masks,
    weak images whose labels list 1-3 foreground classes, the first weak image with a
    mask (a weak draw that happens to be strong)."""
    generator = torch.Generator().manual_seed(seed)
    count = setting.strong + setting.weak
    side, classes = setting.size, setting.num_classes
    labels = torch.zeros(count, classes)
    labels[:, 0] = 1
    masks = torch.zeros(count, side, side, dtype=torch.long)
    for row in range(count):
        present = torch.randperm(classes - 1, generator=generator)[: 1 + row % 3] + 1
        labels[row, present] = 1
        # Square patches of each present class on background.
        for cls in present.tolist():
            top, left = torch.randint(0, side // 2, (2,), generator=generator).tolist()
            masks[row, top : top + side // 2, left : left + side // 2] = cls
    has_mask = torch.zeros(count, dtype=torch.bool)
    has_mask[: setting.strong + 1] = True
    masks[~has_mask] = IGNORE
    images = torch.rand(count, 3, side, side, generator=generator)
    device = setting.device
    images = images.to(device)
    if setting.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return Batch(
        images=images,
        masks=masks.to(device),
        image_labels=labels.to(device),
        has_mask=has_mask.to(device),
        num_strong=setting.strong,
    )


def fully_labelled(batch: Batch, setting: Setting, seed: int = 1) -> Batch:
    """The same images with a mask for every one (the supervised arm trains on all)."""
    generator = torch.Generator().manual_seed(seed)
    masks = batch.masks.clone().cpu()
    missing = ~batch.has_mask.cpu()
    filler = torch.randint(0, setting.num_classes, masks.shape, generator=generator)
    masks[missing] = filler[missing]
    return dataclasses.replace(
        batch, masks=masks.to(batch.images.device), has_mask=torch.ones_like(batch.has_mask)
    )


def new_net(setting: Setting, role: str = "hybrid") -> nn.Module:
    """The recipe's network on the device, initialised by role as a run initialises it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(setting.recipe.experiment.seed, "init", role))
        net: nn.Module = build_net(setting.recipe.model, setting.num_classes)
    net = net.to(setting.device)
    if setting.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def method_inputs(setting: Setting) -> MethodInputs:
    """What a run hands a method factory (one process: the sum over workers is itself)."""
    recipe = setting.recipe
    return MethodInputs(
        num_classes=setting.num_classes,
        new_net=lambda role, init_like=None: new_net(setting, init_like or role),
        segmentation_loss=build_component("losses", recipe.loss.segmentation),
        classification_loss=build_component("losses", recipe.loss.classification),
        reduce_sum=lambda tensor: tensor,
    )


def build_method(setting: Setting, spec: ComponentSpec) -> Method:
    """A method through the registry, as the cross-training stage builds it."""
    method: Method = build_component("methods", spec, method_inputs(setting))
    return method


def pct_parameters(recipe: Recipe) -> tuple[float, float]:
    """The recipe's PCT score power and momentum; the hand-written step implements the
    released weight rule and the mean over all weak pixels only."""
    parameters = recipe.method.parameters()
    if recipe.method.type != "pct":
        raise SystemExit(f"the benchmark recipe's method is {recipe.method.type!r}, not 'pct'")
    for key, released in (("weight_rule", "released"), ("p2h_mean", "all_weak_pixels")):
        if parameters.get(key, released) != released:
            raise SystemExit(f"the hand-written step implements method.{key} = {released!r} only")
    return float(parameters.get("score_power", 8.0)), float(parameters.get("score_momentum", 0.99))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- arms


class BlockTimer:
    """Seconds per iteration over iterations 2..k of a block (the first one absorbs
    whatever the block's start costs); synchronises the device at both ends only.

    Besides wall time it keeps this process's CPU time (user + system): on one thread
    it is the work done, without the time spent waiting for a core that other
    processes hold, so its ratios stay steady on a busy machine. It also counts minor
    page faults: memory the allocator gave back to the kernel and touches again.
    """

    def __init__(self, device: torch.device, block: int) -> None:
        self.device = device
        self.block = block
        self.count = 0
        self.start = self.end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.faults_start = self.faults_end = 0

    def tick(self, advance: int = 1) -> None:
        self.count += advance
        if self.count == 1 or self.count == self.block:
            synchronize(self.device)
            if self.count == 1:
                self.start, self.cpu_start = time.perf_counter(), time.process_time()
                self.faults_start = _minor_faults()
            else:
                self.end, self.cpu_end = time.perf_counter(), time.process_time()
                self.faults_end = _minor_faults()

    @property
    def seconds_per_iteration(self) -> float:
        return (self.end - self.start) / (self.block - 1)

    @property
    def cpu_seconds_per_iteration(self) -> float:
        return (self.cpu_end - self.cpu_start) / (self.block - 1)

    @property
    def minor_faults_per_iteration(self) -> float:
        return (self.faults_end - self.faults_start) / (self.block - 1)


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


class BlockDone(Exception):
    """Raised by an engine arm's batch stream after its block of iterations."""


class EngineArm:
    """A method trained by the engine's loop and hooks, ``block`` iterations per call.

    The hooks are a training stage's, minus what is not a step's cost: no validation,
    no periodic checkpoint (the loop never reaches its last iteration, which would
    write one). The metrics window logs at the recipe's interval into a list.
    """

    def __init__(
        self, stage: str, method: Method, batch: Batch, setting: Setting, run_dir: Path, total: int
    ) -> None:
        self.method = method
        self.batch = batch
        self.setting = setting
        self.block = setting.block
        optimizers = {role: build_optimizer(OPTIMIZER, net, 1.0) for role, net in method.nets.items()}
        self.job = TrainingJob(
            stage=stage,
            method=method,
            optimizers=optimizers,
            schedulers={role: build_scheduler(SCHEDULER, o, total) for role, o in optimizers.items()},
            batches=self.batches,
            iterations=10**9,
            device=setting.device,
            precision=setting.precision,
        )
        self.records: list[dict[str, Any]] = []
        self.timer = BlockTimer(setting.device, self.block)
        nets = list(method.nets.values())
        self.hooks = Hooks(
            guard=NonFiniteGuard(stage, False, self.records.append, self.job.iterations + 1),
            metrics=MetricsWindow(
                stage,
                setting.recipe.cross_training.log_interval,
                self.records.append,
                lambda record: None,
                method.log_metrics,
                setting.device,
            ),
            validation=None,
            checkpoint_interval=0,
            save_checkpoint=lambda iteration: None,
            stop=StopPolicy(stage, run_dir, setting.device),
            progress=lambda advance: self.timer.tick(advance),
            nets=nets,
        )
        self.done = 0

    def batches(self, start: int) -> Iterator[list[Batch]]:
        for _ in range(self.block):
            yield [self.batch]
        raise BlockDone

    def run_block(self, iterations: int = 0) -> BlockTimer:
        """Train ``iterations`` (default: the setting's block); their times."""
        self.block = iterations or self.setting.block
        self.timer = BlockTimer(self.setting.device, self.block)
        with contextlib.suppress(BlockDone):
            train(self.job, self.hooks, self.done)
        self.done += self.block
        return self.timer


class TwoSupervisedNets(StatelessMethod):
    """Two nets, each trained on every mask as the ``supervised`` method trains its one,
    summed into one loss: the cost of two nets in the loop, with no PCT work."""

    draws_weak_images = False
    predicts_with_image_labels = False
    labeller = "hybrid"

    def __init__(self, nets: dict[str, nn.Module], loss_fn: PixelLoss) -> None:
        self.nets = nets
        self.loss_fn = loss_fn

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """Both nets' supervised losses, one backward."""
        loss = sum(
            (supervised_step(net, batch, self.loss_fn).loss for net in self.nets.values()),
            torch.zeros((), device=batch.images.device),
        )
        return StepResult(loss, {"loss_ce": loss.detach()})


def hand_written_pct_step(
    hybrid_net: nn.Module,
    pseudo_net: nn.Module,
    optimizers: list[Optimizer],
    schedulers: list[LambdaLR],
    counts: Tensor,
    batch: Batch,
    momentum: float,
    score_power: float,
) -> Tensor:
    """One PCT iteration written directly in PyTorch (METHOD.md steps 1-6, the released
    code's weight rule and pseudo -> hybrid mean).

    ``counts`` holds the dynamic evaluation's T, P, TP rows and is updated in place.
    Returns the (detached) loss.
    """
    strong = batch.num_strong
    images, masks, labels = batch.images, batch.masks, batch.image_labels
    absent = (labels == 0)[:, :, None, None]

    hybrid_logits = hybrid_net(images)
    pseudo_logits = pseudo_net(images)
    hybrid_log_p = F.log_softmax(hybrid_logits.float().masked_fill(absent, float("-inf")), dim=1)
    pseudo_log_p = F.log_softmax(pseudo_logits.float().masked_fill(absent, float("-inf")), dim=1)

    with torch.no_grad():
        has_mask = batch.has_mask[:, None, None]
        pseudo_prediction = pseudo_log_p.argmax(1)
        from_hybrid = torch.where(has_mask, masks, hybrid_log_p.argmax(1))
        from_pseudo = torch.where(has_mask, masks, pseudo_prediction)
        truth, guess = masks[:strong], pseudo_prediction[:strong]
        valid = truth != IGNORE
        truth, guess = truth[valid], guess[valid]
        classes = labels.shape[1]
        batch_counts = torch.stack(
            [
                torch.bincount(truth, minlength=classes),
                torch.bincount(guess, minlength=classes),
                torch.bincount(truth[truth == guess], minlength=classes),
            ]
        ).to(counts)
        counts.mul_(momentum).add_(batch_counts)
        scores = (counts[2] / (counts[0] + counts[1] - counts[2])).float()
        # As the released code: J of each present class, classes with J = 0 set to 1.
        present_scores = labels[strong:] * scores
        present_scores[present_scores == 0] = 1
        weights = present_scores.amin(1).pow(score_power)

    loss_strong = F.nll_loss(hybrid_log_p[:strong], masks[:strong], ignore_index=IGNORE)
    pooled = hybrid_logits.float().amax(dim=(2, 3))
    loss_cls = F.binary_cross_entropy_with_logits(pooled[:, 1:], labels[:, 1:])
    loss_h2p = F.nll_loss(pseudo_log_p[strong:], from_hybrid[strong:], ignore_index=IGNORE)
    per_pixel = F.nll_loss(hybrid_log_p[strong:], from_pseudo[strong:], ignore_index=IGNORE, reduction="none")
    loss_p2h = (per_pixel * weights[:, None, None]).mean()
    loss = loss_strong + loss_cls + loss_h2p + loss_p2h

    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for scheduler in schedulers:
        scheduler.step()
    return loss.detach()


class HandArm:
    """The hand-written loop, ``block`` iterations per call."""

    def __init__(
        self, hybrid_net: nn.Module, pseudo_net: nn.Module, batch: Batch, setting: Setting, total: int
    ) -> None:
        self.nets = [hybrid_net, pseudo_net]
        self.batch = batch
        self.setting = setting
        self.optimizers: list[Optimizer] = [
            torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
            for net in self.nets
        ]
        self.schedulers = [
            LambdaLR(opt, lambda t: max(0.0, 1 - t / total) ** POLY_POWER) for opt in self.optimizers
        ]
        self.counts = torch.zeros(3, setting.num_classes, dtype=torch.float64)
        self.counts[0] = 1  # T = 1, P = TP = 0: J starts at 0
        self.score_power, self.momentum = pct_parameters(setting.recipe)

    def step(self) -> Tensor:
        with autocast_context(self.setting.device, self.setting.precision):
            return hand_written_pct_step(
                self.nets[0],
                self.nets[1],
                self.optimizers,
                self.schedulers,
                self.counts,
                self.batch,
                self.momentum,
                self.score_power,
            )

    def run_block(self, iterations: int = 0) -> BlockTimer:
        block = iterations or self.setting.block
        for net in self.nets:
            net.train()
        timer = BlockTimer(self.setting.device, block)
        for _ in range(block):
            self.step()
            timer.tick()
        return timer


# --------------------------------------------------------------------------- measurements


def same_math(setting: Setting, batch: Batch, iterations: int = 3) -> dict[str, list[float]]:
    """``iterations`` steps of each PCT implementation from the same weights, with the
    same optimizer and schedule: the losses of every step agree."""
    method = build_method(setting, setting.recipe.method)
    copies = copy.deepcopy(method.nets)
    with tempfile.TemporaryDirectory() as folder:
        arm = EngineArm("cross_training", method, batch, setting, Path(folder), iterations)
        arm.hooks.metrics.interval = 1  # one record, with its loss, per step
        arm.run_block(iterations)
    engine = [float(record["terms"]["loss"]) for record in arm.records if record["kind"] == "train"]
    hand = HandArm(copies["hybrid"], copies["pseudo"], batch, setting, iterations)
    hand_losses = [float(hand.step()) for _ in range(iterations)]
    return {"pctkit_loss": engine, "hand_written_loss": hand_losses}


def make_arms(setting: Setting, run_dir: Path) -> dict[str, Any]:
    """The three arms, each with its own nets from the same initial weights."""
    batch = make_batch(setting)
    total = setting.block * (setting.rounds + 1)
    pct = build_method(setting, setting.recipe.method)
    hand = HandArm(
        copy.deepcopy(pct.nets["hybrid"]), copy.deepcopy(pct.nets["pseudo"]), batch, setting, total
    )
    supervised = build_method(setting, ComponentSpec(type="supervised"))
    labelled = fully_labelled(batch, setting)
    two = TwoSupervisedNets(
        {role: copy.deepcopy(net) for role, net in pct.nets.items()},
        supervised.loss_fn,  # type: ignore[attr-defined]
    )
    return {
        "pctkit_pct": EngineArm("cross_training", pct, batch, setting, run_dir, total),
        "hand_written_pct": hand,
        "pctkit_supervised": EngineArm("cross_training", supervised, labelled, setting, run_dir, total),
        "two_supervised_nets": EngineArm("cross_training", two, labelled, setting, run_dir, total),
    }


def step_times(
    setting: Setting, arms: dict[str, Any], console: Console
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Per-round wall seconds, CPU seconds and minor page faults per iteration of each
    arm (after a warm-up round)."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    cpu_times: dict[str, list[float]] = {name: [] for name in arms}
    faults: dict[str, list[float]] = {name: [] for name in arms}
    for round_index in range(setting.rounds + 1):
        for name, arm in arms.items():
            timer = arm.run_block()
            if round_index > 0:  # the first round warms up caches, allocators, autotuning
                times[name].append(timer.seconds_per_iteration)
                cpu_times[name].append(timer.cpu_seconds_per_iteration)
                faults[name].append(timer.minor_faults_per_iteration)
        if round_index:
            console.print(
                f"round {round_index}/{setting.rounds}: "
                + ", ".join(f"{name} {values[-1] * 1000:.1f} ms" for name, values in times.items()),
                highlight=False,
            )
    return times, cpu_times, faults


def profile_arms(arms: dict[str, Any], iterations: int, block: int, top: int = 12) -> dict[str, Any]:
    """Where the PCT step's time goes beyond two supervised nets', by operator: self CPU
    time (``torch.profiler``) per iteration over ``iterations`` of both arms, run in
    alternating blocks so that other processes' load falls on both alike."""
    from torch.profiler import ProfilerActivity, profile

    names = ("pctkit_pct", "two_supervised_nets")
    totals: dict[str, dict[str, float]] = {name: {} for name in names}
    done = 0
    while done < iterations:
        count = max(2, min(block, iterations - done))
        for name in names:
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                arms[name].run_block(count)
            for event in profiler.key_averages():
                ops = totals[name]
                ops[event.key] = ops.get(event.key, 0.0) + event.self_cpu_time_total / 1000
        done += count
    pct, two_nets = ({op: ms / done for op, ms in totals[name].items()} for name in names)
    extra = {op: pct.get(op, 0.0) - two_nets.get(op, 0.0) for op in set(pct) | set(two_nets)}

    def ranked(values: dict[str, float], sign: float = 1.0) -> list[list[Any]]:
        order = sorted(values.items(), key=lambda item: -sign * item[1])[:top]
        return [[op, round(ms, 3)] for op, ms in order if sign * ms > 0]

    return {
        "iterations": done,
        "pct_self_cpu_ms_per_iteration": round(sum(pct.values()), 2),
        "two_nets_self_cpu_ms_per_iteration": round(sum(two_nets.values()), 2),
        "pct_top_ops_ms": ranked(pct),
        "two_nets_top_ops_ms": ranked(two_nets),
        "pct_minus_two_nets_ms": round(sum(extra.values()), 2),
        "pct_minus_two_nets_top_ops_ms": ranked(extra),
        "pct_minus_two_nets_most_negative_ops_ms": ranked(extra, -1.0),
    }


def pipeline_throughput(setting: Setting, workers: int) -> float:
    """Images per second the engine's loaders deliver for both streams: digit scenes at
    the benchmark's size through the quickstart recipe's strong and weak augmentation."""
    quickstart = model_recipe("quickstart")
    data_spec = {**quickstart.data.model_dump(), "num_strong": 100, "num_weak": 400, "num_val": 1}
    if setting.size != recipe_shape(quickstart)["size"]:  # scenes of the benchmark's size
        data_spec.update(
            canvas_size=setting.size,
            min_digit_size=max(8, setting.size // 4),
            max_digit_size=max(8, setting.size // 2),
            stroke_dilation=0,
        )
    data = build_component("datasets", ComponentSpec(**data_spec))
    iterations = setting.loader_iterations
    streams: list[tuple[Dataset[Any], IterationBatches]] = [
        (
            TrainingImages(
                data.train,
                data.num_classes,
                build_component("augmentations", getattr(quickstart.augmentation, stream)),
            ),
            IterationBatches(pool, size, 0, stream, 0, iterations),
        )
        for stream, pool, size in (
            ("strong", data.strong_indices, setting.strong),
            ("weak", list(range(len(data.train))), setting.weak),
        )
    ]
    batches = micro_batches(streams, 1, torch.device("cpu"), num_workers=workers)
    next(batches)  # starting worker processes is paid once per run, not per image
    started = time.perf_counter()
    images = sum(int(micro[0].images.shape[0]) for micro in batches)
    return images / (time.perf_counter() - started)


# --------------------------------------------------------------------------- report


def summarise(times: dict[str, list[float]], cpu_times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and the ratios with targets (per round, then median), of wall time (the
    targets' measure) and of CPU time."""

    def ratios(values: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
        return [a / b for a, b in zip(values[numerator], values[denominator], strict=True)]

    overhead = ratios(times, "pctkit_pct", "hand_written_pct")
    two_nets = ratios(times, "pctkit_pct", "pctkit_supervised")
    floor = ratios(times, "two_supervised_nets", "pctkit_supervised")
    method = ratios(times, "pctkit_pct", "two_supervised_nets")
    return {
        "seconds_per_iteration": {name: statistics.median(values) for name, values in times.items()},
        "pctkit_over_hand_written": statistics.median(overhead),
        "pctkit_over_hand_written_per_round": overhead,
        "pct_over_supervised": statistics.median(two_nets),
        "pct_over_supervised_per_round": two_nets,
        "two_nets_over_supervised": statistics.median(floor),
        "two_nets_over_supervised_per_round": floor,
        "pct_over_two_nets": statistics.median(method),
        "pct_over_two_nets_per_round": method,
        "cpu_seconds_per_iteration": {name: statistics.median(values) for name, values in cpu_times.items()},
        "cpu_time_ratios": {
            "pctkit_over_hand_written": statistics.median(
                ratios(cpu_times, "pctkit_pct", "hand_written_pct")
            ),
            "pct_over_supervised": statistics.median(ratios(cpu_times, "pctkit_pct", "pctkit_supervised")),
        },
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="quickstart")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--size", type=int, default=0, help="image side (default: the model's)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds of alternating blocks")
    parser.add_argument("--block", type=int, default=10, help="iterations per arm per round (>= 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, two threads that wait for each "
        "other at every operation run several times slower than one; 0: torch's default)",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N iterations per arm")
    parser.add_argument("--loader-iterations", type=int, default=60, help="iterations (>= 2) of the loaders")
    parser.add_argument("--loader-workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "step_speed.json")
    arguments = parser.parse_args()
    if arguments.block < 2:
        parser.error("--block must be at least 2 (the first iteration of a block is not timed)")
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.profile == 1:
        parser.error("--profile needs at least 2 iterations (the first one of a block is not timed)")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    if arguments.device == "cpu":
        keep_freed_memory()  # as `pctkit run` does on the CPU
    spec = MODELS[arguments.model]
    recipe = model_recipe(arguments.model)
    shape = recipe_shape(recipe)
    setting = Setting(
        model=arguments.model,
        recipe=recipe,
        device=torch.device(arguments.device),
        precision=arguments.precision,
        channels_last=arguments.channels_last,
        size=arguments.size or shape["size"],
        strong=shape["strong"],
        weak=shape["weak"],
        num_classes=shape["num_classes"],
        rounds=arguments.rounds,
        block=arguments.block,
        loader_iterations=arguments.loader_iterations,
        loader_workers=tuple(arguments.loader_workers),
    )
    console = Console()
    console.print(
        f"[bold]step speed[/]: {setting.model} model, {setting.size} px, {setting.strong} + {setting.weak} "
        f"images, {setting.device}, {setting.precision}"
        + (", channels_last" if setting.channels_last else "")
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads",
        highlight=False,
    )
    started = time.perf_counter()
    load_before = _load_average()
    losses = same_math(setting, make_batch(setting))
    # The first step agrees to rounding; after it, Adam's normalised updates amplify
    # rounding differences of tiny gradients a little.
    agree = all(
        abs(a - b) <= (1e-5 if step == 0 else 1e-3) * max(1.0, abs(b))
        for step, (a, b) in enumerate(zip(losses["pctkit_loss"], losses["hand_written_loss"], strict=True))
    )
    console.print(
        "same math: losses of the first steps, pctkit "
        + ", ".join(f"{v:.6f}" for v in losses["pctkit_loss"])
        + "; hand-written "
        + ", ".join(f"{v:.6f}" for v in losses["hand_written_loss"])
        + (" [green]agree[/]" if agree else " [red]DIFFER[/]"),
        highlight=False,
    )
    with tempfile.TemporaryDirectory() as folder:
        arms = make_arms(setting, Path(folder))
        times, cpu_times, faults = step_times(setting, arms, console)
        profile = profile_arms(arms, arguments.profile, setting.block) if arguments.profile else None
    summary = summarise(times, cpu_times)
    pct_seconds = summary["seconds_per_iteration"]["pctkit_pct"]
    consumption = (setting.strong + setting.weak) / pct_seconds
    pipeline = {str(workers): pipeline_throughput(setting, workers) for workers in setting.loader_workers}
    load_after = _load_average()

    table = Table(title="pctkit step speed", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    fault_medians = {name: statistics.median(values) for name, values in faults.items()}
    for name, seconds in summary["seconds_per_iteration"].items():
        table.add_row(
            f"{name} (median s/iteration)", f"{seconds:.4f}", f"{fault_medians[name]:.0f} page faults/it"
        )
    met = {name: summary[name] <= target for name, target in TARGETS.items()}
    for name, label in (
        ("pctkit_over_hand_written", "pctkit PCT / hand-written PCT"),
        ("pct_over_supervised", "PCT step / supervised step"),
    ):
        verdict = "[green]met[/]" if met[name] else "[red]missed[/]"
        table.add_row(label, f"{summary[name]:.3f}", f"<= {TARGETS[name]} {verdict}")
        table.add_row("  the same in CPU time", f"{summary['cpu_time_ratios'][name]:.3f}", "")
    table.add_row(
        "two supervised nets / supervised step",
        f"{summary['two_nets_over_supervised']:.3f}",
        "two nets alone",
    )
    table.add_row(
        "PCT step / two supervised nets", f"{summary['pct_over_two_nets']:.3f}", "the method's own work"
    )
    table.add_row("images/s the PCT step consumes", f"{consumption:.0f}", "")
    for workers, rate in pipeline.items():
        table.add_row(
            f"data pipeline images/s, {workers} workers",
            f"{rate:.0f}",
            f"x{rate / consumption:.1f} of consumption",
        )
    console.print(table)
    if profile is not None:
        console.print(
            f"profile ({profile['iterations']} iterations per arm, self CPU ms per iteration): PCT "
            f"{profile['pct_self_cpu_ms_per_iteration']}, two supervised nets "
            f"{profile['two_nets_self_cpu_ms_per_iteration']}, PCT - two supervised nets "
            f"{profile['pct_minus_two_nets_ms']}",
            highlight=False,
        )
        for op, ms in profile["pct_minus_two_nets_top_ops_ms"]:
            console.print(f"  {ms:8.2f} ms  {op}", highlight=False)
        console.print("  ...", highlight=False)
        for op, ms in reversed(profile["pct_minus_two_nets_most_negative_ops_ms"][:4]):
            console.print(f"  {ms:8.2f} ms  {op}", highlight=False)

    record = {
        "setting": {
            "model": setting.model,
            "model_spec": {
                **shape,
                "recipe": spec["recipe"],
                "recipe_overrides": spec["overrides"],
                "model": setting.recipe.model.model_dump(mode="json"),
                "method": setting.recipe.method.model_dump(mode="json"),
            },
            "device": str(setting.device),
            "device_name": torch.cuda.get_device_name(setting.device)
            if setting.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "precision": setting.precision,
            "channels_last": setting.channels_last,
            "size": setting.size,
            "batch": [setting.strong, setting.weak],
            "rounds": setting.rounds,
            "block": setting.block,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_1min": [load_before, load_after],
        },
        "same_math": {**losses, "agree": agree},
        **summary,
        "minor_page_faults_per_iteration": fault_medians,
        "targets": TARGETS,
        "met": met,
        "profile": profile,
        "pipeline_images_per_second": pipeline,
        "step_images_per_second": consumption,
        "seconds": time.perf_counter() - started,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {arguments.out} ({record['seconds']:.0f} s)")
    if not agree:
        raise SystemExit("the pctkit and hand-written PCT steps disagree: the timings compare different math")


def _load_average() -> float | None:
    """The 1-minute load average (other processes sharing the cores), where known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    main()
