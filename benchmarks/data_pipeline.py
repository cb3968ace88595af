"""Is decoding the bottleneck? Images/s of the VOC data pipeline against the train step.

Builds ``recipes/voc_pct.toml`` (plus any ``--set`` overrides), then measures two rates
on the same batches of ``strong_batch_size + weak_batch_size`` images:

1. **data pipeline**: the engine's own loader (``TrainingImages`` -> JPEG and PNG
   decoding, the recipe's augmentation, ``pad_collate``; ``IterationBatches`` sampling)
   with 0, 1, 2, ... DataLoader workers. The first batch, which pays for starting the
   workers, is timed apart.
2. **train step**: one PCT iteration (both nets forward and backward, both optimizers)
   on a batch already in memory, with the recipe's network and precision.

The pipeline keeps up when its images/s exceed the step's. The two are measured one
after the other, not together: on a machine with few cores, workers and the step would
compete for them.

By default the data is a tiny VOC layout at VOC's usual image size (500 x 375), written
to a temporary folder, and the network is made CPU-sized (timm ``test_resnet``);
``--root`` measures a real VOC folder and ``--paper-model`` keeps the recipe's ResNet-101
(for a GPU machine)::

    python benchmarks/data_pipeline.py                       # CPU, tiny data, seconds
    python benchmarks/data_pipeline.py --root data/VOCdevkit/VOC2012 --paper-model \\
        --workers 0 4 8 16 --batches 40

Prints a table and writes ``benchmarks/results/data_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import pctkit
from pctkit.components.datasets.voc_layout import write_tiny_voc
from pctkit.engine.build import build_component, build_data, build_net, build_optimizer, resolve_device
from pctkit.engine.cross_training import Batch, PCTWeights, pct_step
from pctkit.engine.data import (
    AugmentationSettings,
    IterationBatches,
    TrainingImages,
    images_to_float,
    make_loader,
)
from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.engine.evaluation import autocast_context
from pctkit.recipe import Recipe, load_recipe

RECIPE = Path(pctkit.__file__).parent / "recipes" / "voc_pct.toml"
RESULTS = Path(__file__).parent / "results" / "data_pipeline.json"

CPU_SIZED_NET = [
    'model.backbone.pretrained=""',
    'model.backbone.model_name="test_resnet"',
    "model.backbone.out_indices=[1, 3]",
    "model.backbone.output_stride=16",
    "model.head.channels=64",
    'experiment.precision="fp32"',
    "experiment.channels_last=false",
]
"""The default network: the recipe's DeepLabv3+ head on timm's tiny test ResNet."""

VOC_IMAGE_SIZE = (375, 500)
"""(height, width) of most PASCAL VOC images."""


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="a real VOC2012 folder (default: a tiny one)")
    parser.add_argument("--images", type=int, default=40, help="images of the tiny layout")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts")
    parser.add_argument("--batches", type=int, default=12, help="batches per worker count")
    parser.add_argument("--steps", type=int, default=2, help="timed train steps (after one warm-up)")
    parser.add_argument("--paper-model", action="store_true", help="keep the recipe's ResNet-101")
    parser.add_argument("--device", default="auto", help="device of the train step")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    return parser.parse_args()


def measure_pipeline(
    dataset: TrainingImages, pool: list[int], batch_size: int, workers: int, batches: int, pin: bool
) -> dict[str, float]:
    """Images/s of the loader with ``workers`` workers, start-up included.

    The rate counts from the loader's creation: once the first batch is out, workers
    have prefetched several more, so a rate started there would flatter them.
    """
    sampler = IterationBatches(pool, batch_size, seed=0, stream="benchmark", start=0, end=batches)
    loader = make_loader(dataset, sampler, workers, pin_memory=pin, persistent_workers=False)
    started = time.perf_counter()
    iterator = iter(loader)
    images = int(next(iterator)["image"].shape[0])
    first_batch = time.perf_counter() - started
    images += sum(int(batch["image"].shape[0]) for batch in iterator)
    seconds = time.perf_counter() - started
    return {
        "workers": workers,
        "images_per_second": images / seconds,
        "first_batch_seconds": first_batch,
        "images": images,
    }


def measure_train_step(recipe: Recipe, batch: dict[str, Any], num_strong: int, steps: int) -> dict[str, Any]:
    """Images/s of PCT iterations (both nets, forward, backward, step) on one batch."""
    device = resolve_device(recipe.experiment.device)
    num_classes = int(batch["image_labels"].shape[1])
    nets = {role: build_net(recipe.model, num_classes).to(device).train() for role in ("hybrid", "pseudo")}
    if recipe.experiment.channels_last:
        nets = {role: net.to(memory_format=torch.channels_last) for role, net in nets.items()}
    optimizers = [
        build_optimizer(recipe.optimizer, net, recipe.cross_training.classifier_lr_multiplier)
        for net in nets.values()
    ]
    segmentation_loss = build_component("losses", recipe.loss.segmentation)
    classification_loss = build_component("losses", recipe.loss.classification)
    dynamic_evaluation = DynamicEvaluation(num_classes, recipe.cross_training.score_momentum)
    on_device = Batch(
        images=images_to_float(batch["image"], device, recipe.experiment.channels_last),
        masks=batch["mask"].to(device),
        image_labels=batch["image_labels"].to(device),
        has_mask=batch["has_mask"].to(device),
        num_strong=num_strong,
    )

    def step() -> None:
        with autocast_context(device, recipe.experiment.precision):
            result = pct_step(
                nets["hybrid"],
                nets["pseudo"],
                on_device,
                dynamic_evaluation,
                segmentation_loss,
                classification_loss,
                PCTWeights(score_power=recipe.cross_training.score_power),
            )
        result.loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, kernels selection
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {
        "device": str(device),
        "precision": recipe.experiment.precision,
        "backbone": recipe.model.backbone.parameters().get("model_name"),
        "seconds_per_step": seconds,
        "images_per_second": on_device.images.shape[0] / seconds,
    }


def print_table(results: dict[str, Any]) -> None:
    step = results["train_step"]["images_per_second"]
    print(
        f"\nVOC data pipeline vs train step ({results['batch_size']} images per batch, "
        f"crop {results['crop_size']}, {results['data']})"
    )
    print(f"{'':>24} {'images/s':>10} {'vs step':>9} {'first batch':>12}  (loader rates include start-up)")
    for row in results["pipeline"]:
        ratio = row["images_per_second"] / step
        print(
            f"{'loader, ' + str(row['workers']) + ' worker(s)':>24} {row['images_per_second']:>10.1f} "
            f"{ratio:>8.2f}x {row['first_batch_seconds']:>11.2f}s"
        )
    train = results["train_step"]
    print(
        f"{'train step (' + train['backbone'] + ')':>24} {step:>10.1f} {'1.00x':>9} "
        f"{'':>12}  {train['device']}, {train['precision']}"
    )
    fastest = max(results["pipeline"], key=lambda row: row["images_per_second"])
    verdict = "keeps up with" if fastest["images_per_second"] >= step else "is SLOWER than"
    print(f"best loader ({fastest['workers']} workers) {verdict} the train step\n")


def main() -> None:
    arguments = parse_arguments()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="pctkit-bench-") as scratch:
        overrides = [] if arguments.paper_model else list(CPU_SIZED_NET)
        overrides += [f'experiment.device="{arguments.device}"']
        if arguments.root is None:
            root = write_tiny_voc(
                Path(scratch) / "voc",
                num_train=arguments.images,
                num_val=1,
                num_strong=max(1, arguments.images // 4),
                size=VOC_IMAGE_SIZE,
            )
            overrides += [f"data.root={root}", "data.num_strong=-1"]
            data_description = (
                f"tiny VOC layout, {arguments.images} images of ~{VOC_IMAGE_SIZE[1]}x{VOC_IMAGE_SIZE[0]}"
            )
        else:
            overrides += [f"data.root={arguments.root}"]
            data_description = f"VOC at {arguments.root}"
        recipe = load_recipe(RECIPE, overrides + arguments.overrides)
        data = build_data(recipe)
        settings = recipe.cross_training
        batch_size = settings.strong_batch_size + settings.weak_batch_size
        augmentation = AugmentationSettings(**recipe.augmentation.model_dump())
        dataset = TrainingImages(data.train, data.num_classes, augmentation)
        pool = list(range(len(data.train)))
        device = resolve_device(recipe.experiment.device)

        pipeline = [
            measure_pipeline(dataset, pool, batch_size, workers, arguments.batches, device.type == "cuda")
            for workers in arguments.workers
        ]
        first = next(
            iter(make_loader(dataset, IterationBatches(pool, batch_size, 0, "step", 0, 1), 0, False, False))
        )
        train_step = measure_train_step(recipe, first, settings.strong_batch_size, arguments.steps)

    results: dict[str, Any] = {
        "data": data_description,
        "batch_size": batch_size,
        "crop_size": recipe.augmentation.crop_size,
        "augmentation": recipe.augmentation.model_dump(),
        "pipeline": pipeline,
        "train_step": train_step,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "command_overrides": overrides + arguments.overrides,
    }
    print_table(results)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
