"""Does progressive cross training work? Every arm of the method's argument, on
``digit_scenes``, over several seeds.

Arms (each a pctkit run; for a given seed every arm starts from the same weights, as
the engine seeds each net's initialisation by (seed, role) and the supervised net
starts as the hybrid net does, and the stage-1 arms draw the same batches):

- **supervised**: one net, plain cross entropy on the strong scenes' masks;
- **hybrid**: the hybrid net alone, strong CCE + classification loss on strong and weak;
- **pct**: the method as the released code runs it (``[method] type = "pct"`` with
  its defaults: ``weight_rule = "released"``, ``p2h_mean = "all_weak_pixels"``; the
  pseudo net's learning rate constant through ``[nets.pseudo.scheduler]``), then its
  stage 2 (pseudo labels, a fresh net retrained on them);
- **pct_strict**: the same with ``weight_rule = "strict"`` (a present class that the
  pseudo net has never hit gives its image w = 0);
- **pct_decaying**: the same with the pseudo net's rate on the shared poly schedule
  (no ``[nets]`` override), as pctkit 0.1 trained it;
- **pct_power2**: the score power 2 instead of 8, so that w = (min J)^γ rises earlier;
- **fully_supervised**: every training scene with its mask (``num_strong`` = all,
  ``num_weak`` = 0; ``digit_scenes`` keeps every scene identical), the upper bound.

The pseudo-to-hybrid term's own effect: in PCT the hybrid net's gradient comes from
the strong CCE, the classification loss and P2H (the H2P term's targets are detached
hybrid predictions, so its gradient reaches only the pseudo net). With the same
initial weights and batches the hybrid arm is exactly PCT's hybrid net without P2H,
so "PCT, hybrid net" minus "hybrid", seed by seed, is what P2H adds.

Modes:

- ``default``: 32 px scenes of 1-2 digits (0, 1, 4, 7), thin strokes, ``test_resnet``
  from scratch with features at strides 4 and 16: the benchmark of pctkit 0.1, now with
  the released rules (about 40 minutes on 2 shared CPU cores);
- ``pretrained``: the regime ``results/digit_regime.md`` recommends, where the
  method's own mechanism engages: strokes dilated by one pixel, features at strides 2
  and 16 (``out_indices = [0, 3]``) and the backbone pctkit ships pretrained on scenes
  of the six other digits (about an hour);
- ``full``: 48 px scenes with six digit classes and a longer schedule (hours).

``--smoke`` runs a mode's arms at a tiny size (a minute): it checks the script.

Each run lives in ``runs/quality/<mode>/<arm>-seed<k>`` (checkpointed; ``runs/`` is
not committed). A finished run (``results.json``) is skipped, an interrupted one
resumed, so the script can be restarted at any time. After each run the summary is
rewritten: ``benchmarks/results/quality[_<mode>].json`` and ``.md``, progress and
times in ``.log``.

    python benchmarks/quality.py                                   # default mode
    nohup python benchmarks/quality.py --mode pretrained > /dev/null 2>&1 &
    python benchmarks/quality.py --mode pretrained --smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pctkit.artifacts.run_dir import RunDirectory
from pctkit.components.contracts import package_file
from pctkit.engine.errors import RunError
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import run
from pctkit.recipe import Recipe, RecipeIssue, validate_recipe_data
from pctkit.version import __version__

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "quality"
PRETRAINED = "pctkit:weights/test_resnet_digits_235689.safetensors"
ENGAGED_W = 0.01
"""The mean weight of the weak images above which P2H counts as engaged."""


# --------------------------------------------------------------------------- arms


@dataclass(frozen=True)
class Arm:
    """One way to train stage 1 (and whether stage 2 follows)."""

    label: str
    method: str  # "supervised", "hybrid" or "pct"
    parameters: dict[str, Any] = field(default_factory=dict)
    pseudo_scheduler: str | None = None  # the pseudo net's own schedule ([nets.pseudo.scheduler])
    retrain: bool = False
    fully_supervised: bool = False

    @property
    def nets(self) -> tuple[str, ...]:
        """The nets ``results.json`` scores."""
        if self.method == "supervised":
            return ("supervised",)
        if self.method == "hybrid":
            return ("hybrid",)
        return ("hybrid", "pseudo", "retrained") if self.retrain else ("hybrid", "pseudo")


RELEASED = {"weight_rule": "released", "p2h_mean": "all_weak_pixels"}

ARMS: dict[str, Arm] = {
    "supervised": Arm("supervised-only", "supervised"),
    "hybrid": Arm("hybrid (image labels)", "hybrid"),
    "pct": Arm("PCT", "pct", RELEASED, pseudo_scheduler="constant", retrain=True),
    "pct_strict": Arm("PCT strict w", "pct", {**RELEASED, "weight_rule": "strict"}, "constant"),
    "pct_decaying": Arm("PCT decaying pseudo LR", "pct", RELEASED),
    "pct_power2": Arm("PCT γ = 2", "pct", {**RELEASED, "score_power": 2.0}, "constant"),
    "fully_supervised": Arm("fully supervised", "supervised", fully_supervised=True),
}

NET_LABELS = {"hybrid": "hybrid net", "pseudo": "pseudo net", "retrained": "+ retraining"}


def row_label(arm: str, net: str) -> str:
    """``"PCT, hybrid net"``, ``"PCT + retraining"``, ``"supervised-only"``."""
    spec = ARMS[arm]
    if spec.method != "pct":
        return spec.label
    return f"{spec.label} {NET_LABELS[net]}" if net == "retrained" else f"{spec.label}, {NET_LABELS[net]}"


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Schedule:
    """The scenes, the network and the training budget of one mode."""

    canvas_size: int
    min_digit_size: int
    max_digit_size: int
    max_digits: int
    stroke_dilation: int
    digit_classes: tuple[int, ...]
    num_strong: int
    num_weak: int
    num_val: int
    out_indices: tuple[int, ...]
    pretrained: str | None
    iterations: int
    retrain_iterations: int
    batch: int  # images per iteration of every arm: strong + weak, or all strong
    lr: float
    seeds: tuple[int, ...]
    arms: tuple[str, ...]
    log_interval: int = 50
    checkpoint_interval: int = 200


SCHEDULES: dict[str, Schedule] = {
    # pctkit 0.1's benchmark: thin strokes, stride-4 features, from scratch. Per-class
    # IoU stays near 0.6 even fully supervised, so (min J)^8 stays small.
    "default": Schedule(
        canvas_size=32,
        min_digit_size=12,
        max_digit_size=18,
        max_digits=2,
        stroke_dilation=0,
        digit_classes=(0, 1, 4, 7),
        num_strong=120,
        num_weak=1080,
        num_val=300,
        out_indices=(1, 3),
        pretrained=None,
        iterations=1800,
        retrain_iterations=1800,
        batch=16,
        lr=3e-3,
        seeds=(0, 1, 2),
        arms=("supervised", "hybrid", "pct", "pct_power2", "fully_supervised"),
    ),
    # digit_regime.md's recommendation: digit J reaches 0.86-0.88, so P2H engages.
    "pretrained": Schedule(
        canvas_size=32,
        min_digit_size=12,
        max_digit_size=18,
        max_digits=2,
        stroke_dilation=1,
        digit_classes=(0, 1, 4, 7),
        num_strong=120,
        num_weak=1080,
        num_val=300,
        out_indices=(0, 3),
        pretrained=PRETRAINED,
        iterations=1800,
        retrain_iterations=1800,
        batch=16,
        lr=3e-3,
        seeds=(0, 1, 2),
        arms=("supervised", "hybrid", "pct", "pct_strict", "pct_decaying", "fully_supervised"),
    ),
    # Hours: 48 px scenes with six digit classes and a longer schedule.
    "full": Schedule(
        canvas_size=48,
        min_digit_size=14,
        max_digit_size=26,
        max_digits=3,
        stroke_dilation=0,
        digit_classes=(0, 1, 2, 3, 4, 7),
        num_strong=200,
        num_weak=1800,
        num_val=400,
        out_indices=(1, 3),
        pretrained=None,
        iterations=6000,
        retrain_iterations=4000,
        batch=16,
        lr=2e-3,
        seeds=(0, 1, 2),
        arms=("supervised", "hybrid", "pct", "pct_power2", "fully_supervised"),
        log_interval=100,
        checkpoint_interval=250,
    ),
}

RESULT_NAMES = {"default": "quality", "pretrained": "quality_pretrained", "full": "quality_full"}


def smoke(schedule: Schedule) -> Schedule:
    """The same arms and network on a handful of scenes for a few iterations."""
    return replace(
        schedule,
        num_strong=8,
        num_weak=24,
        num_val=8,
        iterations=4,
        retrain_iterations=2,
        batch=8,
        seeds=(0, 1),
        log_interval=2,
        checkpoint_interval=2,
    )


# --------------------------------------------------------------------------- recipes


def recipe_for(arm_name: str, seed: int, schedule: Schedule, threads: int) -> Recipe:
    """The recipe of one arm and seed (in today's spelling: an old one is refused)."""
    arm = ARMS[arm_name]
    half = schedule.batch // 2
    supervised = arm.method == "supervised"
    num_strong = schedule.num_strong + (schedule.num_weak if arm.fully_supervised else 0)
    backbone: dict[str, Any] = {
        "type": "timm",
        "model_name": "test_resnet",
        "out_indices": list(schedule.out_indices),
    }
    if schedule.pretrained:
        backbone["pretrained"] = schedule.pretrained
    # No flips: a mirrored digit is another shape. No rescale or crop: whole scenes.
    no_flip = {"type": "scale_crop_flip", "horizontal_flip": False}
    raw: dict[str, Any] = {
        "experiment": {"name": f"{arm_name}-seed{seed}", "seed": seed, "device": "cpu", "threads": threads},
        "method": {"type": arm.method, **arm.parameters},
        "data": {
            "type": "digit_scenes",
            "num_strong": num_strong,
            "num_weak": 0 if arm.fully_supervised else schedule.num_weak,
            "num_val": schedule.num_val,
            "canvas_size": schedule.canvas_size,
            "min_digit_size": schedule.min_digit_size,
            "max_digit_size": schedule.max_digit_size,
            "max_digits": schedule.max_digits,
            "stroke_dilation": schedule.stroke_dilation,
            "digit_classes": list(schedule.digit_classes),
            "seed": 0,  # the same scenes for every seed: seeds vary training only
        },
        "augmentation": {stream: dict(no_flip) for stream in ("strong", "weak", "retrain")},
        "model": {"backbone": backbone, "head": {"type": "fusion", "channels": 64}},
        "cross_training": {
            "iterations": schedule.iterations,
            # Every arm sees the same number of images per iteration.
            "strong_batch_size": schedule.batch if supervised else half,
            "weak_batch_size": 0 if supervised else half,
            "classifier_lr_multiplier": 1.0,
            "log_interval": schedule.log_interval,
        },
        "optimizer": {"type": "adamw", "lr": schedule.lr, "weight_decay": 1e-4},
        "scheduler": {"type": "poly", "power": 0.9},
        "retrain": {
            "enabled": arm.retrain,
            "iterations": schedule.retrain_iterations,
            "batch_size": schedule.batch,
            "classifier_lr_multiplier": 1.0,
            "log_interval": schedule.log_interval,
            "pseudo_labels": {"scales": [0.75, 1.0, 1.25], "flip": False},
        },
        "evaluation": {"batch_size": 100, "num_pictures": 0},
        "checkpoint": {"interval": schedule.checkpoint_interval, "keep_last": 1},
    }
    if arm.pseudo_scheduler:
        raw["nets"] = {"pseudo": {"scheduler": {"type": arm.pseudo_scheduler}}}
    notes: list[RecipeIssue] = []
    recipe = validate_recipe_data(raw, notes=notes)
    if notes:
        raise SystemExit("quality.py writes an old recipe spelling:\n" + "\n".join(map(str, notes)))
    return recipe


# --------------------------------------------------------------------------- running


@dataclass
class Journal:
    """Messages to the console and to the log file."""

    log_file: Path

    def __call__(self, text: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as handle:
            handle.write(line + "\n")


def run_arm(arm: str, seed: int, schedule: Schedule, threads: int, runs: Path, journal: Journal) -> bool:
    """Train one arm and seed, or resume it; ``False`` if it had finished."""
    run_dir = runs / f"{arm}-seed{seed}"
    if (run_dir / RunDirectory.RESULTS).is_file():
        return False
    recipe = recipe_for(arm, seed, schedule, threads)
    resume = RunDirectory(run_dir).holds_run()
    journal(f"{'resuming' if resume else 'starting'} {arm} seed {seed}")
    started = time.perf_counter()
    try:
        outcome = run(recipe, run_dir, resume=resume, overwrite=True, reporter=Reporter(enabled=False))
    except RunError as error:
        raise SystemExit(f"{arm} seed {seed}: {error}\nDelete {run_dir} to start that run again.") from None
    scores = ", ".join(
        f"{role} {summary['miou']:.3f} ({summary['miou_with_labels']:.3f} with labels)"
        for role, summary in outcome.results["nets"].items()
    )
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in outcome.results["seconds"].items())
    journal(f"finished {arm} seed {seed} in {time.perf_counter() - started:.0f} s ({stages}): {scores}")
    return True


# --------------------------------------------------------------------------- summary


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the values."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def paired(values: dict[int, float]) -> dict[str, Any]:
    """Per-seed differences: mean, std, their ratio (how many std the mean is)."""
    summary = spread(list(values.values()))
    summary["seeds"] = list(values)
    summary["std_ratio"] = summary["mean"] / summary["std"] if summary["std"] > 0 else None
    return summary


def read_results(runs: Path, arm: str, seed: int) -> dict[str, Any] | None:
    """``results.json`` of a finished run."""
    return RunDirectory(runs / f"{arm}-seed{seed}").read_results()


def dynamics(run_dir: Path, class_names: list[str]) -> dict[str, Any]:
    """J per class, mean w and each net's learning rate over cross training."""
    records = sorted(
        (
            record
            for record in RunDirectory(run_dir).read_records()
            if record["kind"] == "train" and record.get("stage") == "cross_training"
        ),
        key=lambda record: record["iteration"],
    )
    iterations = [record["iteration"] for record in records]
    mean_w = [record["terms"].get("mean_w", 0.0) for record in records]
    scores = [record.get("method", {}).get("J", [0.0] * len(class_names)) for record in records]
    first = next((it for it, w in zip(iterations, mean_w, strict=True) if w > ENGAGED_W), None)
    # The released rule gives w = J_background^γ while no digit has been hit, so w can
    # start high, collapse at the first hits and rise again: "sustained" is where it
    # last crossed ENGAGED_W and stayed above.
    below = [it for it, w in zip(iterations, mean_w, strict=True) if w <= ENGAGED_W]
    sustained = (
        None
        if mean_w and mean_w[-1] <= ENGAGED_W
        else next((it for it in iterations if not below or it > below[-1]), None)
    )
    return {
        "iterations": iterations,
        "mean_w": mean_w,
        "J": {name: [row[index] for row in scores] for index, name in enumerate(class_names)},
        "lr": {role: [record["lr"].get(role) for record in records] for role in records[-1]["lr"]}
        if records
        else {},
        "first_iteration_mean_w_above_0.01": first,
        "mean_w_above_0.01_from": sustained,
    }


def summarise(schedule: Schedule, runs: Path, mode: str, seconds: dict[str, float]) -> dict[str, Any]:
    """Everything the finished runs show."""
    results = {
        (arm, seed): found
        for arm in schedule.arms
        for seed in schedule.seeds
        if (found := read_results(runs, arm, seed)) is not None
    }

    def scores(arm: str, net: str, metric: str = "miou") -> dict[int, float]:
        return {
            seed: results[(arm, seed)]["nets"][net][metric]
            for seed in schedule.seeds
            if (arm, seed) in results and net in results[(arm, seed)]["nets"]
        }

    rows: list[dict[str, Any]] = []
    for arm in schedule.arms:
        for net in ARMS[arm].nets:
            plain, with_labels = scores(arm, net), scores(arm, net, "miou_with_labels")
            if plain:
                rows.append(
                    {
                        "label": row_label(arm, net),
                        "arm": arm,
                        "net": net,
                        "seeds": list(plain),
                        "miou": spread(list(plain.values())),
                        "miou_with_labels": spread(list(with_labels.values())),
                    }
                )

    def difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
        common = {seed: a[seed] - b[seed] for seed in a if seed in b}
        return paired(common) if common else None

    effects: dict[str, Any] = {}
    for arm in schedule.arms:
        if ARMS[arm].method == "pct" and "hybrid" in schedule.arms:
            for metric in ("miou", "miou_with_labels"):
                found = difference(scores(arm, "hybrid", metric), scores("hybrid", "hybrid", metric))
                if found:
                    effects[f"p2h {arm} {metric}"] = found
        if ARMS[arm].method == "pct" and arm != "pct" and "pct" in schedule.arms:
            found = difference(scores(arm, "hybrid"), scores("pct", "hybrid"))
            if found:
                effects[f"{arm} - pct hybrid miou"] = found
    if "pct" in schedule.arms and ARMS["pct"].retrain:
        found = difference(scores("pct", "retrained"), scores("pct", "hybrid"))
        if found:
            effects["retraining miou"] = found

    gap: dict[str, Any] = {}
    for metric in ("miou", "miou_with_labels"):
        low, high = (
            scores("supervised", "supervised", metric),
            scores("fully_supervised", "supervised", metric),
        )
        for row in rows:
            if row["arm"] in ("supervised", "fully_supervised"):
                continue
            mine = scores(row["arm"], row["net"], metric)
            shares = {
                seed: (mine[seed] - low[seed]) / (high[seed] - low[seed])
                for seed in mine
                if seed in low and seed in high and high[seed] - low[seed] > 1e-9
            }
            if shares:
                gap.setdefault(metric, {})[row["label"]] = paired(shares)

    pseudo_labels = {
        seed: results[("pct", seed)]["pseudo_labels"]["miou"]
        for seed in schedule.seeds
        if ("pct", seed) in results and (results[("pct", seed)].get("pseudo_labels") or {}).get("miou")
    }
    fully: dict[str, Any] = {}
    for seed in schedule.seeds:
        if ("fully_supervised", seed) in results:
            for name, iou in results[("fully_supervised", seed)]["nets"]["supervised"]["iou"].items():
                fully.setdefault(name, []).append(iou)
    training: dict[str, Any] = {}
    for arm in schedule.arms:
        if ARMS[arm].method != "pct":
            continue
        for seed in schedule.seeds:
            if (arm, seed) in results:
                names = results[(arm, seed)]["class_names"]
                training.setdefault(arm, {})[str(seed)] = dynamics(runs / f"{arm}-seed{seed}", names)
    stage_seconds = {f"{arm}-seed{seed}": found.get("seconds", {}) for (arm, seed), found in results.items()}
    return {
        "mode": mode,
        "pctkit": __version__,
        "schedule": asdict(schedule),
        "pretrained_backbone": pretrained_info(schedule),
        "rows": rows,
        "effects": effects,
        "gap_closed": gap,
        "pseudo_label_miou": paired(pseudo_labels) if pseudo_labels else None,
        "fully_supervised_iou": {name: spread(values) for name, values in fully.items()},
        "training_dynamics": training,
        # The runs folder is shared by every selection of a mode's arms and seeds.
        "seconds": {key: value for key, value in seconds.items() if key in stage_seconds},
        "stage_seconds": stage_seconds,
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last_finished(runs, list(stage_seconds)))),
    }


