"""What pctkit's training step costs over hand-written PyTorch, and what feeds it.

Three arms run in one process, in alternating blocks of iterations on the same batch
(so that a machine busy with other work slows all arms alike):

- **pctkit PCT**: the engine's own loop (:func:`pctkit.engine.trainer.run_stage`) around
  :func:`pctkit.engine.cross_training.pct_step`: forward both nets, pseudo labels,
  dynamic evaluation, the four loss terms, one backward, both optimizers and schedules;
- **hand-written PCT**: the same math written directly in PyTorch, as a researcher's
  training script would (:func:`hand_written_pct_step`), on copies of the same nets;
- **pctkit supervised**: the engine's loop around one net's plain cross entropy on the
  same images (the cost of training one net, the denominator of "PCT / supervised").

Targets (issue 6): pctkit / hand-written <= 1.05, PCT / supervised <= 2.1 (two nets are
trained). Then the data pipeline (``TrainingImages`` + ``IterationBatches`` +
``DataLoader``, both streams, as the pipeline builds them) is timed alone and compared
with what the step consumes.

    python benchmarks/step_speed.py                      # CPU, quickstart model, < 3 min
    python benchmarks/step_speed.py --model voc --device cuda --precision bf16

Prints a table and writes ``benchmarks/results/step_speed.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
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

from pctkit.components.datasets.digit_scenes import digit_scenes
from pctkit.components.losses import class_aware_cross_entropy, max_pool_soft_margin
from pctkit.components.optim import adamw, poly
from pctkit.engine.build import build_net
from pctkit.engine.cross_training import Batch, PCTWeights, StepResult, pct_step, supervised_step
from pctkit.engine.data import AugmentationSettings, IterationBatches, TrainingImages, make_loader
from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.model import parameter_groups
from pctkit.engine.trainer import LoopContext, Stage, run_stage
from pctkit.recipe.schema import ComponentSpec, Model

RESULTS = Path(__file__).parent / "results"
IGNORE = 255
MOMENTUM = 0.99
SCORE_POWER = 8.0
LEARNING_RATE = 2e-3

MODELS: dict[str, dict[str, Any]] = {
    # The quickstart recipe's network (METHOD.md's CPU measurements).
    "quickstart": {
        "backbone": {"type": "timm", "model_name": "test_resnet", "out_indices": [1, 3], "output_stride": 32},
        "head": {"type": "fusion", "channels": 64},
        "num_classes": 11,
        "size": 64,
        "strong": 8,
        "weak": 8,
    },
    # The paper's network: DeepLabv3+ on ResNet-101 at output stride 8, crop 384, 5 + 5.
    "voc": {
        "backbone": {"type": "timm", "model_name": "resnet101", "out_indices": [1, 4], "output_stride": 8},
        "head": {"type": "deeplabv3plus", "channels": 256},
        "num_classes": 21,
        "size": 384,
        "strong": 5,
        "weak": 5,
    },
}


@dataclass
class Setting:
    """What one benchmark run measures."""

    model: str
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


def full_masks(batch: Batch, setting: Setting, seed: int = 1) -> Tensor:
    """Masks for every image of the batch (the supervised arm trains on all of them)."""
    generator = torch.Generator().manual_seed(seed)
    masks = batch.masks.clone().cpu()
    missing = masks[:, 0, 0] == IGNORE
    filler = torch.randint(0, setting.num_classes, masks.shape, generator=generator)
    masks[missing] = filler[missing]
    return masks.to(batch.images.device)


def new_net(setting: Setting) -> nn.Module:
    """The benchmark's network, on the device, seeded identically every call."""
    spec = MODELS[setting.model]
    model = Model(backbone=ComponentSpec(**spec["backbone"]), head=ComponentSpec(**spec["head"]))
    torch.manual_seed(0)
    net: nn.Module = build_net(model, setting.num_classes).to(setting.device)
    if setting.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- arms


class BlockTimer:
    """Seconds per iteration over iterations 2..k of a block (the first one absorbs
    whatever the block's start costs); synchronises the device at both ends only."""

    def __init__(self, device: torch.device, block: int) -> None:
        self.device = device
        self.block = block
        self.count = 0
        self.start = 0.0
        self.end = 0.0

    def tick(self, advance: int = 1) -> None:
        self.count += advance
        if self.count == 1 or self.count == self.block:
            synchronize(self.device)
            if self.count == 1:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()

    @property
    def seconds_per_iteration(self) -> float:
        return (self.end - self.start) / (self.block - 1)


