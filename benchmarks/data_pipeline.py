"""Is decoding the bottleneck? What the VOC data pipeline costs per sample, and its
images/s against the train step.

Builds ``recipes/voc_pct.toml`` (plus any ``--set`` overrides) and its two training
streams as the cross-training stage builds them: the strong stream (the strong images,
``[augmentation.strong]``, the released ``random_ops_crop`` at crop 384) and the weak
stream (every training image, ``[augmentation.weak]``, the released ``crop``). Then it
measures:

1. **per sample**, in this process: milliseconds to decode a sample (JPEG image, PNG
   mask), to turn it into tensors, and to augment it, for each stream;
2. **data pipeline**: the engine's loaders (:func:`pctkit.engine.data.micro_batches`:
   one ``DataLoader`` per stream, ``pad_collate``, the batch as floats) for both
   streams together, with 0, 1, 2, ... workers. The rate counts from the loaders'
   creation, so worker start-up is included; the first batch is also timed apart;
3. **train step**: one iteration of the recipe's method (built through the registry,
   both nets forward and backward, the optimizers and schedules: the engine's
   :func:`~pctkit.engine.loop.forward_backward` and :func:`~pctkit.engine.loop.update`)
   on a batch already in memory, with the recipe's network and precision.

The pipeline keeps up when its images/s exceed the step's. The two are measured one
after the other, not together: on a machine with few cores, workers and the step would
compete for them.

By default the data is a tiny VOC layout at VOC's usual image size (500 x 375), written
to a temporary folder, and the network is made CPU-sized (timm ``test_resnet``);
``--root`` measures a real VOC folder and ``--paper-model`` keeps the recipe's ResNet-101
(for a GPU machine)::

    python benchmarks/data_pipeline.py                       # CPU, tiny data, ~1 minute
    python benchmarks/data_pipeline.py --root data/VOCdevkit/VOC2012 --paper-model \\
        --workers 0 4 8 16 --batches 40 --threads 0

Prints a table and writes ``benchmarks/results/data_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

import pctkit
from pctkit.components.contracts import SegmentationData
from pctkit.components.datasets.voc_layout import write_tiny_voc
from pctkit.engine.build import (
    build_component,
    build_data,
    build_net,
    build_optimizer,
    build_scheduler,
    resolve_device,
)
from pctkit.engine.data import Augment, IterationBatches, TrainingImages, micro_batches, to_tensors
from pctkit.engine.loop import TrainingJob, forward_backward, update
from pctkit.methods.base import Batch, Method, MethodInputs
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

STREAMS = ("strong", "weak")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="a real VOC2012 folder (default: a tiny one)")
    parser.add_argument("--images", type=int, default=40, help="images of the tiny layout")
    parser.add_argument("--samples", type=int, default=60, help="timed samples per stream (per-sample costs)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="worker counts")
    parser.add_argument("--batches", type=int, default=24, help="batches per worker count")
    parser.add_argument("--steps", type=int, default=2, help="timed train steps (after one warm-up); 0: none")
    parser.add_argument("--paper-model", action="store_true", help="keep the recipe's ResNet-101")
    parser.add_argument("--device", default="auto", help="device of the train step")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of this process (0: torch's default)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    return parser.parse_args()


def stream_parts(recipe: Recipe, data: SegmentationData) -> dict[str, tuple[Augment, list[int], int]]:
    """Each stream's augmentation, image pool and batch size, as cross training draws them."""
    settings = recipe.cross_training
    return {
        "strong": (
            build_component("augmentations", recipe.augmentation.strong),
            list(data.strong_indices),
            settings.strong_batch_size,
        ),
        "weak": (
            build_component("augmentations", recipe.augmentation.weak),
            list(range(len(data.train))),
            settings.weak_batch_size,
        ),
    }