def last_finished(runs: Path, keys: list[str]) -> float:
    """When the latest of these runs finished (now if none has)."""
    finished = [
        (runs / key / RunDirectory.RESULTS).stat().st_mtime
        for key in keys
        if (runs / key / RunDirectory.RESULTS).is_file()
    ]
    return max(finished, default=time.time())


def pretrained_info(schedule: Schedule) -> dict[str, Any] | None:
    """The record ``pretrain_backbone.py`` wrote beside the packaged weights."""
    if not schedule.pretrained:
        return None
    record = package_file(schedule.pretrained).with_suffix(".json")
    info: dict[str, Any] = {"file": schedule.pretrained}
    if record.is_file():
        data = json.loads(record.read_text())
        info.update({key: data[key] for key in ("settings", "held_out", "weights", "time") if key in data})
    return info


# --------------------------------------------------------------------------- report


def pm(summary: dict[str, Any] | None, digits: int = 3, sign: bool = False) -> str:
    """``0.712 ± 0.004``."""
    if not summary:
        return ""
    form = f"+.{digits}f" if sign else f".{digits}f"
    return f"{summary['mean']:{form}} ± {summary['std']:.{digits}f}"


def per_seed(summary: dict[str, Any], digits: int = 3) -> str:
    """``(+0.004, +0.027, +0.002)``."""
    return "(" + ", ".join(f"{value:+.{digits}f}" for value in summary["values"]) + ")"


