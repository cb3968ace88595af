"""Pretrain a backbone on digit scenes of the digits a benchmark does not use.

From scratch, a network on digit scenes predicts only background for hundreds of
iterations, and per-class IoU stays far below the 0.8-0.9 where the method's weight
w = (min J)^8 gives weak images real weight. A real PCT setup starts from an ImageNet
backbone; this script makes the digit-scene equivalent: it trains the recipe's timm
model (``test_resnet`` by default) as a multi-label image classifier ("which digits does
this scene show?") on scenes of other digits than the segmentation benchmark uses (it
uses 0, 1, 4 and 7, so the default here is 2, 3, 5, 6, 8 and 9). No pixel label and no
image of a benchmark class is seen.

Every batch is a set of fresh scenes (``digit_scenes`` generates them on demand);
accuracy is measured on held-out scenes whose handwritten digits no training scene
uses. The weights are written as safetensors without the classifier, for
``model.backbone.pretrained``: pctkit's timm backbone checks the file's tensor names
and shapes against the model and passes it to timm, which loads every backbone tensor
by name (non-strictly: it would drop a classifier whose class count differs). The
script then checks that every tensor of the backbone pctkit builds from the file
equals the trained one. A JSON file beside the weights records the settings, the
held-out accuracy, the time and that check.

    python benchmarks/pretrain_backbone.py                     # ~2 minutes on one CPU thread
    python benchmarks/pretrain_backbone.py --stroke-dilation 1 --min-digit-size 14 \\
        --max-digit-size 22 --out runs/pretrained/bold.safetensors
    pctkit run recipes/quickstart.toml --set model.backbone.pretrained=runs/pretrained/bold.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit import registry
from pctkit.components.contracts import SampleSource, SegmentationData
from pctkit.components.datasets.digit_scenes import digit_scenes

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Everything that decides the weights (and the time they take)."""

    model: str
    digits: tuple[int, ...]
    canvas_size: int
    stroke_dilation: int
    min_digit_size: int
    max_digit_size: int
    max_digits: int
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    val_scenes: int
    seed: int
    threads: int

    def default_out(self) -> Path:
        """``runs/pretrained/<model>-digits<...>-<canvas>px-...safetensors``."""
        digits = "".join(str(digit) for digit in self.digits)
        name = (
            f"{self.model}-digits{digits}-{self.canvas_size}px-size{self.min_digit_size}-"
            f"{self.max_digit_size}-dilation{self.stroke_dilation}-seed{self.seed}.safetensors"
        )
        return ROOT / "runs" / "pretrained" / name


# --------------------------------------------------------------------------- data


def scene_data(settings: Settings) -> SegmentationData:
    """Training scenes (one fresh scene per image of every batch) and held-out scenes."""
    return digit_scenes(
        num_strong=settings.iterations * settings.batch_size,
        num_weak=0,
        num_val=settings.val_scenes,
        canvas_size=settings.canvas_size,
        min_digits=1,
        max_digits=settings.max_digits,
        min_digit_size=settings.min_digit_size,
        max_digit_size=settings.max_digit_size,
        stroke_dilation=settings.stroke_dilation,
        digit_classes=settings.digits,
        seed=settings.seed,
    )


