"""The measuring half of ``gpu_check.sh``: one phase per call, each writing one JSON record.

    python benchmarks/gpu_check.py environment --out FILE
    python benchmarks/gpu_check.py steps --arms voc_fp32,voc_bf16 --out FILE [--checkpoint ARM]
    python benchmarks/gpu_check.py ratios --out FILE
    python benchmarks/gpu_check.py inference --out FILE

Every phase takes ``--smoke``: the same code on the CPU with tiny networks (``test_resnet``
and ``test_vit`` in place of ResNet-101 and DINOv2, 64 px crops, 2 + 2 images), to check
the script where there is no GPU.

An **arm** is a built-in recipe with ``--set``-style overrides (precision, channels-last,
``torch.compile``, activation checkpointing), measured the way a run trains it: the
recipe's method built through the registry with :class:`~pctkit.methods.base.MethodInputs`,
nets made as ``RunContext.new_net`` makes them (seeded by role, channels-last, DDP,
``torch.compile``), the recipe's optimizers and schedules, the engine's loop
(:func:`pctkit.engine.loop.train`) with real hooks (``step_speed.EngineArm``), cuDNN
autotuning as ``pctkit run`` sets it. Backbones start from random weights: no weights
file is available offline, and the speed does not depend on them. Each arm trains one
warm-up block (cuDNN autotuning, the allocator, compilation), then ``--rounds`` timed
blocks of ``--block`` iterations on one generated batch; the time of an iteration is the
median over blocks. Peak memory is what ``progress.json`` records for a stage: device
memory allocated on CUDA (weights, gradients, optimizer state and activations), the
resident set on the CPU.

``ratios`` runs ``step_speed.py`` (pctkit PCT / hand-written PCT, PCT / supervised step)
on the recipe's network and numerics. ``inference`` times what a run does besides
training: pseudo labels and evaluation per image (the recipe's scales, flips and batch
sizes on VOC-sized generated images) and the dense CRF per image (on the CPU, where the
``crf`` extra is installed).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pctkit.engine.distributed import WorldInfo
    from pctkit.methods.base import Method
    from pctkit.recipe import Recipe

BENCHMARKS = Path(__file__).resolve().parent
VOC, DINOV2 = "voc_pct.toml", "voc_pct_dinov2.toml"


@dataclass(frozen=True)
class Arm:
    """One measured training step: a built-in recipe, overrides, the stage it trains."""

    recipe: str
    overrides: tuple[str, ...] = ()
    stage: str = "cross_training"
    """``"retraining"``: the ``Supervised`` method on the retraining batch, as stage 2b."""


ARMS: dict[str, Arm] = {
    "voc_fp32": Arm(VOC, ('experiment.precision="fp32"', "experiment.channels_last=false")),
    "voc_bf16": Arm(VOC, ("experiment.channels_last=false",)),
    "voc_bf16_cl": Arm(VOC),  # the recipe's own numerics: bf16 autocast, channels-last
    "voc_bf16_cl_compile": Arm(VOC, ("experiment.compile=true",)),
    "voc_retraining_bf16_cl": Arm(VOC, stage="retraining"),
    "dinov2_bf16_cl": Arm(DINOV2),
    "dinov2_bf16_cl_checkpointing": Arm(DINOV2, ("model.activation_checkpointing=true",)),
}

RANDOM_WEIGHTS = ('model.backbone.pretrained=""',)
_SMOKE_DATA = (
    *(f"augmentation.{stream}.crop_size=64" for stream in ("strong", "weak", "retrain")),
    *("cross_training.strong_batch_size=2", "cross_training.weak_batch_size=2", "retrain.batch_size=4"),
)
SMOKE_OVERRIDES: dict[str, tuple[str, ...]] = {
    VOC: (
        'model.backbone.model_name="test_resnet"',
        *("model.head.channels=16", "model.head.shortcut_channels=8"),
        *_SMOKE_DATA,
    ),
    DINOV2: (
        *('model.backbone.model_name="test_vit"', "model.backbone.out_indices=[1, 2, 4, 5]"),
        *("model.head.channels=16", "model.head.reassemble_channels=[8, 16, 32, 64]"),
        *_SMOKE_DATA,
    ),
}
"""Tiny stand-ins of each recipe's network and batch for ``--smoke``."""