def markdown(summary: dict[str, Any]) -> str:
    """The tables the README quotes, and the training dynamics behind them."""
    schedule = summary["schedule"]
    digits = ", ".join(str(d) for d in schedule["digit_classes"])
    backbone = (
        f"backbone pretrained on scenes of the other six digits (`{schedule['pretrained']}`)"
        if schedule["pretrained"]
        else "from scratch"
    )
    lines = [
        f"### PCT on digit scenes ({summary['mode']} mode, pctkit {summary['pctkit']})",
        "",
        f"{schedule['canvas_size']} px scenes of 1-{schedule['max_digits']} digits ({digits}) of "
        f"{schedule['min_digit_size']}-{schedule['max_digit_size']} px, stroke dilation "
        f"{schedule['stroke_dilation']}; {schedule['num_strong']} strong + {schedule['num_weak']} weak "
        f"training scenes, {schedule['num_val']} validation scenes. timm `test_resnet` (`out_indices = "
        f"{list(schedule['out_indices'])}`) + fusion head, {backbone}; AdamW lr {schedule['lr']:g}, poly; "
        f"{schedule['iterations']} iterations of {schedule['batch']} images per arm (PCT and hybrid: "
        f"{schedule['batch'] // 2} strong + {schedule['batch'] // 2} weak), retraining "
        f"{schedule['retrain_iterations']} iterations. PCT arms: the released code's rules "
        '(`weight_rule = "released"`, `p2h_mean = "all_weak_pixels"`, the pseudo net\'s rate '
        "constant) unless the arm says otherwise. Validation mIoU, mean ± std over seeds "
        f"{', '.join(map(str, schedule['seeds']))}; every arm starts from the same weights for a "
        "given seed.",
        "",
        "| arm | mIoU plain | mIoU with image labels | gap closed (plain, per-seed mean ± std) |",
        "|---|---|---|---|",
    ]
    closed = summary["gap_closed"].get("miou", {})
    for row in summary["rows"]:
        share = closed.get(row["label"])
        lines.append(
            f"| {row['label']} | {pm(row['miou'])} | {pm(row['miou_with_labels'])} | "
            + (f"{share['mean']:.0%} ± {share['std']:.0%}" if share else "")
            + " |"
        )
    lines += effects_lines(summary)
    lines += dynamics_lines(summary)
    if summary["fully_supervised_iou"]:
        lines += [
            "",
            "Fully supervised, per-class IoU (plain, mean ± std over seeds): "
            + ", ".join(f"{name} {pm(value, 2)}" for name, value in summary["fully_supervised_iou"].items())
            + ".",
        ]
    lines += time_lines(summary)
    return "\n".join(lines) + "\n"


