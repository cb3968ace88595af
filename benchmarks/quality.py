"""Does progressive cross training work? Every arm of the method's argument, on
``digit_scenes``, over several seeds.

Arms (each a pctkit run; for a given seed every arm starts from the same weights, as
the engine seeds each net's initialisation by (seed, role), and draws the same batches):

- **supervised-only**: one net, plain cross entropy on the strong scenes' masks;
- **hybrid**: the hybrid net alone, strong CCE + classification loss on strong and weak;
- **PCT**: hybrid + pseudo nets with all four terms (the method's stage 1);
- **PCT + retraining**: the same run's stage 2 (pseudo labels, a fresh net);
- **PCT γ = 2**: the score power 2 instead of 8, so that w = (min J)^γ rises earlier;
- **fully supervised**: every training scene with its mask (``num_strong`` = all,
  ``num_weak`` = 0; ``digit_scenes`` keeps every scene identical), the upper bound.

The pseudo-to-hybrid term's own effect: in PCT the hybrid net's gradient comes from
the strong CCE, the classification loss and P2H (the H2P term's targets are detached
hybrid predictions, so its gradient reaches only the pseudo net). With the same
initial weights and batches, the hybrid arm is therefore exactly PCT's hybrid net
without P2H, and "PCT, hybrid net" minus "hybrid" is what P2H adds. While w ≈ 0 the
two agree to rounding; the logged J per class and mean w show when that ends.

``--full`` runs the same arms on 48 px scenes with six digit classes and a schedule
long enough for digit J to pass ~0.7.

Each run lives in ``runs/quality/<mode>/<arm>-seed<k>`` (checkpointed; ``runs/`` is
not committed). A finished run (``results.json``) is skipped, an interrupted one
resumed, so the script can be restarted at any time. After each run the summary is
rewritten: ``benchmarks/results/quality.json`` and ``quality.md`` (``quality_full.*``
with ``--full``), mIoU plain and with image labels, mean ± std over seeds, J per class
and mean w over training.

    python benchmarks/quality.py                # default: about 30 minutes on 2 CPU cores
    nohup python benchmarks/quality.py --full > /dev/null 2>&1 &   # hours; log in results/
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pctkit.engine.pipeline import Run, RunError, prepare_run_dir
from pctkit.engine.reporting import Reporter
from pctkit.recipe import Recipe, validate_recipe_data

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "quality"


@dataclass(frozen=True)
class Schedule:
    """The scene and the training budget of one mode."""

    canvas_size: int
    min_digit_size: int
    max_digit_size: int
    max_digits: int
    digit_classes: tuple[int, ...]
    num_strong: int
    num_weak: int
    num_val: int
    iterations: int
    retrain_iterations: int
    batch: int  # images per iteration of every arm: strong + weak, or all strong
    lr: float
    seeds: tuple[int, ...]
    arms: tuple[str, ...]
    log_interval: int = 25
    checkpoint_interval: int = 100


ARMS_DEFAULT = ("supervised", "hybrid", "pct", "pct_power2", "fully_supervised")
ARMS_FULL = ARMS_DEFAULT

SCHEDULES: dict[str, Schedule] = {
    # About 30 minutes on 2 shared CPU cores (one thread): 32 px scenes with four digit
    # classes and 10 % strong scenes, so that J rises past 0.5 within the schedule.
    "default": Schedule(
        canvas_size=32,
        min_digit_size=12,
        max_digit_size=18,
        max_digits=2,
        digit_classes=(0, 1, 4, 7),
        num_strong=120,
        num_weak=1080,
        num_val=300,
        iterations=1800,
        retrain_iterations=1800,
        batch=16,
        lr=3e-3,
        seeds=(0, 1, 2),
        arms=ARMS_DEFAULT,
        log_interval=50,
        checkpoint_interval=200,
    ),
    # Hours: 48 px scenes with six digit classes and a schedule long enough for digit J
    # to pass ~0.7, where (min J)^8 starts to matter.
    "full": Schedule(
        canvas_size=48,
        min_digit_size=14,
        max_digit_size=26,
        max_digits=3,
        digit_classes=(0, 1, 2, 3, 4, 7),
        num_strong=200,
        num_weak=1800,
        num_val=400,
        iterations=6000,
        retrain_iterations=4000,
        batch=16,
        lr=2e-3,
        seeds=(0, 1, 2),
        arms=ARMS_FULL,
        log_interval=100,
        checkpoint_interval=250,
    ),
    # A minute: checks that the script works end to end.
    "smoke": Schedule(
        canvas_size=32,
        min_digit_size=12,
        max_digit_size=18,
        max_digits=2,
        digit_classes=(0, 1),
        num_strong=8,
        num_weak=24,
        num_val=8,
        iterations=4,
        retrain_iterations=2,
        batch=8,
        lr=3e-3,
        seeds=(0, 1),
        arms=ARMS_DEFAULT,
        log_interval=2,
        checkpoint_interval=2,
    ),
}

# Report rows: (label, run arm, net role).
ROWS = (
    ("supervised-only", "supervised", "supervised"),
    ("hybrid (image labels)", "hybrid", "hybrid"),
    ("PCT, hybrid net", "pct", "hybrid"),
    ("PCT, pseudo net", "pct", "pseudo"),
    ("PCT + retraining", "pct", "retrained"),
    ("PCT γ = 2, hybrid net", "pct_power2", "hybrid"),
    ("PCT γ = 2, pseudo net", "pct_power2", "pseudo"),
    ("fully supervised", "fully_supervised", "supervised"),
)


# --------------------------------------------------------------------------- recipes


def recipe_for(arm: str, seed: int, schedule: Schedule) -> Recipe:
    """The recipe of one arm and seed."""
    half = schedule.batch // 2
    fully = arm == "fully_supervised"
    data = {
        "type": "digit_scenes",
        "num_strong": schedule.num_strong + (schedule.num_weak if fully else 0),
        "num_weak": 0 if fully else schedule.num_weak,
        "num_val": schedule.num_val,
        "canvas_size": schedule.canvas_size,
        "min_digit_size": schedule.min_digit_size,
        "max_digit_size": schedule.max_digit_size,
        "max_digits": schedule.max_digits,
        "digit_classes": list(schedule.digit_classes),
        "seed": 0,  # the same scenes for every seed: seeds vary training only
    }
    supervised = arm in ("supervised", "fully_supervised")
    cross_training: dict[str, Any] = {
        "mode": "supervised" if supervised else ("hybrid" if arm == "hybrid" else "pct"),
        "iterations": schedule.iterations,
        # Every arm sees the same number of images per iteration.
        "strong_batch_size": schedule.batch if supervised else half,
        "weak_batch_size": 0 if supervised else half,
        "classifier_lr_multiplier": 1.0,
        "log_interval": schedule.log_interval,
    }
    if arm == "pct_power2":
        cross_training["score_power"] = 2.0
    raw = {
        "experiment": {"name": f"{arm}-seed{seed}", "seed": seed, "device": "cpu"},
        "data": data,
        "augmentation": {"horizontal_flip": False},  # a mirrored digit is another shape
        "model": {
            "backbone": {"type": "timm", "model_name": "test_resnet", "out_indices": [1, 3]},
            "head": {"type": "fusion", "channels": 64},
        },
        "cross_training": cross_training,
        "optimizer": {"type": "adamw", "lr": schedule.lr, "weight_decay": 1e-4},
        "scheduler": {"type": "poly", "power": 0.9},
        "retrain": {
            "enabled": arm == "pct",
            "iterations": schedule.retrain_iterations,
            "batch_size": schedule.batch,
            "classifier_lr_multiplier": 1.0,
            "log_interval": schedule.log_interval,
            "pseudo_labels": {"scales": [0.75, 1.0, 1.25], "flip": False},
        },
        "evaluation": {"batch_size": 100, "num_pictures": 0},
        "checkpoint": {"interval": schedule.checkpoint_interval, "keep_last": 1},
    }
    return validate_recipe_data(raw)


# --------------------------------------------------------------------------- running


@dataclass
class Journal:
    """Messages to the console and to the log file."""

    log_file: Path

    def __call__(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as handle:
            handle.write(line + "\n")


def run_arm(arm: str, seed: int, schedule: Schedule, runs: Path, journal: Journal) -> None:
    """Train one arm and seed, or resume it; nothing if it has finished."""
    run_dir = runs / f"{arm}-seed{seed}"
    if (run_dir / "results.json").is_file():
        return
    recipe = recipe_for(arm, seed, schedule)
    resume = (run_dir / "recipe.json").is_file()
    try:
        prepare_run_dir(recipe, run_dir, resume=resume, overwrite=True)
    except RunError as error:
        raise SystemExit(
            f"{error}\nThe settings of {arm} seed {seed} changed since that run started: delete "
            f"{run_dir} to start it again."
        ) from None
    journal(f"{'resuming' if resume else 'starting'} {arm} seed {seed}")
    started = time.perf_counter()
    Run(recipe, run_dir, Reporter(enabled=False)).execute()
    results = json.loads((run_dir / "results.json").read_text())
    scores = ", ".join(
        f"{role} {summary['miou']:.3f} ({summary['miou_with_labels']:.3f} with labels)"
        for role, summary in results["nets"].items()
    )
    journal(f"finished {arm} seed {seed} in {time.perf_counter() - started:.0f} s: {scores}")


# --------------------------------------------------------------------------- summary


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the values."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def dynamics(run_dir: Path, class_names: list[str]) -> dict[str, Any]:
    """J per class and mean w over cross training, from the run's metrics."""
    iterations, mean_w, scores = [], [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") == "cross_training" and "J" in record:
            iterations.append(record["iteration"])
            mean_w.append(record.get("mean_w", 0.0))
            scores.append(record["J"])
    engaged = next((it for it, w in zip(iterations, mean_w, strict=True) if w > 0.01), None)
    return {
        "iterations": iterations,
        "mean_w": mean_w,
        "J": {name: [row[index] for row in scores] for index, name in enumerate(class_names)},
        "first_iteration_mean_w_above_0.01": engaged,
    }


def summarise(schedule: Schedule, runs: Path, mode: str, seconds: dict[str, float]) -> dict[str, Any]:
    """Everything the finished runs show, by report row."""
    rows = []
    for label, arm, role in ROWS:
        if arm not in schedule.arms:
            continue
        plain, with_labels, seeds = [], [], []
        for seed in schedule.seeds:
            path = runs / f"{arm}-seed{seed}" / "results.json"
            if not path.is_file():
                continue
            net = json.loads(path.read_text())["nets"].get(role)
            if net is None:
                continue
            plain.append(net["miou"])
            with_labels.append(net["miou_with_labels"])
            seeds.append(seed)
        if seeds:
            rows.append(
                {
                    "label": label,
                    "arm": arm,
                    "net": role,
                    "seeds": seeds,
                    "miou": spread(plain),
                    "miou_with_labels": spread(with_labels),
                }
            )
    pseudo_labels = []
    for seed in schedule.seeds:
        path = runs / f"pct-seed{seed}" / "results.json"
        quality = json.loads(path.read_text()).get("pseudo_labels") if path.is_file() else None
        if quality and quality.get("miou") is not None:
            pseudo_labels.append(quality["miou"])
    training: dict[str, Any] = {}
    for arm in ("pct", "pct_power2"):
        for seed in schedule.seeds:
            run_dir = runs / f"{arm}-seed{seed}"
            if (run_dir / "results.json").is_file():
                names = json.loads((run_dir / "results.json").read_text())["class_names"]
                training.setdefault(arm, {})[str(seed)] = dynamics(run_dir, names)
    return {
        "mode": mode,
        "schedule": asdict(schedule),
        "rows": rows,
        "gap_closed": gap_closed(rows),
        "pseudo_label_miou": spread(pseudo_labels) if pseudo_labels else None,
        "training_dynamics": training,
        "seconds": seconds,
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def gap_closed(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of the supervised-only → fully supervised gap each arm closes (plain mIoU;
    the PCT stage-1 nets are also given with image labels, as the method reports them)."""
    by_label = {row["label"]: row for row in rows}
    if "supervised-only" not in by_label or "fully supervised" not in by_label:
        return {}
    low = by_label["supervised-only"]["miou"]["mean"]
    high = by_label["fully supervised"]["miou"]["mean"]
    if high - low <= 1e-9:
        return {}
    closed = {}
    for row in rows:
        if row["label"] in ("supervised-only", "fully supervised"):
            continue
        closed[row["label"]] = (row["miou"]["mean"] - low) / (high - low)
    return closed


def markdown(summary: dict[str, Any]) -> str:
    """The table the README shows, and the training dynamics behind it."""
    schedule = summary["schedule"]
    digits = ", ".join(str(d) for d in schedule["digit_classes"])
    lines = [
        f"### PCT on digit scenes ({summary['mode']} mode)",
        "",
        f"{schedule['canvas_size']} px scenes of 1-{schedule['max_digits']} digits ({digits}), "
        f"{schedule['num_strong']} strong + {schedule['num_weak']} weak training scenes, "
        f"{schedule['num_val']} validation scenes; timm `test_resnet` + fusion head from scratch, "
        f"AdamW lr {schedule['lr']:g}, poly; {schedule['iterations']} iterations of "
        f"{schedule['batch']} images per arm (PCT and hybrid: {schedule['batch'] // 2} strong + "
        f"{schedule['batch'] // 2} weak), retraining {schedule['retrain_iterations']} iterations. "
        f"Validation mIoU, mean ± std over seeds {', '.join(map(str, schedule['seeds']))}; "
        "every arm starts from the same weights for a given seed.",
        "",
        "| arm | mIoU plain | mIoU with image labels | gap closed (plain) |",
        "|---|---|---|---|",
    ]
    for row in summary["rows"]:
        closed = summary["gap_closed"].get(row["label"])
        lines.append(
            f"| {row['label']} | {row['miou']['mean']:.3f} ± {row['miou']['std']:.3f} | "
            f"{row['miou_with_labels']['mean']:.3f} ± {row['miou_with_labels']['std']:.3f} | "
            + (f"{closed:.0%}" if closed is not None else "")
            + " |"
        )
    if summary.get("pseudo_label_miou"):
        quality = summary["pseudo_label_miou"]
        lines += [
            "",
            f"PCT's pseudo labels of the weak scenes (hybrid net, scales 0.75-1.25, class-aware): "
            f"mIoU {quality['mean']:.3f} ± {quality['std']:.3f} against their hidden masks.",
        ]
    dynamics_rows = []
    for arm, by_seed in summary["training_dynamics"].items():
        finals = list(by_seed.values())
        if not finals:
            continue
        names = list(finals[0]["J"])
        final_j = {name: statistics.fmean(run["J"][name][-1] for run in finals) for name in names}
        peak_w = statistics.fmean(max(run["mean_w"] or [0.0]) for run in finals)
        last_w = statistics.fmean((run["mean_w"] or [0.0])[-1] for run in finals)
        engaged = [run["first_iteration_mean_w_above_0.01"] for run in finals]
        dynamics_rows.append(
            f"| {arm} | "
            + ", ".join(f"{name} {value:.2f}" for name, value in final_j.items())
            + f" | {last_w:.3f} (peak {peak_w:.3f}) | "
            + ", ".join("never" if it is None else str(it) for it in engaged)
            + " |"
        )
    if dynamics_rows:
        lines += [
            "",
            "Dynamic evaluation at the end of cross training (mean over seeds): J per class, "
            "mean weight w = (min J)^γ of the weak images, and the iteration at which the "
            "logged mean w first exceeded 0.01 (the pseudo-to-hybrid term engages), per seed.",
            "",
            "| run | final J per class | final mean w | mean w > 0.01 from iteration |",
            "|---|---|---|---|",
            *dynamics_rows,
        ]
    total = sum(summary["seconds"].values())
    lines += [
        "",
        f"Measured {summary['time']}, torch {summary['torch']}; training time {total / 60:.0f} min.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], folder: Path, name: str) -> None:
    """``<name>.json`` and ``<name>.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown(summary))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="longer schedule and the P2H ablations (hours)")
    parser.add_argument("--smoke", action="store_true", help="a tiny schedule to check the script (a minute)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the mode's seeds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, two threads that wait for each "
        "other at every operation run several times slower than one; 0: torch's default)",
    )
    arguments = parser.parse_args()
    mode = "smoke" if arguments.smoke else "full" if arguments.full else "default"
    schedule = SCHEDULES[mode]
    if arguments.seeds:
        schedule = Schedule(**{**asdict(schedule), "seeds": tuple(arguments.seeds)})
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    name = {"default": "quality", "full": "quality_full", "smoke": "quality_smoke"}[mode]
    runs = RUNS / mode
    # The smoke test's results are no results: they stay with its runs.
    results = runs if mode == "smoke" else RESULTS
    journal = Journal(results / f"{name}.log")
    journal(
        f"quality benchmark, {mode} mode: arms {', '.join(schedule.arms)}; seeds "
        f"{', '.join(map(str, schedule.seeds))}; runs in {runs}; {torch.get_num_threads()} threads"
    )
    seconds_file = runs / "seconds.json"
    seconds: dict[str, float] = json.loads(seconds_file.read_text()) if seconds_file.is_file() else {}
    # Seed-major order: after each seed, every arm has one more comparable result.
    for seed in schedule.seeds:
        for arm in schedule.arms:
            key = f"{arm}-seed{seed}"
            started = time.perf_counter()
            was_done = (runs / key / "results.json").is_file()
            run_arm(arm, seed, schedule, runs, journal)
            if not was_done:
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