class BlockDone(Exception):
    """Raised by an engine arm's batch stream after its block of iterations."""


class EngineArm:
    """A stage run by the engine's loop, ``block`` iterations per call."""

    def __init__(
        self,
        name: str,
        nets: dict[str, nn.Module],
        compute: Callable[[Batch, int], StepResult],
        batch: Batch,
        setting: Setting,
        extra_state: dict[str, Any],
        run_dir: Path,
    ) -> None:
        self.name = name
        self.nets = nets
        self.compute = compute
        self.batch = batch
        self.setting = setting
        self.extra_state = extra_state
        self.run_dir = run_dir
        total = setting.block * (setting.rounds + 1)
        self.optimizers: dict[str, Optimizer] = {
            role: adamw(parameter_groups(net, 1.0), lr=LEARNING_RATE) for role, net in nets.items()
        }
        self.schedulers = {role: poly(opt, total) for role, opt in self.optimizers.items()}
        self.blocks = 0

    def run_block(self) -> float:
        block = self.setting.block

        def micro_batches(start: int) -> Iterator[list[Batch]]:
            for _ in range(block):
                yield [self.batch]
            # Leave the loop here: its end would write a checkpoint, which is no step.
            raise BlockDone

        timer = BlockTimer(self.setting.device, block)
        stage = Stage(
            name=self.name,
            nets=self.nets,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            extra_state=self.extra_state,
            micro_batches=micro_batches,
            compute=self.compute,
            total_iterations=10**9,
            log_interval=10**9,
        )
        context = LoopContext(
            run_dir=self.run_dir / self.name,
            device=self.setting.device,
            precision=self.setting.precision,
            progress=timer.tick,
        )
        with contextlib.suppress(BlockDone):
            run_stage(stage, context, self.blocks * block)
        self.blocks += 1
        return timer.seconds_per_iteration