def effects_lines(summary: dict[str, Any]) -> list[str]:
    """Paired effects (per seed) and the targets."""
    effects = summary["effects"]
    lines = [
        "",
        "Paired per seed (same initial weights and batches): differences of validation mIoU, mean ± std "
        "of the per-seed differences, the mean in units of that std, and the values.",
        "",
        "| effect | difference | mean / std | per seed |",
        "|---|---|---|---|",
    ]
    names = {
        "retraining miou": "retraining: PCT + retraining (plain) − PCT hybrid net (plain)",
        "pct_strict - pct hybrid miou": "strict w rule: hybrid net − released rule's (plain)",
        "pct_decaying - pct hybrid miou": "decaying pseudo LR: hybrid net − constant's (plain)",
        "pct_power2 - pct hybrid miou": "γ = 2: hybrid net − γ = 8's (plain)",
    }
    for key, effect in effects.items():
        if key.startswith("p2h "):
            _, arm, metric = key.split(" ")
            mode = "plain" if metric == "miou" else "with image labels"
            name = f"P2H in {ARMS[arm].label}: hybrid net − hybrid arm ({mode})"
        else:
            name = names.get(key, key)
        ratio = effect["std_ratio"]
        lines.append(
            f"| {name} | {pm(effect, sign=True)} | {'' if ratio is None else f'{ratio:.1f}'} | "
            f"{per_seed(effect)} |"
        )
    quality = summary.get("pseudo_label_miou")
    if quality:
        lines += [
            "",
            "PCT's pseudo labels of the weak scenes (hybrid net, scales 0.75-1.25, class-aware): "
            f"mIoU {pm(quality)} against their hidden masks "
            f"({', '.join(f'{value:.3f}' for value in quality['values'])}).",
        ]
    lines += target_lines(summary)
    return lines


