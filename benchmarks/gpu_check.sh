#!/usr/bin/env bash
# GPU check for pctkit: at most 10 minutes on one H200. Run it whenever a GPU machine is
# available and commit the files it writes to benchmarks/results/.
#
# On generated batches, through the engine's own loop (benchmarks/gpu_check.py says how):
#   environment  GPU name and memory, torch, CUDA, cuDNN, NCCL, timm, pctkit versions;
#   precisions   recipes/voc_pct.toml's PCT step (DeepLabv3+ on resnet101s at output
#                stride 8, crop 384, 5 + 5 images, random weights): iterations/s and peak
#                memory in fp32, bf16 and bf16 + channels-last; one checkpoint write;
#   ratios       benchmarks/step_speed.py on that network in the recipe's numerics: PCT
#                step / supervised step, pctkit / hand-written PCT loop;
#   dinov2       recipes/voc_pct_dinov2.toml's PCT step (vit_base_patch14_dinov2 + DPT,
#                crop 518, 5 + 5, bf16), with and without activation checkpointing;
#   retraining   voc_pct.toml's retraining step (one net, 16 images); one checkpoint write;
#   inference    pseudo labels and evaluation per image (5 scales + flips, 375 x 500
#                images) and the dense CRF per image (CPU, where the crf extra is installed);
#   ddp          the PCT step on every GPU (5 + 5 images each), when there are 2 or more;
#   compile      the PCT step under torch.compile (last: compiling takes the longest).
# Then a summary: one JSON record, a short table, and the estimated wall time of a full
# voc_pct.toml run (20,000 PCT + 30,000 retraining iterations, validations, checkpoints,
# pseudo labels, final evaluation) on this GPU.
#
# Every phase runs as its own process under its own time limit, clipped so that the whole
# check ends within --budget seconds (default 570); a phase that fails or runs out of
# time is recorded, with the end of its output, and the next one runs. Exit status 1 if
# any phase failed.
#
#   benchmarks/gpu_check.sh [--out DIR]          # default DIR: benchmarks/results
#   benchmarks/gpu_check.sh --smoke [--out DIR]  # tiny sizes on the CPU: checks the script
#   benchmarks/gpu_check.sh --fetch-wheels       # with PyPI: see "GPU machine" below
# Options: --only PHASE,PHASE runs those phases and merges them into DIR's gpu_check.json;
# --limit PHASE=SECONDS sets a phase's time limit (e.g. --only compile --limit compile=540);
# --budget SECONDS bounds the whole check; PYTHON=... picks the interpreter (default
# .venv/bin/python, else python3).
#
# Writes DIR/gpu_check.json (everything, with the estimate), DIR/gpu_check_step_speed.json
# (step_speed.py's record) and DIR/gpu_check.log (this output); --smoke writes
# gpu_check_smoke*.* into a new temporary folder unless --out is given.
#
# GPU machine: its python3 has torch, timm and rich but not pydantic, tomli-w, or pctkit
# itself. Where pctkit does not import, the script installs the wheels in .whl/ (written
# beforehand by --fetch-wheels, on a machine with PyPI) and pctkit from this checkout into
# a temporary folder, without any index. With the device tool:
#   run(command="benchmarks/gpu_check.sh --out $OUT", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

SMOKE=0 ONLY="" OUT="" BUDGET=570 FETCH=0 FORCE_INSTALL=0
WHEELS=${GPU_CHECK_WHEELS:-.whl}
declare -A LIMITS=()
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) SMOKE=1 ;;
        --out) OUT=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --limit) LIMITS[${2%%=*}]=${2#*=}; shift ;;
        --budget) BUDGET=$2; shift ;;
        --fetch-wheels) FETCH=1 ;;
        --install-pctkit) FORCE_INSTALL=1 ;;  # install even where pctkit imports (to test it)
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (--help lists them)" >&2; exit 2 ;;
        *) OUT=$1 ;;
    esac
    shift
done
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# --------------------------------------------------------------------------- wheels
if [ "$FETCH" -eq 1 ]; then
    # The versions this checkout's environment uses, as cp312 manylinux wheels (the GPU
    # machine's Python is 3.12; GPU_CHECK_PYTHON_VERSION to change).
    # timm too: the machine's may be older than the one pctkit is tested with.
    PINS=$("$PYTHON" - pydantic pydantic-core annotated-types typing-inspection typing-extensions tomli-w timm <<'EOF'
import importlib.metadata
import sys

print(" ".join(f"{name}=={importlib.metadata.version(name)}" for name in sys.argv[1:]))
EOF
    ) || exit 1
    mkdir -p "$WHEELS"
    PLATFORMS=()
    for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        PLATFORMS+=(--platform "$platform")
    done
    # shellcheck disable=SC2086  # PINS is a list of requirements
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version "${GPU_CHECK_PYTHON_VERSION:-3.12}" "${PLATFORMS[@]}" -d "$WHEELS" $PINS || exit 1
    ls -l "$WHEELS"
    exit 0
fi

# --------------------------------------------------------------------------- output
if [ "$SMOKE" -eq 1 ]; then
    KIND=gpu_check_smoke
    OUT=${OUT:-$(mktemp -d -t gpu_check_smoke.XXXXXX)}
else
    KIND=gpu_check
    OUT=${OUT:-benchmarks/results}
fi
mkdir -p "$OUT"
exec > >(tee "$OUT/$KIND.log") 2>&1

