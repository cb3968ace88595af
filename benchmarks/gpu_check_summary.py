"""The reporting half of ``gpu_check.sh``: one record from the phases' records, the
estimated wall time of a full ``voc_pct.toml`` run, and a short table on stdout.

    python benchmarks/gpu_check_summary.py --phases DIR --step-speed FILE --out FILE [--merge]

``DIR`` holds what the shell script left: ``<phase>.json`` (each phase's record),
``<phase>.log`` (its output) and ``status.jsonl`` (each phase's exit status, seconds and
time limit). With ``--merge`` the phases of an earlier record that were not rerun are
kept (``gpu_check.sh --only compile`` adds to the last full check).

No torch here: the summary runs even where a phase broke the environment.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

VOC_TRAIN_AUG_IMAGES = 10_582
"""Images of ImageSets/Segmentation/train_aug.txt (VOC 2012 + SBD), the training set."""
VOC_VAL_IMAGES = 1_449
"""Images of ImageSets/Segmentation/val.txt, validated and evaluated."""

STEP_PHASES = ("precisions", "dinov2", "retraining", "compile")
"""Phases whose records hold training-step arms (``gpu_check.py steps``)."""
LOG_TAIL = 3000
"""Characters of a failed phase's output kept in the record."""


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or ``None`` when the phase wrote none (or half of one)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def phase_statuses(folder: Path) -> dict[str, dict[str, Any]]:
    """Each phase's outcome from ``status.jsonl``, with the end of a failed one's log."""
    statuses: dict[str, dict[str, Any]] = {}
    status_file = folder / "status.jsonl"
    lines = status_file.read_text().splitlines() if status_file.is_file() else []
    for line in lines:
        entry = json.loads(line)
        name = entry.pop("phase")
        code = entry.get("exit")
        if entry.get("status") == "run":  # else the shell says why it did not run
            entry["status"] = "ok" if code == 0 else "timed out" if code in (124, 137) else "failed"
        log = folder / f"{name}.log"
        if entry["status"] in ("failed", "timed out") and log.is_file():
            entry["log_tail"] = log.read_text(errors="replace")[-LOG_TAIL:]
        statuses[name] = entry
    return statuses