def target_lines(summary: dict[str, Any]) -> list[str]:
    """The issue's three targets, met or missed and by how much."""
    effects, closed = summary["effects"], summary["gap_closed"].get("miou", {})
    lines: list[str] = []
    p2h = effects.get("p2h pct miou")
    if p2h and p2h["std_ratio"] is not None:
        ratio = p2h["std_ratio"]
        verdict = "met" if ratio > 2 else f"missed: {ratio:.1f} std, {2 - ratio:.1f} short"
        lines.append(f"- P2H's effect above 2 std of its paired differences: {verdict}.")
    retraining = effects.get("retraining miou")
    if retraining:
        verdict = "met" if retraining["mean"] > 0 else f"missed by {-retraining['mean']:.3f} mIoU"
        lines.append(
            f"- retrained plain above the PCT hybrid net plain: {verdict} "
            f"({pm(retraining, sign=True)}, {sum(v > 0 for v in retraining['values'])} of "
            f"{len(retraining['values'])} seeds above)."
        )
    for label in ("PCT, hybrid net", "PCT + retraining"):
        share = closed.get(label)
        if share:
            verdict = "met" if share["mean"] >= 0.8 else f"missed by {0.8 - share['mean']:.0%} of the gap"
            lines.append(f"- {label} closes ≥ 80 % of the gap (plain): {share['mean']:.0%}, {verdict}.")
    with_labels = summary["gap_closed"].get("miou_with_labels", {}).get("PCT, hybrid net")
    if with_labels:
        lines.append(
            f"- (with image labels, against the with-labels gap: PCT hybrid net {with_labels['mean']:.0%} "
            f"± {with_labels['std']:.0%}.)"
        )
    return ["", "Targets:", "", *lines] if lines else []