VOC_IMAGE_SIZE = (375, 500)
"""Height and width of most PASCAL VOC images (landscape; portraits are 500 x 375)."""


def load(recipe: str, overrides: tuple[str, ...], smoke: bool) -> Recipe:
    """A built-in recipe with random backbone weights, the smoke sizes, and ``overrides``."""
    import pctkit
    from pctkit.recipe import load_recipe

    smoke_overrides = SMOKE_OVERRIDES[recipe] if smoke else ()
    path = Path(pctkit.__file__).parent / "recipes" / recipe
    return load_recipe(path, [*RANDOM_WEIGHTS, *smoke_overrides, *overrides])


def prepare(recipe: Recipe, device: torch.device) -> None:
    """Seed and set cuDNN's autotuning as ``pctkit run`` does for the recipe; on the CPU,
    keep freed memory as ``pctkit run`` does."""
    from pctkit.engine.memory import keep_freed_memory
    from pctkit.engine.run import seed_everything

    seed_everything(recipe.experiment.seed, recipe.experiment.deterministic)
    if device.type == "cpu":
        keep_freed_memory()


def new_net(
    recipe: Recipe,
    model: Any,
    role: str,
    num_classes: int,
    device: torch.device,
    world: WorldInfo,
    compile_backend: str | None,
) -> nn.Module:
    """A network made as ``RunContext.new_net`` makes it: initialised by seed and role,
    on the device, channels-last and DDP-wrapped as the recipe asks, compiled with
    ``compile_backend`` (``None``: not compiled)."""
    from pctkit.engine.build import fresh_net, prepare_net

    return prepare_net(
        fresh_net(model, num_classes, recipe.experiment.seed, role),
        device,
        channels_last=recipe.experiment.channels_last,
        distributed=world.distributed,
        sync_batchnorm=model.sync_batchnorm,
        compile_backend=compile_backend,
    )


# --------------------------------------------------------------------------- phases


def environment(options: argparse.Namespace) -> dict[str, Any]:
    """The machine and the software the numbers belong to."""
    import timm
    import torch

    import pctkit

    record: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "timm": timm.__version__,
        "pctkit": pctkit.__version__,
        "pctkit_path": str(Path(pctkit.__file__).parent),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "gpus": [],
        # pctkit sets none of these; fp32 convolutions may use TF32 where cuDNN allows it.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cpu_supports_bf16": _cpu_bf16(),
    }
    if torch.cuda.is_available() and not options.smoke:
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            record["gpus"].append(
                {
                    "name": properties.name,
                    "memory_gib": round(properties.total_memory / 2**30, 1),
                    "capability": f"{properties.major}.{properties.minor}",
                    "multiprocessors": properties.multi_processor_count,
                }
            )
        record["nccl"] = _nccl_version()
        record["nvidia_smi"] = _nvidia_smi()
    return record


def _nccl_version() -> str | None:
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception:  # built without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _cpu_bf16() -> bool:
    """Whether the CPU has native bf16 instructions (autocast works either way, slower)."""
    import torch

    check = getattr(torch.backends.mkldnn, "is_bf16_supported", None)
    return bool(check()) if callable(check) else False


def _nvidia_smi() -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def steps(options: argparse.Namespace) -> dict[str, Any]:
    """Iterations/s and peak memory of each arm, one after the other in this process
    (under ``torchrun``: every worker trains its own batch, the recipe's per GPU)."""
    import torch

    from pctkit.engine.distributed import init_distributed, shutdown

    device_type = "cuda" if torch.cuda.is_available() and not options.smoke else "cpu"
    world = init_distributed(device_type)
    device = torch.device("cuda", world.local_rank) if device_type == "cuda" else torch.device("cpu")
    record: dict[str, Any] = {"workers": world.world_size, "arms": {}}
    for name in options.arms.split(","):
        try:
            result = measure_arm(name, ARMS[name], options, device, world)
        except Exception as error:  # record and go on: one failing arm must not hide the rest
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        finally:
            _free_memory(device)
        record["arms"][name] = result
        if world.is_main:
            print(f"{name}: {_describe(result)}", flush=True)
            write_json(options.out, record)  # after every arm: a timeout keeps the ones done
    shutdown()
    return record