def collect(folder: Path, step_speed_file: Path, earlier: dict[str, Any] | None) -> dict[str, Any]:
    """One record from the phases' records (over ``earlier``'s, where given)."""
    record: dict[str, Any] = earlier or {"phases": {}, "arms": {}}
    record["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    statuses = phase_statuses(folder)
    record["phases"].update(statuses)
    environment = read_json(folder / "environment.json")
    if environment is not None:
        record["environment"] = environment
    for phase in STEP_PHASES:
        steps = read_json(folder / f"{phase}.json")
        if steps is not None:
            for name, arm in steps.get("arms", {}).items():
                record["arms"][name] = {**arm, "phase": phase}
        elif phase in statuses:  # rerun and wrote nothing: drop stale arms of that phase
            record["arms"] = {k: v for k, v in record["arms"].items() if v.get("phase") != phase}
    ddp = read_json(folder / "ddp.json")
    if ddp is not None:
        record["ddp"] = ddp
    inference = read_json(folder / "inference.json")
    if inference is not None:
        record["inference"] = inference
    step_speed = read_json(step_speed_file) if "ratios" in statuses else None
    if step_speed is not None:
        record["ratios"] = {
            "file": step_speed_file.name,
            "pctkit_over_hand_written": step_speed.get("pctkit_over_hand_written"),
            "pct_over_supervised": step_speed.get("pct_over_supervised"),
            "seconds_per_iteration": step_speed.get("seconds_per_iteration"),
            "same_math_agree": step_speed.get("same_math", {}).get("agree"),
            "setting": {
                key: step_speed.get("setting", {}).get(key)
                for key in ("model", "precision", "channels_last", "size", "batch", "rounds", "block")
            },
        }
    record["full_run_estimate"] = full_run_estimate(record, read_json(RESULTS / "data_pipeline.json"))
    return record


# --------------------------------------------------------------------------- the estimate


def stage_events(iterations: int, interval: int) -> int:
    """How often a stage validates or checkpoints: every ``interval`` iterations and after
    the last one (``Hooks.after_step``); ``interval`` 0: after the last one only."""
    if not interval:
        return 1
    return iterations // interval + (1 if iterations % interval else 0)


def full_run_estimate(record: dict[str, Any], data_pipeline: dict[str, Any] | None) -> dict[str, Any]:
    """Wall time of a full run of the recipe on this machine's GPU, stage by stage, from
    the measured step times and per-image costs; ``low`` and ``high`` bound what the
    measurements leave open (pseudo-label batches, best checkpoints)."""
    arms, inference = record.get("arms", {}), record.get("inference")
    needed = {
        "PCT step (arm voc_bf16_cl)": arms.get("voc_bf16_cl", {}).get("seconds_per_iteration"),
        "retraining step (arm voc_retraining_bf16_cl)": arms.get("voc_retraining_bf16_cl", {}).get(
            "seconds_per_iteration"
        ),
        "pseudo labels and evaluation (phase inference)": inference,
    }
    missing = [what for what, value in needed.items() if value is None]
    if missing or inference is None:
        return {"missing": missing}
    schedule = inference["schedule"]
    cross, retrain = schedule["cross_training"], schedule["retraining"]
    pct_step = arms["voc_bf16_cl"]["seconds_per_iteration"]
    retrain_step = arms["voc_retraining_bf16_cl"]["seconds_per_iteration"]
    evaluation = inference["evaluation"]["seconds_per_image"]
    labels = inference["pseudo_labels"]
    batched, single = labels["seconds_per_image"], labels["seconds_per_image_batch_1"]
    weak_images = VOC_TRAIN_AUG_IMAGES - schedule["num_strong"]
    cross_validations = stage_events(cross["iterations"], cross["eval_interval"])
    retrain_validations = stage_events(retrain["iterations"], retrain["eval_interval"])
    nets = cross["nets"]

    def checkpoints(arm: str, iterations: int, validations: int) -> tuple[float, float]:
        seconds = arms[arm].get("checkpoint", {}).get("seconds", 0.0)
        periodic = stage_events(iterations, schedule["checkpoint_interval"])
        return periodic * seconds, (periodic + validations) * seconds  # each validation may save a best

    parts: dict[str, tuple[float, float]] = {
        "cross_training": (cross["iterations"] * pct_step,) * 2,
        "cross_training_validation": (cross_validations * nets * VOC_VAL_IMAGES * evaluation,) * 2,
        "cross_training_checkpoints": checkpoints("voc_bf16_cl", cross["iterations"], cross_validations),
        "pseudo_labels": (weak_images * batched, weak_images * single),
        "retraining": (retrain["iterations"] * retrain_step,) * 2,
        "retraining_validation": (retrain_validations * VOC_VAL_IMAGES * evaluation,) * 2,
        "retraining_checkpoints": checkpoints(
            "voc_retraining_bf16_cl", retrain["iterations"], retrain_validations
        ),
        "final_evaluation": ((nets + 1) * VOC_VAL_IMAGES * evaluation,) * 2,
    }
    notes = [
        "excluded: start-up, cuDNN autotuning for each new image size (VOC sizes vary), data-loading "
        "stalls; random weights and generated images of 375 x 500",
    ]
    postprocess = inference.get("postprocess", {})
    if schedule.get("postprocess") and "seconds_per_image" in postprocess:
        crf_nets = len(schedule["postprocess_nets"])
        parts["final_evaluation_postprocess"] = (
            crf_nets * VOC_VAL_IMAGES * postprocess["seconds_per_image"],
        ) * 2
    elif schedule.get("postprocess"):
        notes.append(f"{schedule['postprocess']} not measured: {postprocess.get('error', 'unavailable')}")
    low = sum(value[0] for value in parts.values())
    high = sum(value[1] for value in parts.values())
    estimate: dict[str, Any] = {
        "recipe": schedule["recipe"],
        "seconds": {name: [round(a, 1), round(b, 1)] for name, (a, b) in parts.items()},
        "total_hours": [round(low / 3600, 2), round(high / 3600, 2)],
        "counts": {
            "weak_images_labelled": weak_images,
            "val_images": VOC_VAL_IMAGES,
            "validations": {"cross_training": cross_validations, "retraining": retrain_validations},
        },
        "notes": notes,
    }
    compiled = arms.get("voc_bf16_cl_compile", {}).get("seconds_per_iteration")
    if compiled is not None:  # what experiment.compile = true would change
        estimate["cross_training_compiled_seconds"] = round(cross["iterations"] * compiled, 1)
    if data_pipeline is not None:
        estimate["loader"] = loader_ceiling(data_pipeline, schedule, 1 / pct_step, 1 / retrain_step)
    return estimate


def loader_ceiling(
    data_pipeline: dict[str, Any], schedule: dict[str, Any], pct_rate: float, retrain_rate: float
) -> dict[str, Any]:
    """Iterations/s the recipe's loader workers could feed, from ``data_pipeline.py``'s
    CPU cost per sample (measured on another machine: a rough guide)."""
    per_sample = data_pipeline["per_sample"]
    strong_ms, weak_ms = per_sample["strong"]["total_ms"], per_sample["weak"]["total_ms"]
    batch = data_pipeline.get("stream_batch_sizes", {"strong": 5, "weak": 5})
    workers = max(1, schedule["loader_workers"])
    cross = workers * 1000 / (batch["strong"] * strong_ms + batch["weak"] * weak_ms)
    retrain = workers * 1000 / (schedule["retraining"]["batch_size"] * strong_ms)
    return {
        "source": "results/data_pipeline.json (CPU cost per sample, one worker per core)",
        "workers": workers,
        "cross_training_iterations_per_second": round(cross, 1),
        "retraining_iterations_per_second": round(retrain, 1),
        "loader_bound": {"cross_training": cross < pct_rate, "retraining": retrain < retrain_rate},
    }


# --------------------------------------------------------------------------- the table


def table(record: dict[str, Any]) -> str:
    """The short summary printed at the end of the check."""
    lines: list[str] = []
    environment = record.get("environment", {})
    gpus = environment.get("gpus") or []
    device = f"{gpus[0]['name']} x {len(gpus)}" if gpus else "CPU (no GPU used)"
    lines.append(
        f"{record.get('kind', 'gpu_check')}: {device}, torch {environment.get('torch')}, "
        f"CUDA {environment.get('cuda')}, cuDNN {environment.get('cudnn')}, {record['time']}"
    )
    lines.append("")
    lines.append(f"{'phase':<12} {'status':<10} {'seconds':>8} {'limit':>6}")
    for name, status in record["phases"].items():
        seconds, limit = status.get("seconds", ""), status.get("limit", "")
        lines.append(f"{name:<12} {status['status']:<10} {seconds:>8} {limit:>6}")
    if record.get("arms"):
        lines.append("")
        lines.append(f"{'arm':<30} {'it/s':>7} {'s/it':>8} {'images/s':>9} {'peak GiB':>9} {'warm-up s':>10}")
        for name, arm in record["arms"].items():
            if "error" in arm:
                lines.append(f"{name:<30} error: {arm['error'][:80]}")
                continue
            lines.append(
                f"{name:<30} {arm['iterations_per_second']:>7.2f} {arm['seconds_per_iteration']:>8.4f} "
                f"{arm['images_per_second']:>9.1f} {arm['peak_memory_gib']:>9.2f} "
                f"{arm['warmup_seconds']:>10.1f}"
            )
    for name, arm in record.get("ddp", {}).get("arms", {}).items():
        if "error" in arm:
            lines.append(f"DDP {name}: error: {arm['error'][:80]}")
            continue
        alone = record.get("arms", {}).get(name, {}).get("iterations_per_second")
        scaling = f", {arm['iterations_per_second'] / alone:.2f} x one worker's it/s" if alone else ""
        lines.append(
            f"DDP {name}, {arm['workers']} workers, the batch on each: {arm['iterations_per_second']:.2f} "
            f"it/s{scaling}, {arm['images_per_second']:.1f} images/s, peak {arm['peak_memory_gib']:.2f} GiB"
        )
    ratios = record.get("ratios")
    if ratios:
        lines.append(
            f"PCT step / supervised step {_number(ratios['pct_over_supervised'], 3)}; pctkit / hand-written "
            f"{_number(ratios['pctkit_over_hand_written'], 3)} (same math: "
            f"{'agree' if ratios['same_math_agree'] else 'DIFFER'}; {ratios['file']})"
        )
    inference = record.get("inference")
    if inference:
        labels = inference["pseudo_labels"]
        per_image = (
            f"{_number(labels['seconds_per_image'], 4)} s (batch {labels['batch_size']}), "
            f"{_number(labels['seconds_per_image_batch_1'], 4)} s (batch 1)"
        )
        post = inference.get("postprocess", {})
        post_text = (
            f"{post.get('type')} {_number(post['seconds_per_image'], 3)} s (CPU)"
            if "seconds_per_image" in post
            else f"{post.get('type')}: {post.get('error', 'none')[:60]}"
        )
        lines.append(
            f"per image: pseudo labels {per_image}; evaluation "
            f"{_number(inference['evaluation']['seconds_per_image'], 4)} s; {post_text}"
        )
    lines.extend(_estimate_lines(record.get("full_run_estimate", {})))
    if record.get("kind") == "gpu_check_smoke":
        lines.append(
            "(smoke: tiny networks and images on the CPU; the numbers only show that the script runs)"
        )
    return "\n".join(lines)


def _estimate_lines(estimate: dict[str, Any]) -> list[str]:
    if "missing" in estimate:
        return [f"full-run estimate: not made, missing {'; '.join(estimate['missing'])}"]
    low, high = estimate["total_hours"]
    lines = [f"full {estimate['recipe']} run on one GPU: {_span(low, high, 1)} hours"]
    for name, (a, b) in estimate["seconds"].items():
        lines.append(f"  {name.replace('_', ' ')}: {_span(a / 3600, b / 3600, 2)} h")
    if "cross_training_compiled_seconds" in estimate:
        hours = estimate["cross_training_compiled_seconds"] / 3600
        lines.append(f"  cross training with experiment.compile = true: {hours:.2f} h")
    loader = estimate.get("loader")
    if loader:
        bound = [stage for stage, value in loader["loader_bound"].items() if value]
        lines.append(
            f"  loaders ({loader['workers']} workers) could feed about "
            f"{loader['cross_training_iterations_per_second']} PCT / "
            f"{loader['retraining_iterations_per_second']} retraining it/s"
            + (f": loader-bound in {', '.join(bound)}" if bound else "")
        )
    return lines


def _span(low: float, high: float, digits: int) -> str:
    low_text, high_text = f"{low:.{digits}f}", f"{high:.{digits}f}"
    return low_text if low_text == high_text else f"{low_text} to {high_text}"


def _number(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", type=Path, required=True, help="the folder the phases wrote")
    parser.add_argument("--step-speed", type=Path, required=True, help="step_speed.py's record")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kind", default="gpu_check")
    parser.add_argument("--merge", action="store_true", help="keep phases of --out that were not rerun")
    arguments = parser.parse_args()
    earlier = read_json(arguments.out) if arguments.merge else None
    record = collect(arguments.phases, arguments.step_speed, earlier)
    record["kind"] = arguments.kind
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