def hand_written_pct_step(
    hybrid_net: nn.Module,
    pseudo_net: nn.Module,
    optimizers: list[Optimizer],
    schedulers: list[LambdaLR],
    counts: Tensor,
    batch: Batch,
) -> Tensor:
    """One PCT iteration written directly in PyTorch (METHOD.md steps 1-6).

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
        counts.mul_(MOMENTUM).add_(batch_counts)
        scores = (counts[2] / (counts[0] + counts[1] - counts[2])).float()
        weak_present = labels[strong:] > 0
        weights = torch.where(weak_present, scores, torch.ones_like(scores)).amin(1).pow(SCORE_POWER)

    loss_strong = F.nll_loss(hybrid_log_p[:strong], masks[:strong], ignore_index=IGNORE)
    pooled = hybrid_logits.float().amax(dim=(2, 3))
    loss_cls = F.binary_cross_entropy_with_logits(pooled[:, 1:], labels[:, 1:])
    loss_h2p = F.nll_loss(pseudo_log_p[strong:], from_hybrid[strong:], ignore_index=IGNORE)
    per_pixel = F.nll_loss(hybrid_log_p[strong:], from_pseudo[strong:], ignore_index=IGNORE, reduction="none")
    valid_weak = (from_pseudo[strong:] != IGNORE).sum().clamp(min=1)
    loss_p2h = (per_pixel * weights[:, None, None]).sum() / valid_weak
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

    def __init__(self, hybrid_net: nn.Module, pseudo_net: nn.Module, batch: Batch, setting: Setting) -> None:
        self.nets = [hybrid_net, pseudo_net]
        self.batch = batch
        self.setting = setting
        total = setting.block * (setting.rounds + 1)
        self.optimizers = [
            torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4) for net in self.nets
        ]
        self.schedulers = [LambdaLR(opt, lambda t: max(0.0, 1 - t / total) ** 0.9) for opt in self.optimizers]
        self.counts = torch.zeros(3, setting.num_classes, dtype=torch.float64)
        self.counts[0] = 1  # T = 1, P = TP = 0: J starts at 0

    def step(self) -> Tensor:
        with autocast_context(self.setting.device, self.setting.precision):
            return hand_written_pct_step(
                self.nets[0], self.nets[1], self.optimizers, self.schedulers, self.counts, self.batch
            )

    def run_block(self) -> float:
        for net in self.nets:
            net.train()
        timer = BlockTimer(self.setting.device, self.setting.block)
        for _ in range(self.setting.block):
            self.step()
            timer.tick()
        return timer.seconds_per_iteration


# --------------------------------------------------------------------------- measurements


def same_math(setting: Setting, batch: Batch) -> dict[str, float]:
    """One step of each PCT implementation from the same weights: the losses agree."""
    nets = {"hybrid": new_net(setting), "pseudo": new_net(setting)}
    hand_nets = copy.deepcopy(nets)
    evaluation = DynamicEvaluation(setting.num_classes, MOMENTUM)
    with autocast_context(setting.device, setting.precision):
        engine = pct_step(
            nets["hybrid"],
            nets["pseudo"],
            batch,
            evaluation,
            class_aware_cross_entropy(),
            max_pool_soft_margin(),
            PCTWeights(score_power=SCORE_POWER),
        )
    hand = HandArm(hand_nets["hybrid"], hand_nets["pseudo"], batch, setting)
    hand_loss = hand.step()
    return {"pctkit_loss": float(engine.loss.detach()), "hand_written_loss": float(hand_loss)}


def step_times(setting: Setting, run_dir: Path, console: Console) -> dict[str, list[float]]:
    """Per-round seconds per iteration of each arm (after one warm-up round)."""
    batch = make_batch(setting)
    masks = full_masks(batch, setting)
    nets = {"hybrid": new_net(setting), "pseudo": new_net(setting)}
    hand = HandArm(copy.deepcopy(nets["hybrid"]), copy.deepcopy(nets["pseudo"]), batch, setting)
    evaluation = DynamicEvaluation(setting.num_classes, MOMENTUM)
    segmentation, classification = class_aware_cross_entropy(), max_pool_soft_margin()
    weights = PCTWeights(score_power=SCORE_POWER)

    def pct(micro_batch: Batch, micro_index: int) -> StepResult:
        return pct_step(
            nets["hybrid"],
            nets["pseudo"],
            micro_batch,
            evaluation,
            segmentation,
            classification,
            weights,
            new_iteration=micro_index == 0,
        )

    supervised_net = new_net(setting)

    def supervised(micro_batch: Batch, micro_index: int) -> StepResult:
        return supervised_step(supervised_net, micro_batch.images, masks)

    arms: dict[str, Any] = {
        "pctkit_pct": EngineArm(
            "cross_training", nets, pct, batch, setting, {"dynamic_evaluation": evaluation}, run_dir
        ),
        "hand_written_pct": hand,
        "pctkit_supervised": EngineArm(
            "supervised", {"supervised": supervised_net}, supervised, batch, setting, {}, run_dir
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for round_index in range(setting.rounds + 1):
        for name, arm in arms.items():
            seconds = arm.run_block()
            if round_index > 0:  # the first round warms up caches, allocators, autotuning
                times[name].append(seconds)
        if round_index:
            console.print(
                f"round {round_index}/{setting.rounds}: "
                + ", ".join(f"{name} {values[-1] * 1000:.1f} ms" for name, values in times.items()),
                highlight=False,
            )
    return times


def pipeline_throughput(setting: Setting, workers: int) -> float:
    """Images per second the data pipeline delivers for both streams (digit scenes at
    the benchmark's size, no augmentation beyond the recipe default)."""
    data = digit_scenes(
        num_strong=100,
        num_weak=400,
        num_val=1,
        canvas_size=setting.size,
        min_digit_size=max(8, setting.size // 4),
        max_digit_size=max(8, setting.size // 2),
    )
    dataset = TrainingImages(data.train, data.num_classes, AugmentationSettings())
    iterations = setting.loader_iterations
    streams = [
        IterationBatches(data.strong_indices, setting.strong, 0, "strong", 0, iterations),
        IterationBatches(list(range(len(data.train))), setting.weak, 0, "weak", 0, iterations),
    ]
    loaders = [make_loader(dataset, sampler, workers, False, True) for sampler in streams]
    batches = zip(*loaders, strict=True)
    next(batches)  # starting worker processes is paid once per run, not per image
    started = time.perf_counter()
    images = 0
    for parts in batches:
        images += sum(int(part["image"].shape[0]) for part in parts)
    return images / (time.perf_counter() - started)


# --------------------------------------------------------------------------- report


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and the ratios the issue sets targets for (per round, then median)."""
    median = {name: statistics.median(values) for name, values in times.items()}
    overhead = [e / h for e, h in zip(times["pctkit_pct"], times["hand_written_pct"], strict=True)]
    two_nets = [p / s for p, s in zip(times["pctkit_pct"], times["pctkit_supervised"], strict=True)]
    return {
        "seconds_per_iteration": median,
        "pctkit_over_hand_written": statistics.median(overhead),
        "pctkit_over_hand_written_per_round": overhead,
        "pct_over_supervised": statistics.median(two_nets),
        "pct_over_supervised_per_round": two_nets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="quickstart")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--size", type=int, default=0, help="image side (default: the model's)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds of alternating blocks")
    parser.add_argument("--block", type=int, default=4, help="iterations per arm per round (>= 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, two threads that wait for each "
        "other at every operation run several times slower than one; 0: torch's default)",
    )
    parser.add_argument("--loader-iterations", type=int, default=60, help="iterations (>= 2) of the loaders")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "step_speed.json")
    arguments = parser.parse_args()

    if arguments.block < 2:
        parser.error("--block must be at least 2 (the first iteration of a block is not timed)")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    spec = MODELS[arguments.model]
    setting = Setting(
        model=arguments.model,
        device=torch.device(arguments.device),
        precision=arguments.precision,
        channels_last=arguments.channels_last,
        size=arguments.size or spec["size"],
        strong=spec["strong"],
        weak=spec["weak"],
        num_classes=spec["num_classes"],
        rounds=arguments.rounds,
        block=arguments.block,
        loader_iterations=arguments.loader_iterations,
        loader_workers=tuple(arguments.loader_workers),
    )
    if setting.precision == "fp16" and setting.device.type != "cuda":
        parser.error("fp16 needs CUDA (as in pctkit runs); use bf16 or fp32 on CPU")
    console = Console()
    console.print(
        f"[bold]step speed[/]: {setting.model} model, {setting.size} px, {setting.strong} + {setting.weak} "
        f"images, {setting.device}, {setting.precision}"
        + (", channels_last" if setting.channels_last else "")
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads",
        highlight=False,
    )
    started = time.perf_counter()
    losses = same_math(setting, make_batch(setting))
    console.print(
        f"same math: first-step loss pctkit {losses['pctkit_loss']:.6f}, "
        f"hand-written {losses['hand_written_loss']:.6f}",
        highlight=False,
    )
    with tempfile.TemporaryDirectory() as folder:
        times = step_times(setting, Path(folder), console)
    summary = summarise(times)
    pct_seconds = summary["seconds_per_iteration"]["pctkit_pct"]
    consumption = (setting.strong + setting.weak) / pct_seconds
    pipeline = {str(workers): pipeline_throughput(setting, workers) for workers in setting.loader_workers}

    table = Table(title="pctkit step speed", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for name, seconds in summary["seconds_per_iteration"].items():
        table.add_row(f"{name} (median s/iteration)", f"{seconds:.4f}", "")
    overhead_ok = summary["pctkit_over_hand_written"] <= 1.05
    two_nets_ok = summary["pct_over_supervised"] <= 2.1
    table.add_row(
        "pctkit PCT / hand-written PCT",
        f"{summary['pctkit_over_hand_written']:.3f}",
        f"<= 1.05 {'[green]ok[/]' if overhead_ok else '[red]missed[/]'}",
    )
    table.add_row(
        "PCT step / supervised step",
        f"{summary['pct_over_supervised']:.3f}",
        f"<= 2.1 {'[green]ok[/]' if two_nets_ok else '[red]missed[/]'}",
    )
    table.add_row("images/s the PCT step consumes", f"{consumption:.0f}", "")
    for workers, rate in pipeline.items():
        table.add_row(
            f"data pipeline images/s, {workers} workers",
            f"{rate:.0f}",
            f"x{rate / consumption:.1f} of consumption",
        )
    console.print(table)

    record = {
        "setting": {
            "model": setting.model,
            "model_spec": spec,
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
        },
        "same_math": losses,
        **summary,
        "targets": {"pctkit_over_hand_written": 1.05, "pct_over_supervised": 2.1},
        "met": {"pctkit_over_hand_written": overhead_ok, "pct_over_supervised": two_nets_ok},
        "pipeline_images_per_second": pipeline,
        "step_images_per_second": consumption,
        "seconds": time.perf_counter() - started,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {arguments.out} ({record['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