def _describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    return (
        f"{result['iterations_per_second']:.2f} it/s, {result['images_per_second']:.1f} images/s, "
        f"peak {result['peak_memory_gib']:.2f} GiB, warm-up {result['warmup_seconds']:.1f} s"
    )


def measure_arm(
    name: str, arm: Arm, options: argparse.Namespace, device: torch.device, world: WorldInfo
) -> dict[str, Any]:
    """One arm: a warm-up block, then ``options.rounds`` timed blocks."""
    import torch

    from pctkit.engine.memory import memory_kind, peak_memory_gib, reset_peak_memory

    recipe = load(arm.recipe, arm.overrides, options.smoke)
    prepare(recipe, device)
    setting, method = _setting_and_method(name, arm, recipe, options, device, world)
    loop = recipe.retrain if arm.stage == "retraining" else recipe.cross_training
    batch = step_speed().make_batch(setting, seed=world.rank)
    if arm.stage == "cross_training" and method.draws_weak_images:
        images = setting.strong + setting.weak
    else:  # every image with a mask: retraining, or a method that draws no weak images
        batch = step_speed().fully_labelled(batch, setting)
        images = setting.strong
    reset_peak_memory(device)
    with tempfile.TemporaryDirectory() as folder:
        engine_arm = step_speed().EngineArm(arm.stage, method, batch, setting, Path(folder), loop.iterations)
        _use_recipe_optimizers(engine_arm.job, recipe, arm.stage, loop.iterations)
        started = time.perf_counter()
        engine_arm.run_block()  # warm-up: cuDNN autotuning, the allocator, compilation
        warmup = time.perf_counter() - started
        seconds = [engine_arm.run_block().seconds_per_iteration for _ in range(options.rounds)]
        peak = peak_memory_gib(device)
        result: dict[str, Any] = {
            "recipe": arm.recipe,
            "overrides": list(arm.overrides),
            "stage": arm.stage,
            "method": recipe.method.type if arm.stage == "cross_training" else "supervised",
            "backbone": recipe.model.backbone.parameters().get("model_name"),
            "head": recipe.model.head.type,
            "size": setting.size,
            "images_per_worker": images,
            "batch_per_worker": [setting.strong, setting.weak]
            if images > setting.strong
            else [setting.strong],
            "precision": recipe.experiment.precision,
            "channels_last": recipe.experiment.channels_last,
            "compile": recipe.experiment.compile,
            "activation_checkpointing": recipe.model.activation_checkpointing,
            "workers": world.world_size,
            "seconds_per_iteration": statistics.median(seconds),
            "seconds_per_iteration_per_round": seconds,
            "iterations_per_second": 1.0 / statistics.median(seconds),
            "images_per_second": images * world.world_size / statistics.median(seconds),
            "warmup_seconds": warmup,
            "block": options.block,
            "peak_memory_gib": peak,
            "memory_kind": memory_kind(device),
        }
        if device.type == "cuda":
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
        if name in options.checkpoint.split(",") and world.is_main:
            result["checkpoint"] = time_checkpoint(engine_arm, Path(folder) / "checkpoint")
    return result