def per_sample_costs(
    data: SegmentationData, augment: Augment, pool: list[int], stream: str, samples: int
) -> dict[str, float]:
    """Milliseconds per sample to decode, to make tensors, to augment (in this process),
    over ``samples`` draws of the stream (the engine's indices and augmentation seeds)."""
    draws = IterationBatches(pool, 1, 0, stream, 0, samples)
    decode = tensors = augmentation = 0.0
    for [(index, seed)] in draws:
        started = time.perf_counter()
        sample = data.train[index]
        decoded = time.perf_counter()
        image, mask = to_tensors(sample, sample.mask)
        converted = time.perf_counter()
        augment(image, mask, seed)
        augmentation += time.perf_counter() - converted
        tensors += converted - decoded
        decode += decoded - started
    scale = 1000 / samples
    return {
        "decode_ms": decode * scale,
        "to_tensors_ms": tensors * scale,
        "augment_ms": augmentation * scale,
        "total_ms": (decode + tensors + augmentation) * scale,
        "samples": samples,
    }


def engine_batches(
    data: SegmentationData,
    parts: dict[str, tuple[Augment, list[int], int]],
    batches: int,
    workers: int,
    pin: bool,
) -> Iterator[list[Batch]]:
    """Both streams' batches for ``batches`` iterations through the engine's loaders."""
    streams: list[tuple[Dataset[Any], IterationBatches]] = [
        (
            TrainingImages(data.train, data.num_classes, augment),
            IterationBatches(pool, batch_size, 0, stream, 0, batches),
        )
        for stream, (augment, pool, batch_size) in parts.items()
    ]
    return micro_batches(streams, 1, torch.device("cpu"), num_workers=workers, pin_memory=pin)


def measure_pipeline(
    data: SegmentationData,
    parts: dict[str, tuple[Augment, list[int], int]],
    workers: int,
    batches: int,
    pin: bool,
) -> dict[str, float]:
    """Images/s of the loaders with ``workers`` workers per stream, start-up included.

    The rate counts from the loaders' creation: once the first batch is out, workers
    have prefetched several more, so a rate started there would flatter them.
    """
    started = time.perf_counter()
    iterator = engine_batches(data, parts, batches, workers, pin)
    first_images = int(next(iterator)[0].images.shape[0])
    first_batch = time.perf_counter() - started
    later_images = sum(int(micro[0].images.shape[0]) for micro in iterator)
    seconds = time.perf_counter() - started
    return {
        "workers": workers,
        "images_per_second": (first_images + later_images) / seconds,
        "images_per_second_after_first_batch": later_images / max(seconds - first_batch, 1e-9),
        "first_batch_seconds": first_batch,
        "images": first_images + later_images,
    }