def dynamics_lines(summary: dict[str, Any]) -> list[str]:
    """Final J and w per PCT arm, when w engaged, and the curves at a few iterations."""
    training = summary["training_dynamics"]
    if not training:
        return []
    lines = [
        "",
        "Dynamic evaluation at the end of cross training (mean over seeds): J per class; mean weight "
        f"w = (min J)^γ of the weak images; the iteration at which the logged mean w first exceeded "
        f"{ENGAGED_W} and the one from which it stayed above it, per seed.",
        "",
        "| arm | final J per class | final mean w | w > 0.01 first at | w > 0.01 from |",
        "|---|---|---|---|---|",
    ]
    curves = []
    for arm, by_seed in training.items():
        runs = list(by_seed.values())
        names = list(runs[0]["J"])
        final_j = {name: statistics.fmean(run["J"][name][-1] for run in runs) for name in names}
        last_w = statistics.fmean(run["mean_w"][-1] for run in runs)

        def when(key: str, runs: list[dict[str, Any]] = runs) -> str:
            return ", ".join("never" if run[key] is None else str(run[key]) for run in runs)

        lines.append(
            f"| {ARMS[arm].label} | "
            + ", ".join(f"{name} {value:.2f}" for name, value in final_j.items())
            + f" | {last_w:.3f} | {when('first_iteration_mean_w_above_0.01')} | "
            f"{when('mean_w_above_0.01_from')} |"
        )
        iterations = runs[0]["iterations"]
        marks = sorted({iterations[min(len(iterations) - 1, k)] for k in (0, 1, 2, 3, 5, 7, 11, 17, 23, 29)})
        marks.append(iterations[-1])
        for mark in sorted(set(marks)):
            at = [run["iterations"].index(mark) for run in runs if mark in run["iterations"]]
            chosen = [run for run in runs if mark in run["iterations"]]
            w = statistics.fmean(run["mean_w"][i] for run, i in zip(chosen, at, strict=True))
            j = {
                name: statistics.fmean(run["J"][name][i] for run, i in zip(chosen, at, strict=True))
                for name in names
            }
            curves.append(
                f"| {ARMS[arm].label} | {mark} | {w:.3f} | " + " | ".join(f"{j[n]:.2f}" for n in names) + " |"
            )
    names = list(next(iter(next(iter(training.values())).values()))["J"])
    lines += [
        "",
        "Over cross training (mean over seeds of the logged means; every log record is in the JSON):",
        "",
        "| arm | iteration | mean w | " + " | ".join(f"J {name}" for name in names) + " |",
        "|---|---|---|" + "---|" * len(names),
        *curves,
    ]
    return lines