def _setting_and_method(
    name: str, arm: Arm, recipe: Recipe, options: argparse.Namespace, device: torch.device, world: WorldInfo
) -> tuple[Any, Method]:
    """The benchmark setting of ``step_speed`` for an arm, and its method with fresh nets."""
    from pctkit.engine.build import build_component
    from pctkit.engine.distributed import all_reduce_sum
    from pctkit.methods.base import MethodInputs
    from pctkit.methods.supervised import Supervised

    shape = step_speed().recipe_shape(recipe)
    retraining = arm.stage == "retraining"
    setting = step_speed().Setting(
        model=name,
        recipe=recipe,
        device=device,
        precision=recipe.experiment.precision,
        channels_last=recipe.experiment.channels_last,
        size=shape["size"],
        strong=recipe.retrain.batch_size if retraining else shape["strong"],
        weak=0 if retraining else shape["weak"],
        num_classes=shape["num_classes"],
        rounds=options.rounds,
        block=options.block,
        loader_iterations=0,
        loader_workers=(),
    )
    # torch.compile as the recipe asks; the smoke test traces with dynamo but compiles nothing.
    backend = ("eager" if options.smoke else "inductor") if recipe.experiment.compile else None

    def make(model: Any, role: str) -> nn.Module:
        return new_net(recipe, model, role, setting.num_classes, device, world, backend)

    if retraining:  # as the retraining stage builds its method
        net = make(recipe.retrain.model, "retrained")
        return setting, Supervised(net, "retrained", build_component("losses", recipe.retrain.loss))
    inputs = MethodInputs(
        num_classes=setting.num_classes,
        new_net=lambda role, init_like=None: make(recipe.model, init_like or role),
        segmentation_loss=build_component("losses", recipe.loss.segmentation),
        classification_loss=build_component("losses", recipe.loss.classification),
        reduce_sum=all_reduce_sum,
    )
    method: Method = build_component("methods", recipe.method, inputs)
    return setting, method


def _use_recipe_optimizers(job: Any, recipe: Recipe, stage: str, iterations: int) -> None:
    """The recipe's optimizers and schedules in place of step_speed's AdamW (their state is
    part of the peak memory: SGD with momentum keeps one buffer per weight, AdamW two)."""
    from pctkit.engine.build import build_optimizer, build_scheduler

    retraining = stage == "retraining"
    loop = recipe.retrain if retraining else recipe.cross_training
    for role, net in job.method.nets.items():
        spec = recipe.retrain.optimizer if retraining else recipe.net_optimizer(role)
        schedule = recipe.retrain.scheduler if retraining else recipe.net_scheduler(role)
        optimizer = build_optimizer(spec, net, loop.classifier_lr_multiplier, loop.head_lr_multiplier)
        job.optimizers[role] = optimizer
        job.schedulers[role] = build_scheduler(schedule, optimizer, iterations)


def time_checkpoint(engine_arm: Any, folder: Path) -> dict[str, Any]:
    """Seconds and size of one periodic checkpoint of the arm's job, written as the
    training stages write them (verified, atomic)."""
    from pctkit.artifacts import checkpoints
    from pctkit.engine.state import job_state

    started = time.perf_counter()
    state = job_state(engine_arm.job, engine_arm.done)
    checkpoints.write(folder, state, {"stage": engine_arm.job.stage, "iteration": engine_arm.done})
    seconds = time.perf_counter() - started
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return {"seconds": seconds, "gib": size / 2**30}


def ratios(options: argparse.Namespace) -> dict[str, Any]:
    """``step_speed.py``'s three arms on the recipe's network, precision and memory format,
    with cuDNN autotuning as a run of the recipe sets it."""
    import torch

    model = "quickstart" if options.smoke else "voc"
    recipe = step_speed().model_recipe(model)
    device = torch.device("cuda" if torch.cuda.is_available() and not options.smoke else "cpu")
    prepare(recipe, device)
    arguments = [
        *("--model", model, "--device", device.type, "--precision", recipe.experiment.precision),
        *(["--channels-last"] if recipe.experiment.channels_last else []),
        *("--rounds", str(options.rounds), "--block", str(options.block)),
        # One torch thread on a (shared) CPU, as step_speed.py's default; torch's choice on a GPU.
        *("--threads", "1" if device.type == "cpu" else "0"),
        *("--loader-workers", "--out", str(options.out)),  # no loaders: data_pipeline.py times them
    ]
    argv = sys.argv
    sys.argv = [str(BENCHMARKS / "step_speed.py"), *arguments]
    try:
        step_speed().main()  # writes options.out itself; exits 1 if the PCT steps disagree
    finally:
        sys.argv = argv
    return dict(json.loads(options.out.read_text()))


