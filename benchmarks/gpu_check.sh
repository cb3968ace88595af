#!/usr/bin/env bash
# GPU check for pctkit, at most 10 minutes on one H200 (run it whenever a GPU machine is
# available and commit the JSON files it writes to benchmarks/results/).
#
# The VOC-shaped PCT step (DeepLabv3+ on ResNet-101, output stride 8, crop 384, 5 strong
# + 5 weak images, 21 classes) on generated tensors, through the engine's own loop:
#   1. iterations/s and peak memory for fp32, bf16, bf16 + channels_last;
#   2. benchmarks/step_speed.py on the same network (pctkit vs hand-written PyTorch,
#      PCT step vs supervised step);
#   3. a 2-process DDP step (NCCL) if two GPUs exist, 5 + 5 images per GPU;
#   4. bf16 + channels_last + torch.compile (last: compiling takes the longest).
# Every phase has its own time limit; a phase that fails or runs out of time is
# recorded and the next one runs.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results
#   benchmarks/gpu_check.sh --smoke [OUT_DIR]  # tiny sizes on the CPU: checks the script
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
    SMOKE=1
    shift
fi
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
SCRIPT=$(mktemp --suffix=.py)
trap 'rm -f "$SCRIPT"' EXIT

cat > "$SCRIPT" <<'PYTHON'
"""The Python part of gpu_check.sh: the engine's PCT step under each numeric setting."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, "benchmarks")
import step_speed  # the benchmark's batch, network and engine arm

from pctkit.components.losses import class_aware_cross_entropy, max_pool_soft_margin
from pctkit.engine.cross_training import Batch, PCTWeights, StepResult, pct_step
from pctkit.engine.distributed import current_world, init_distributed, shutdown
from pctkit.engine.dynamic_evaluation import DynamicEvaluation

SMOKE_MODEL = {
    "backbone": {"type": "timm", "model_name": "test_resnet", "out_indices": [1, 3], "output_stride": 8},
    "head": {"type": "deeplabv3plus", "channels": 16, "shortcut_channels": 8},
    "num_classes": 5,
    "size": 64,
    "strong": 2,
    "weak": 2,
}


step_speed.MODELS["smoke"] = SMOKE_MODEL


def measure(config: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Iterations/s and peak memory of the PCT step under one config."""
    precision = "bf16" if "bf16" in config else "fp32"
    channels_last = "cl" in config.split("+")
    compiled = "compile" in config
    model = "smoke" if args.smoke else "voc"
    spec = step_speed.MODELS[model]
    setting = step_speed.Setting(
        model=model,
        device=device,
        precision=precision,
        channels_last=channels_last,
        size=spec["size"],
        strong=spec["strong"],
        weak=spec["weak"],
        num_classes=spec["num_classes"],
        rounds=args.rounds,
        block=args.block,
        loader_iterations=0,
        loader_workers=(),
    )
    world = current_world()
    nets: dict[str, nn.Module] = {}
    for role in ("hybrid", "pseudo"):
        net = step_speed.new_net(setting)
        if world.distributed:
            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if compiled:
            net = torch.compile(net)  # type: ignore[assignment]
        nets[role] = net
    batch = step_speed.make_batch(setting, seed=world.rank)
    evaluation = DynamicEvaluation(setting.num_classes)
    weights = PCTWeights()
    segmentation, classification = class_aware_cross_entropy(), max_pool_soft_margin()

    def compute(micro_batch: Batch, micro_index: int) -> StepResult:
        return pct_step(
            nets["hybrid"], nets["pseudo"], micro_batch, evaluation, segmentation, classification, weights
        )

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as folder:
        arm = step_speed.EngineArm(
            "cross_training", nets, compute, batch, setting, {"dynamic_evaluation": evaluation}, Path(folder)
        )
        started = time.perf_counter()
        arm.run_block()  # warm-up: cuDNN autotuning, allocator, compilation
        warmup = time.perf_counter() - started
        seconds = [arm.run_block() for _ in range(args.rounds)]
    per_iteration = sorted(seconds)[len(seconds) // 2]
    result: dict[str, Any] = {
        "config": config,
        "iterations_per_second": 1.0 / per_iteration,
        "images_per_second_per_worker": (setting.strong + setting.weak) / per_iteration,
        "seconds_per_iteration": seconds,
        "warmup_seconds": warmup,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else "n/a"
        ),
        "workers": world.world_size,
    }
    nets.clear()  # free the memory before the next config
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="fp32,bf16,bf16+cl")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=6)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    device_type = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    world = init_distributed(device_type)
    device = torch.device("cuda", world.local_rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    for config in args.configs.split(","):
        try:
            results.append(measure(config, args, device))
        except Exception as error:  # record and go on: one failing config must not hide the rest
            results.append({"config": config, "error": f"{type(error).__name__}: {error}"})
        if world.is_main:
            print(json.dumps(results[-1]), flush=True)
    if world.is_main:
        record = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "model": "smoke (test_resnet + small DeepLabv3+)" if args.smoke else step_speed.MODELS["voc"],
            "workers": world.world_size,
            "results": results,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": os.uname().nodename,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    shutdown()


if __name__ == "__main__":
    main()
PYTHON

phase() {  # phase NAME SECONDS COMMAND...: run with a time limit, report, never abort the script
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local status=$?
    echo "== $name: exit $status after $((SECONDS - started)) s"
    [ "$status" -eq 0 ] || echo "{\"phase\": \"$name\", \"exit\": $status}" >> "$OUT/gpu_check_failures.jsonl"
}

if [ "$SMOKE" -eq 1 ]; then
    phase "smoke: precisions" 300 "$PYTHON" "$SCRIPT" --smoke --rounds 2 --block 2 \
        --configs fp32,bf16,bf16+cl --out "$OUT/gpu_check_smoke.json"
    phase "smoke: DDP (gloo, 2 processes)" 300 "$PYTHON" -m torch.distributed.run --standalone \
        --nproc-per-node=2 "$SCRIPT" --smoke --rounds 2 --block 2 --configs fp32 \
        --out "$OUT/gpu_check_smoke_ddp.json"
    exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $GPUS"
if [ "$GPUS" -lt 1 ]; then
    echo "no GPU: nothing to check (use --smoke to test the script on the CPU)" >&2
    exit 1
fi

phase "precisions" 180 "$PYTHON" "$SCRIPT" --configs fp32,bf16,bf16+cl --out "$OUT/gpu_check.json"
phase "step speed" 150 "$PYTHON" benchmarks/step_speed.py --model voc --device cuda --precision bf16 \
    --channels-last --rounds 5 --block 5 --threads 0 --loader-iterations 10 --loader-workers 0 4 \
    --out "$OUT/step_speed_gpu.json"
if [ "$GPUS" -ge 2 ]; then
    phase "DDP, 2 GPUs" 90 "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node=2 \
        "$SCRIPT" --configs bf16+cl --rounds 3 --out "$OUT/gpu_check_ddp.json"
else
    echo "== DDP: skipped, one GPU"
fi
phase "compile" 150 "$PYTHON" "$SCRIPT" --configs bf16+cl+compile --rounds 3 --out "$OUT/gpu_check_compile.json"