# --------------------------------------------------------------------------- python
pctkit_imports() {
    "$PYTHON" - <<'EOF'
import pydantic, timm, tomli_w, torch  # noqa: F401
from pctkit import registry

for kind, name in (("methods", "pct"), ("backbones", "timm"), ("heads", "dpt"), ("optimizers", "sgd")):
    registry.get(kind, name)
EOF
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ "$FORCE_INSTALL" -eq 1 ] || ! pctkit_imports 2>/dev/null; then
    echo "== pctkit does not import with $PYTHON: installing it into $WORK/site (no index)"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
            --target "$WORK/site" "$WHEELS"/*.whl || exit 1
    fi
    # From a copy: building in place would leave build/ and pctkit.egg-info/ in the checkout.
    mkdir -p "$WORK/source" && cp -r pyproject.toml README.md pctkit "$WORK/source/" || exit 1
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --target "$WORK/site" "$WORK/source" || exit 1
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    if ! pctkit_imports; then
        echo "pctkit still does not import: run benchmarks/gpu_check.sh --fetch-wheels on a machine" \
            "with PyPI and carry $WHEELS along" >&2
        exit 1
    fi
fi

# --------------------------------------------------------------------------- phases
if [ "$SMOKE" -eq 1 ]; then
    OPTIONS=(--smoke --rounds 1 --block 2)
    GPUS=0
    WORKERS=2  # DDP on the CPU (gloo), as on two GPUs
else
    OPTIONS=(--rounds 3 --block 6)
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())") || GPUS=0
    WORKERS=$GPUS
    if [ "$GPUS" -lt 1 ]; then
        echo "no GPU: nothing to check (--smoke runs the script on the CPU)" >&2
        exit 1
    fi
fi
PHASES=$WORK/phases
mkdir -p "$PHASES"
DEADLINE=$BUDGET # seconds since the script started, installing included
RESERVE=20 # seconds kept for the summary
FAILED=0
echo "== $KIND: $("$PYTHON" --version 2>&1) at $PYTHON, $GPUS GPUs, budget $BUDGET s, writing to $OUT"

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

status_line() {  # NAME STATUS EXIT SECONDS LIMIT
    printf '{"phase": "%s", "status": "%s", "exit": %s, "seconds": %s, "limit": %s}\n' "$@" \
        >>"$PHASES/status.jsonl"
}

phase() {  # phase NAME SECONDS COMMAND...: run under a time limit; record; never abort the check
    local name=$1 limit=${LIMITS[$1]:-$2}
    shift 2
    wanted "$name" || return 0
    local left=$((DEADLINE - SECONDS - RESERVE))
    if [ "$left" -lt 10 ]; then
        echo "== $name: skipped, ${left} s left of the budget"
        status_line "$name" "skipped (no time left)" null 0 "$left"
        FAILED=1
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name (limit ${limit} s)"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$PHASES/$name.log"
    local code=${PIPESTATUS[0]}
    echo "== $name: exit $code after $((SECONDS - started)) s"
    status_line "$name" run "$code" "$((SECONDS - started))" "$limit"
    [ "$code" -eq 0 ] || FAILED=1
}

CHECK=(benchmarks/gpu_check.py)
phase environment 45 "$PYTHON" "${CHECK[@]}" environment "${OPTIONS[@]}" --out "$PHASES/environment.json"
phase precisions 150 "$PYTHON" "${CHECK[@]}" steps "${OPTIONS[@]}" --arms voc_fp32,voc_bf16,voc_bf16_cl \
    --checkpoint voc_bf16_cl --out "$PHASES/precisions.json"
if [ "$SMOKE" -eq 1 ]; then RATIO_OPTIONS=(--smoke --rounds 1 --block 2); else RATIO_OPTIONS=(--rounds 5 --block 6); fi
phase ratios 90 "$PYTHON" "${CHECK[@]}" ratios "${RATIO_OPTIONS[@]}" --out "$OUT/${KIND}_step_speed.json"
phase dinov2 90 "$PYTHON" "${CHECK[@]}" steps "${OPTIONS[@]}" \
    --arms dinov2_bf16_cl,dinov2_bf16_cl_checkpointing --out "$PHASES/dinov2.json"
phase retraining 60 "$PYTHON" "${CHECK[@]}" steps "${OPTIONS[@]}" --arms voc_retraining_bf16_cl \
    --checkpoint voc_retraining_bf16_cl --out "$PHASES/retraining.json"
phase inference 90 "$PYTHON" "${CHECK[@]}" inference "${OPTIONS[@]}" --out "$PHASES/inference.json"
if [ "$WORKERS" -ge 2 ]; then
    phase ddp 90 "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node="$WORKERS" \
        "${CHECK[@]}" steps "${OPTIONS[@]}" --arms voc_bf16_cl --out "$PHASES/ddp.json"
elif wanted ddp; then
    echo "== ddp: not run, one GPU"
    status_line ddp "not run (one GPU)" null 0 0
fi
phase compile 300 "$PYTHON" "${CHECK[@]}" steps "${OPTIONS[@]}" --arms voc_bf16_cl_compile \
    --out "$PHASES/compile.json"

echo "== summary"
MERGE=()
[ -n "$ONLY" ] && MERGE=(--merge)
"$PYTHON" benchmarks/gpu_check_summary.py --phases "$PHASES" --step-speed "$OUT/${KIND}_step_speed.json" \
    --out "$OUT/$KIND.json" --kind "$KIND" "${MERGE[@]}" || FAILED=1
echo "== $KIND: done in $SECONDS s"
exit "$FAILED"