def inference(options: argparse.Namespace) -> dict[str, Any]:
    """Seconds per image of pseudo labelling and evaluation with the recipe's settings, and
    of the dense CRF; and the recipe's schedule that the full-run estimate multiplies."""
    import torch

    from pctkit.engine.distributed import WorldInfo

    recipe = load(VOC, (), options.smoke)
    device = torch.device("cuda" if torch.cuda.is_available() and not options.smoke else "cpu")
    prepare(recipe, device)
    num_classes = int(recipe.data.parameters().get("num_classes", 21))
    # The net that labels and is evaluated is the bare one: the stages unwrap DDP and compile.
    net = new_net(recipe, recipe.model, "hybrid", num_classes, device, WorldInfo(), None)
    size = (24, 32) if options.smoke else VOC_IMAGE_SIZE
    record: dict[str, Any] = {
        "image_size": list(size),
        "precision": recipe.experiment.precision,
        "schedule": _schedule(recipe),
    }
    record["pseudo_labels"] = _time_pseudo_labels(net, recipe, num_classes, size, device)
    record["evaluation"] = _time_evaluation(net, recipe, num_classes, size, device)
    record["postprocess"] = _time_postprocess(recipe, num_classes, size)
    return record


def _schedule(recipe: Recipe) -> dict[str, Any]:
    """What a full run of the recipe does, for the estimate."""
    data = recipe.data.parameters()
    return {
        "recipe": VOC,
        "cross_training": {
            "iterations": recipe.cross_training.iterations,
            "eval_interval": recipe.cross_training.eval_interval,
            "nets": 2 if recipe.method.type == "pct" else 1,
        },
        "retraining": {
            "iterations": recipe.retrain.iterations,
            "eval_interval": recipe.retrain.eval_interval,
            "batch_size": recipe.retrain.batch_size,
        },
        "checkpoint_interval": recipe.checkpoint.interval,
        "num_strong": int(data.get("num_strong", 0)),
        "postprocess": recipe.evaluation.postprocess.type if recipe.evaluation.postprocess else None,
        "postprocess_nets": list(recipe.evaluation.postprocess_nets),
        "loader_workers": recipe.loader.num_workers,
    }


def generated_samples(count: int, size: tuple[int, int], num_classes: int, seed: int) -> list[Any]:
    """Random images of one size, each with a mask and 1-3 foreground classes."""
    import numpy as np

    from pctkit.components.contracts import RawSample

    generator = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        present = sorted(generator.choice(np.arange(1, num_classes), 1 + index % 3, replace=False).tolist())
        mask = generator.choice(np.array([0, *present], dtype=np.uint8), size=size)
        image = generator.integers(0, 256, (*size, 3), dtype=np.uint8)
        samples.append(RawSample(image, mask, [0, *present], f"generated_{seed}_{index:04d}", mask))
    return samples


def _timed(device: torch.device, work: Callable[[], Any]) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _time_pseudo_labels(
    net: nn.Module, recipe: Recipe, num_classes: int, size: tuple[int, int], device: torch.device
) -> dict[str, Any]:
    """Per image, at the recipe's batch (images of one size share a batch) and at batch 1
    (a run's batches are smaller where consecutive images differ in size)."""
    settings = recipe.retrain.pseudo_labels
    return {
        "scales": list(settings.scales),
        "flip": settings.flip,
        "batch_size": settings.batch_size,
        "seconds_per_image": _label_seconds(
            net, recipe, num_classes, size, device, settings.batch_size, 2 * settings.batch_size
        ),
        "seconds_per_image_batch_1": _label_seconds(net, recipe, num_classes, size, device, 1, 3),
    }


def _label_seconds(
    net: nn.Module,
    recipe: Recipe,
    num_classes: int,
    size: tuple[int, int],
    device: torch.device,
    batch_size: int,
    count: int,
) -> float:
    """Seconds per image of ``generate_pseudo_labels`` (PNG files included) on ``count``
    images, after a warm-up batch (cuDNN autotunes each new input shape)."""
    from pctkit.engine.pseudo_labels import generate_pseudo_labels

    settings = recipe.retrain.pseudo_labels
    source = generated_samples(batch_size + count, size, num_classes, seed=batch_size)
    with tempfile.TemporaryDirectory() as folder:

        def label(indices: range, run: str) -> None:
            generate_pseudo_labels(
                net,
                source,
                list(indices),
                Path(folder) / run,
                num_classes,
                device,
                scales=settings.scales,
                flip=settings.flip,
                batch_size=batch_size,
                precision=recipe.experiment.precision,
            )

        label(range(batch_size), "warmup")
        return _timed(device, lambda: label(range(batch_size, batch_size + count), "timed")) / count