def measure_train_step(recipe: Recipe, batch: Batch, num_classes: int, steps: int) -> dict[str, Any]:
    """Images/s of the recipe's method (both nets, forward, backward, step) on one batch."""
    device = resolve_device(recipe.experiment.device)

    def new_net(role: str, init_like: str | None = None) -> torch.nn.Module:
        torch.manual_seed(0)
        net = build_net(recipe.model, num_classes).to(device)
        return net.to(memory_format=torch.channels_last) if recipe.experiment.channels_last else net

    inputs = MethodInputs(
        num_classes=num_classes,
        new_net=new_net,
        segmentation_loss=build_component("losses", recipe.loss.segmentation),
        classification_loss=build_component("losses", recipe.loss.classification),
        reduce_sum=lambda tensor: tensor,
    )
    method: Method = build_component("methods", recipe.method, inputs)
    loop = recipe.cross_training
    optimizers = {
        role: build_optimizer(
            recipe.net_optimizer(role), net, loop.classifier_lr_multiplier, loop.head_lr_multiplier
        )
        for role, net in method.nets.items()
    }
    job = TrainingJob(
        stage="cross_training",
        method=method,
        optimizers=optimizers,
        schedulers={
            role: build_scheduler(recipe.net_scheduler(role), optimizer, loop.iterations)
            for role, optimizer in optimizers.items()
        },
        batches=lambda start: iter([]),
        iterations=loop.iterations,
        device=device,
        precision=recipe.experiment.precision,
    )
    on_device = Batch(
        images=batch.images.to(device),
        masks=batch.masks.to(device),
        image_labels=batch.image_labels.to(device),
        has_mask=batch.has_mask.to(device),
        num_strong=batch.num_strong,
    )
    if recipe.experiment.channels_last:
        on_device.images = on_device.images.contiguous(memory_format=torch.channels_last)
    for net in method.nets.values():
        net.train()

    def step() -> None:
        forward_backward(job, [on_device])
        update(job, skip=False)

    step()  # warm-up: allocator, kernel selection
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
        "method": recipe.method.type,
        "backbone": recipe.model.backbone.parameters().get("model_name"),
        "seconds_per_step": seconds,
        "images_per_second": on_device.images.shape[0] / seconds,
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"\nper sample, in one process ({results['data']}):")
    print(f"{'stream':>8} {'augmentation':>16} {'decode':>9} {'tensors':>9} {'augment':>9} {'total':>9}")
    for stream, row in results["per_sample"].items():
        print(
            f"{stream:>8} {row['augmentation']:>16} {row['decode_ms']:>7.1f}ms "
            f"{row['to_tensors_ms']:>7.1f}ms {row['augment_ms']:>7.1f}ms {row['total_ms']:>7.1f}ms"
        )
    train = results.get("train_step")
    step = train["images_per_second"] if train else None
    print(
        f"\nVOC data pipeline vs train step ({results['batch_size']} images per iteration: "
        f"{' + '.join(str(size) for size in results['stream_batch_sizes'].values())})"
    )
    print(f"{'':>24} {'images/s':>10} {'vs step':>9} {'first batch':>12} {'then':>10}")
    for row in results["pipeline"]:
        ratio = f"{row['images_per_second'] / step:>8.2f}x" if step else f"{'':>9}"
        later = row["images_per_second_after_first_batch"]
        print(
            f"{'loader, ' + str(row['workers']) + ' worker(s)':>24} {row['images_per_second']:>10.1f} "
            f"{ratio} {row['first_batch_seconds']:>11.2f}s {later:>10.1f}"
        )
    print("(images/s from the loaders' creation, start-up included; 'then': after the first batch)")
    if train and step:
        print(
            f"{'train step (' + train['backbone'] + ')':>24} {step:>10.1f} {'1.00x':>9} "
            f"{'':>12}  {train['method']}, {train['device']}, {train['precision']}"
        )
        if results["pipeline"]:
            fastest = max(results["pipeline"], key=lambda row: row["images_per_second"])
            verdict = "keeps up with" if fastest["images_per_second"] >= step else "is SLOWER than"
            print(f"best loader ({fastest['workers']} workers) {verdict} the train step")
    print()


def main() -> None:
    arguments = parse_arguments()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    load_before = os.getloadavg()[0]
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
        parts = stream_parts(recipe, data)
        device = resolve_device(recipe.experiment.device)

        per_sample = {
            stream: {
                "augmentation": getattr(recipe.augmentation, stream).type,
                "crop_size": int(getattr(parts[stream][0], "crop_size", 0) or 0),
                **per_sample_costs(data, parts[stream][0], parts[stream][1], stream, arguments.samples),
            }
            for stream in STREAMS
        }
        pipeline = [
            measure_pipeline(data, parts, workers, arguments.batches, device.type == "cuda")
            for workers in arguments.workers
        ]
        train_step = None
        if arguments.steps:
            first = next(engine_batches(data, parts, 1, 0, False))[0]
            train_step = measure_train_step(recipe, first, data.num_classes, arguments.steps)

    sizes = {stream: parts[stream][2] for stream in STREAMS}
    results: dict[str, Any] = {
        "data": data_description,
        "batch_size": sum(sizes.values()),
        "stream_batch_sizes": sizes,
        "augmentation": {
            stream: getattr(recipe.augmentation, stream).model_dump(mode="json") for stream in STREAMS
        },
        "per_sample": per_sample,
        "pipeline": pipeline,
        "train_step": train_step,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "command_overrides": overrides + arguments.overrides,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print_table(results)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