def scene_batch(
    source: SampleSource, indices: Sequence[int], num_digits: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Images ``(N, H, W, 3)`` and multi-label targets ``(N, num_digits)``.

    A scene's targets are the digit classes its mask shows (a digit painted over
    entirely by a later one is absent), so they are exact.
    """
    samples = [source[index] for index in indices]
    images = np.stack([sample.image for sample in samples])
    targets = np.zeros((len(samples), num_digits), dtype=np.float32)
    for row, sample in enumerate(samples):
        present = [label - 1 for label in sample.image_labels if label > 0]
        targets[row, present] = 1.0
    return images, targets


class Normalise(nn.Module):
    """``uint8`` images ``(N, H, W, 3)`` to the model's normalised float input, as pctkit's
    segmentation net normalises them (the backbone's mean and std)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))

    def forward(self, images: npt.NDArray[np.uint8]) -> Tensor:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        mean: Tensor = self.mean  # type: ignore[assignment]
        std: Tensor = self.std  # type: ignore[assignment]
        return (batch - mean) / std


# --------------------------------------------------------------------------- training


def pretrained_config(model: nn.Module) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a model (mean, std, classifier name)."""
    config: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    return config


def poly_factor(iteration: int, total: int) -> float:
    """Learning-rate factor of pctkit's ``poly`` schedule (power 0.9)."""
    return float((1.0 - iteration / total) ** 0.9)


@torch.no_grad()
def evaluate(
    model: nn.Module, normalise: Normalise, source: SampleSource, settings: Settings
) -> dict[str, Any]:
    """Multi-label scores on ``source``: a digit is predicted present where its logit > 0.

    ``exact_match``: share of scenes whose predicted set is exactly right;
    ``label_accuracy``: share of (scene, digit) decisions that are right;
    ``micro_f1`` over all decisions, and F1 per digit.
    """
    model.eval()
    predicted, expected = [], []
    for start in range(0, len(source), 250):
        indices = range(start, min(start + 250, len(source)))
        images, targets = scene_batch(source, indices, len(settings.digits))
        predicted.append((model(normalise(images)) > 0).numpy())
        expected.append(targets > 0.5)
    model.train()
    hits, truth = np.concatenate(predicted), np.concatenate(expected)
    true_positive = (hits & truth).sum(axis=0)
    false_positive = (hits & ~truth).sum(axis=0)
    false_negative = (~hits & truth).sum(axis=0)
    per_digit = 2 * true_positive / np.maximum(2 * true_positive + false_positive + false_negative, 1)
    decisions = 2 * true_positive.sum() + false_positive.sum() + false_negative.sum()
    micro = 2 * true_positive.sum() / max(decisions, 1)
    return {
        "scenes": len(source),
        "exact_match": float((hits == truth).all(axis=1).mean()),
        "label_accuracy": float((hits == truth).mean()),
        "micro_f1": float(micro),
        "f1_per_digit": {str(digit): float(f1) for digit, f1 in zip(settings.digits, per_digit, strict=True)},
    }


def train(settings: Settings, log_interval: int) -> tuple[nn.Module, dict[str, Any], float]:
    """The trained classifier, its held-out scores and the training time in seconds."""
    data = scene_data(settings)
    torch.manual_seed(settings.seed)
    model = timm.create_model(settings.model, num_classes=len(settings.digits))
    config = pretrained_config(model)
    normalise = Normalise(config.get("mean", (0.485, 0.456, 0.406)), config.get("std", (0.229, 0.224, 0.225)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_factor(iteration, settings.iterations)
    )
    model.train()
    started = time.perf_counter()
    running_loss, running_exact, counted = 0.0, 0.0, 0
    for iteration in range(1, settings.iterations + 1):
        first = (iteration - 1) * settings.batch_size
        images, targets = scene_batch(
            data.train, range(first, first + settings.batch_size), len(settings.digits)
        )
        logits = model(normalise(images))
        target_tensor = torch.from_numpy(targets)
        # Mean binary cross entropy over digits: the multi-label soft-margin loss.
        loss = F.binary_cross_entropy_with_logits(logits, target_tensor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise SystemExit(f"the loss is {loss.item()} at iteration {iteration}: lower --lr")
        running_loss += loss.item()
        running_exact += float(((logits.detach() > 0) == (target_tensor > 0.5)).all(dim=1).float().mean())
        counted += 1
        if iteration % log_interval == 0 or iteration == settings.iterations:
            print(
                f"iteration {iteration:5d}/{settings.iterations}  loss {running_loss / counted:.4f}  "
                f"exact match (training batches) {running_exact / counted:.3f}  "
                f"lr {schedule.get_last_lr()[0]:.2e}  {time.perf_counter() - started:5.0f} s",
                flush=True,
            )
            running_loss, running_exact, counted = 0.0, 0.0, 0
    seconds = time.perf_counter() - started
    scores = evaluate(model, normalise, data.val, settings)
    return model, scores, seconds


# --------------------------------------------------------------------------- weights


def backbone_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's tensors without its classifier (timm's ``pretrained_cfg["classifier"]``).

    A digit classifier is of no use to a segmentation head, and a file without it loads
    into the model whatever its number of classes.
    """
    names = pretrained_config(model).get("classifier") or ()
    prefixes = tuple(f"{name}." for name in ((names,) if isinstance(names, str) else names))
    return {
        key: value.detach().clone().contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith(prefixes)
    }


def check_loading(path: Path, settings: Settings, state: dict[str, Tensor]) -> dict[str, Any]:
    """Build pctkit's ``timm`` backbone with ``pretrained = path`` and every feature level,
    and compare each of its tensors with the saved one.

    Raises:
        SystemExit: a backbone tensor is missing from the file or differs from it.
    """
    probe = timm.create_model(settings.model, features_only=True)
    feature_info: Any = probe.feature_info
    levels = tuple(range(len(feature_info)))
    backbone = registry.get("backbones", "timm").build(
        model_name=settings.model, pretrained=str(path), out_indices=levels
    )
    loaded = backbone.body.state_dict()
    missing = sorted(set(loaded) - set(state))
    different = sorted(key for key in set(loaded) & set(state) if not torch.equal(loaded[key], state[key]))
    if missing or different:
        raise SystemExit(
            f"{path} does not load into pctkit's {settings.model} backbone: "
            f"{len(missing)} tensors missing ({missing[:3]}), {len(different)} differ ({different[:3]})"
        )
    return {
        "out_indices": list(levels),
        "backbone_tensors_equal": len(loaded),
        "file_tensors_unused_by_backbone": sorted(set(state) - set(loaded)),
    }


def write_weights(path: Path, state: dict[str, Tensor], settings: Settings) -> None:
    """The safetensors file, with the settings in its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"pctkit_pretrain_backbone": json.dumps(asdict(settings))}
    safetensors.torch.save_file(state, str(path), metadata=metadata)


# --------------------------------------------------------------------------- main


def parse_settings(argv: Sequence[str] | None = None) -> tuple[Settings, Path, int]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="test_resnet", help="timm model name (default test_resnet)")
    parser.add_argument(
        "--digits",
        type=int,
        nargs="+",
        default=[2, 3, 5, 6, 8, 9],
        help="digits of the pretraining scenes (default 2 3 5 6 8 9: those the quality benchmark "
        "does not use)",
    )
    parser.add_argument("--canvas-size", type=int, default=32, help="scene side in pixels (default 32)")
    parser.add_argument(
        "--stroke-dilation", type=int, default=1, help="digit_scenes' stroke_dilation (default 1)"
    )
    parser.add_argument("--min-digit-size", type=int, default=14, help="smallest digit side (default 14)")
    parser.add_argument("--max-digit-size", type=int, default=22, help="largest digit side (default 22)")
    parser.add_argument("--max-digits", type=int, default=2, help="most digits per scene (default 2)")
    parser.add_argument("--iterations", type=int, default=2000, help="training iterations (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="fresh scenes per iteration (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate, poly (default 3e-3)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--val-scenes", type=int, default=1000, help="held-out scenes scored (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes and the initialisation")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine one thread runs faster than two that wait "
        "for each other; 0: torch's default)",
    )
    parser.add_argument("--log-interval", type=int, default=200, help="iterations between progress lines")
    parser.add_argument(
        "--out",
        type=Path,
        help="the .safetensors file to write (default runs/pretrained/<model>-digits...safetensors); "
        "the JSON report goes beside it",
    )
    arguments = parser.parse_args(argv)
    settings = Settings(
        model=arguments.model,
        digits=tuple(arguments.digits),
        canvas_size=arguments.canvas_size,
        stroke_dilation=arguments.stroke_dilation,
        min_digit_size=arguments.min_digit_size,
        max_digit_size=arguments.max_digit_size,
        max_digits=arguments.max_digits,
        iterations=arguments.iterations,
        batch_size=arguments.batch_size,
        lr=arguments.lr,
        weight_decay=arguments.weight_decay,
        val_scenes=arguments.val_scenes,
        seed=arguments.seed,
        threads=arguments.threads,
    )
    problems = []
    if settings.model not in timm.list_models():
        close = timm.list_models(f"*{settings.model}*")[:5]
        problems.append(
            f"--model: unknown timm model {settings.model!r}" + (f" (close names: {close})" if close else "")
        )
    for name, value in (("--iterations", settings.iterations), ("--batch-size", settings.batch_size)):
        if value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    if settings.val_scenes < 1:
        problems.append(f"--val-scenes must be at least 1, got {settings.val_scenes}")
    out = arguments.out or settings.default_out()
    if out.suffix != ".safetensors":
        problems.append(f"--out must end in .safetensors (pctkit loads only those), got {out.name}")
    if problems:
        parser.error("; ".join(problems))
    return settings, out, max(arguments.log_interval, 1)


def main(argv: Sequence[str] | None = None) -> None:
    settings, out, log_interval = parse_settings(argv)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        scene_data(Settings(**{**asdict(settings), "iterations": 1, "batch_size": 1, "val_scenes": 1}))
    except ValueError as error:  # digit_scenes lists every bad scene setting at once
        raise SystemExit(str(error)) from None
    print(
        f"pretraining {settings.model} on {settings.canvas_size} px scenes of digits "
        f"{', '.join(map(str, settings.digits))} (1-{settings.max_digits} per scene, "
        f"{settings.min_digit_size}-{settings.max_digit_size} px, "
        f"stroke dilation {settings.stroke_dilation}): "
        f"{settings.iterations} iterations of {settings.batch_size} fresh scenes, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    model, scores, seconds = train(settings, log_interval)
    state = backbone_state(model)
    write_weights(out, state, settings)
    loading = check_loading(out, settings, state)
    size = out.stat().st_size
    report = {
        "settings": asdict(settings),
        "held_out": scores,
        "training_seconds": round(seconds, 1),
        "weights": {
            "file": str(out),
            "bytes": size,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "tensors": len(state),
            "parameters": sum(value.numel() for value in state.values()),
        },
        "loads_in_pctkit": loading,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    per_digit = ", ".join(f"{digit} {f1:.3f}" for digit, f1 in scores["f1_per_digit"].items())
    print(
        f"held-out scenes ({scores['scenes']}): exact match {scores['exact_match']:.3f}, "
        f"label accuracy {scores['label_accuracy']:.3f}, micro F1 {scores['micro_f1']:.3f} "
        f"(F1 per digit: {per_digit})\n"
        f"trained in {seconds:.0f} s; wrote {out} ({size:,} bytes; {loading['backbone_tensors_equal']} "
        f"backbone tensors load unchanged in pctkit) and {out.with_suffix('.json').name}",
        flush=True,
    )


if __name__ == "__main__":
    main()