def _time_evaluation(
    net: nn.Module, recipe: Recipe, num_classes: int, size: tuple[int, int], device: torch.device
) -> dict[str, Any]:
    """Per image, as validation and the final evaluation predict (whole images, the
    recipe's batch, scales and flips), confusion matrices included."""
    from pctkit.engine.evaluation import evaluate

    settings = recipe.evaluation
    names = [f"class_{index}" for index in range(num_classes)]
    count = 4

    def run(source: list[Any]) -> None:
        evaluate(
            net,
            source,
            names,
            device,
            batch_size=settings.batch_size,
            scales=settings.scales,
            flip=settings.flip,
            precision=recipe.experiment.precision,
        )

    run(generated_samples(settings.batch_size, size, num_classes, seed=100))  # warm-up
    timed = generated_samples(count * settings.batch_size, size, num_classes, seed=101)
    seconds = _timed(device, lambda: run(timed))
    return {
        "scales": list(settings.scales),
        "flip": settings.flip,
        "batch_size": settings.batch_size,
        "seconds_per_image": seconds / len(timed),
    }


def _time_postprocess(recipe: Recipe, num_classes: int, size: tuple[int, int]) -> dict[str, Any]:
    """The post-processing (dense CRF) of one image's probabilities, on the CPU."""
    import torch

    from pctkit.engine.build import build_component
    from pctkit.engine.refine import refine

    spec = recipe.evaluation.postprocess
    if spec is None:
        return {"type": None}
    try:
        postprocess = build_component("postprocess", spec)
    except Exception as error:  # the crf extra is missing on this machine: say so
        return {"type": spec.type, "error": f"{type(error).__name__}: {error}"}
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, *size), dtype=torch.uint8, generator=generator)
    logits = torch.randn(4, num_classes, *size, generator=generator)
    refine(postprocess, images[0], logits[0])  # warm-up
    started = time.perf_counter()
    for image, image_logits in zip(images[1:], logits[1:], strict=True):
        refine(postprocess, image, image_logits)
    return {"type": spec.type, "seconds_per_image": (time.perf_counter() - started) / (len(images) - 1)}


# --------------------------------------------------------------------------- helpers


_STEP_SPEED: Any = None


def step_speed() -> Any:
    """``benchmarks/step_speed.py`` (its batch, setting, engine arm and main), imported
    on first use: it imports torch."""
    global _STEP_SPEED
    if _STEP_SPEED is None:
        sys.path.insert(0, str(BENCHMARKS))
        import step_speed as module

        _STEP_SPEED = module
    return _STEP_SPEED


def _free_memory(device: torch.device) -> None:
    """Drop what one arm left (nets, compiled graphs, cached blocks) before the next."""
    import torch

    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (a killed phase leaves the last whole one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


PHASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "environment": environment,
    "steps": steps,
    "ratios": ratios,
    "inference": inference,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("--out", type=Path, required=True, help="the phase's JSON record")
    parser.add_argument("--smoke", action="store_true", help="tiny networks on the CPU")
    parser.add_argument("--arms", default="voc_bf16_cl", help=f"steps: comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--checkpoint", default="", help="steps: arms whose checkpoint write is timed")
    parser.add_argument("--rounds", type=int, default=3, help="timed blocks per arm")
    parser.add_argument("--block", type=int, default=6, help="iterations per block (>= 2)")
    options = parser.parse_args()
    unknown = [name for name in options.arms.split(",") if name not in ARMS]
    if options.phase == "steps" and unknown:
        parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    if options.block < 2:
        parser.error("--block must be at least 2 (the first iteration of a block is not timed)")
    if options.smoke:
        import torch

        torch.set_num_threads(1)  # tiny tensors on a shared CPU: one thread is fastest
    started = time.perf_counter()
    record = PHASES[options.phase](options)
    record["seconds"] = time.perf_counter() - started
    # step_speed.py wrote the ratios' record; under torchrun, the first worker writes.
    if options.phase != "ratios" and os.environ.get("RANK", "0") == "0":
        write_json(options.out, record)
    failed = [name for name, arm in record.get("arms", {}).items() if "error" in arm]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