def time_lines(summary: dict[str, Any]) -> list[str]:
    """Wall time per arm (this script's clock, resumptions summed)."""
    by_arm: dict[str, list[float]] = {}
    for key, seconds in summary["seconds"].items():
        by_arm.setdefault(key.rsplit("-seed", 1)[0], []).append(seconds)
    if not by_arm:
        return []
    total = sum(summary["seconds"].values())
    parts = ", ".join(
        f"{arm} {statistics.fmean(values):.0f} s" for arm, values in by_arm.items() if arm in ARMS
    )
    return [
        "",
        f"Wall time per run (mean over seeds, 1 torch thread, 2 shared CPU cores): {parts}; "
        f"all runs {total / 60:.0f} min. Measured {summary['time']}, torch {summary['torch']}.",
    ]


def write_summary(summary: dict[str, Any], folder: Path, name: str) -> None:
    """``<name>.json`` and ``<name>.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown(summary))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=sorted(SCHEDULES), default="default", help="scenes and arms")
    parser.add_argument("--full", action="store_true", help="the same as --mode full")
    parser.add_argument("--smoke", action="store_true", help="the mode's arms at a tiny size (a minute)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the mode's seeds")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), help="override the mode's arms")
    parser.add_argument(
        "--name", help="stem of the result files (default: quality[_<mode>]); the runs are the mode's"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (experiment.threads; default 1: on a shared machine, two threads that "
        "wait for each other at every operation run several times slower than one; 0: torch's default)",
    )
    arguments = parser.parse_args()
    mode = "full" if arguments.full else arguments.mode
    schedule = SCHEDULES[mode]
    if arguments.smoke:
        schedule = smoke(schedule)
    if arguments.seeds:
        schedule = replace(schedule, seeds=tuple(arguments.seeds))
    if arguments.arms:
        schedule = replace(schedule, arms=tuple(arguments.arms))
    if schedule.pretrained and not package_file(schedule.pretrained).is_file():
        raise SystemExit(f"{schedule.pretrained} is missing: see benchmarks/pretrain_backbone.py")
    name = (arguments.name or RESULT_NAMES[mode]) + ("_smoke" if arguments.smoke else "")
    runs = RUNS / (f"{mode}-smoke" if arguments.smoke else mode)
    # The smoke test's results are no results: they stay with its runs.
    results = runs if arguments.smoke else RESULTS
    journal = Journal(results / f"{name}.log")
    journal(
        f"quality benchmark, {mode} mode{' (smoke)' if arguments.smoke else ''}, pctkit {__version__}: "
        f"arms {', '.join(schedule.arms)}; seeds {', '.join(map(str, schedule.seeds))}; runs in {runs}; "
        f"{arguments.threads} thread(s)"
    )
    seconds_file = runs / "seconds.json"
    seconds: dict[str, float] = json.loads(seconds_file.read_text()) if seconds_file.is_file() else {}
    # Seed-major order, one run at a time: after each seed every arm has one more result.
    for seed in schedule.seeds:
        for arm in schedule.arms:
            key = f"{arm}-seed{seed}"
            started = time.perf_counter()
            if run_arm(arm, seed, schedule, arguments.threads, runs, journal):
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
                runs.mkdir(parents=True, exist_ok=True)
                seconds_file.write_text(json.dumps(seconds, indent=2) + "\n")
                write_summary(summarise(schedule, runs, mode, seconds), results, name)
    summary = summarise(schedule, runs, mode, seconds)
    write_summary(summary, results, name)
    journal(f"done: {results / name}.md")
    sys.stdout.write(markdown(summary))


if __name__ == "__main__":
    main()
