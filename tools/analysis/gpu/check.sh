#!/usr/bin/env bash
# One prepared GPU session, run from the repo root on a CUDA machine: the
# CUDA tests, the benchmark at the paper's settings (RN101 @ 448 px, batch
# 32, random weights) in fp32 and with the mixed-precision tower options,
# the data paths (CPU per core and the GPU decode + augmentation path), the
# epoch mode with the exact recipe's augmentation (uncached, on the device
# path) against the feature cache, the towers compiled (CUDA graphs),
# cached training runs sharing the GPU and the towers of every CLIP family.
# Everything is written under $OUT (default work_dirs/gpu_check); copy the
# tables into docs/benchmarks.md section 5 with the device name and this
# command.
#
# Without the OpenMMLab packages (the GPU machine's image), first run
# tools/analysis/gpu/fetch_wheels.sh on a machine with the registry and
# carry `.whl`; this script installs them into /tmp/site.
#
# PARTS names the parts, run in the order given (default:
# "tests compiled shared epoch data steps", about 14 min on one H100/H200: the
# CUDA tests first, they take seconds; further parts: epoch_decode,
# epoch_cpu, towers). BUDGET (seconds, optional) is the time the whole
# script may take: each part's time limit is cut to what is left, and a
# part is skipped when less than a minute is left, so that a lent machine
# with a fixed time returns every part that fits, most important first
# (where one command may run at most N seconds, set BUDGET below N: a
# command killed from outside loses the part it was in and every later
# one). Each part's output is $OUT/<name>.md (the CUDA tests':
# pytest_cuda.txt), its last line saying so if it failed or timed out;
# the skipped parts are listed in $OUT/skipped.txt.
# EPOCH_IMAGES (default 1024) sets the epoch parts' train images, and
# their time limit with them (on an H200 the epoch part took 63 s with 512
# images and did not finish in 240 s with 2048: the images are generated,
# cached twice and run through two methods).
set -uo pipefail
OUT=${OUT:-work_dirs/gpu_check}
KNOWN_PARTS="tests compiled shared epoch data steps epoch_decode epoch_cpu towers"
PARTS=${PARTS:-tests compiled shared epoch data steps}
PY=${PYTHON:-python3}
EPOCH_IMAGES=${EPOCH_IMAGES:-1024}
# the variables, checked before any part spends the lent machine's time
for part in $PARTS; do
    case " $KNOWN_PARTS " in
    *" $part "*) ;;
    *) echo "[check.sh] PARTS: unknown part '$part' (parts: $KNOWN_PARTS)" >&2
       exit 2 ;;
    esac
done
for var in BUDGET EPOCH_IMAGES; do
    value=${!var:-}
    if [ -n "$value" ] && ! [[ $value =~ ^[1-9][0-9]{0,6}$ ]]; then
        echo "[check.sh] $var=$value: must be a whole number > 0 (seconds for BUDGET, images for EPOCH_IMAGES)" >&2
        exit 2
    fi
done
EPOCH_LIMIT=$((90 + EPOCH_IMAGES / 4))
# the compiled part's --compile: inductor's CUDA graphs where Triton
# imports, else torch's cudagraphs backend (CUDA graphs alone)
COMPILE=${COMPILE:-$($PY -c 'import triton' 2>/dev/null && echo reduce-overhead || echo cudagraphs)}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! $PY -c 'import mmpretrain, open_clip' 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c 'import torch, mmcoop, mmpretrain, open_clip; print("torch", torch.__version__, "|", torch.cuda.get_device_name())' \
    2>&1 | tee "$OUT/env.txt" || exit 1
echo "compiled part: --compile $COMPILE" | tee -a "$OUT/env.txt"
if [[ " $PARTS " == *" compiled "* ]]; then  # the benchmark's own check
    $PY -c 'import runpy, sys
bench = runpy.run_path("tools/analysis/benchmark.py")
bench["_check_compile"](bench["parse_args"](["--compile", sys.argv[1]]))' \
        "$COMPILE" || { echo "[check.sh] COMPILE=$COMPILE refused" >&2; exit 2; }
fi
status=0
limit_for() {  # the part's own limit, cut to what BUDGET leaves
    local limit=$1
    if [ -n "${BUDGET:-}" ]; then
        local left=$((BUDGET - ($(date +%s) - START) - 5))
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "$limit"
}
run_limited() {  # name, limit (s), log file, command...
    # the command's output shown and written to the log file; a part
    # skipped leaves the log of an earlier run as it was, and a part that
    # fails or times out says so at the end of its log
    local name=$1 log=$3 limit rc
    limit=$(limit_for "$2")
    shift 3
    if [ "$limit" -lt 60 ]; then
        echo "[check.sh] $name skipped: ${limit}s left of BUDGET" | tee -a "$OUT/skipped.txt"
        return
    fi
    {
        echo "[check.sh] $name (limit ${limit}s, at $(($(date +%s) - START))s)"
        timeout "$limit" "$@"
    } 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        status=1
        if [ "$rc" -eq 124 ]; then
            echo "[check.sh] $name timed out after ${limit}s" | tee -a "$log"
        else
            echo "[check.sh] $name failed (exit code $rc)" | tee -a "$log"
        fi
    fi
}
bench() {  # name, limit (s), benchmark arguments
    local name=$1 limit=$2
    shift 2
    # --force: a rerun replaces this script's own results under $OUT;
    # $PY unquoted: PYTHON may carry options (e.g. "python3 -X dev")
    # shellcheck disable=SC2086
    run_limited "$name" "$limit" "$OUT/$name.md" $PY \
        tools/analysis/benchmark.py --device cuda --force \
        --json "$OUT/$name.json" "$@"
}
for part in $PARTS; do
    case $part in
    tests)
        # shellcheck disable=SC2086
        run_limited tests 180 "$OUT/pytest_cuda.txt" $PY -m pytest \
            tests/test_performance/test_cuda.py -q -rs -p no:cacheprovider ;;
    steps)
        # COCO (C = 80) only, to fit one call of a lent machine; add `20`
        # for VOC
        bench steps_amp 120 --mode steps amp --iters 10 --warmup 3 \
            --methods positivecoop --num-classes 80 --autocast bf16 \
            --channels-last --amp-batch-size 32
        bench steps_fp32 270 --mode text steps --iters 10 --warmup 3 \
            --methods positivecoop dualcoop baseline --num-classes 80 ;;
    compiled)
        # the towers' compile=dict(mode='reduce-overhead') (CUDA graphs;
        # COMPILE above),
        # bf16: first the text tower's forward + backward against the eager
        # truncated one (one graph to compile: about a minute), then the
        # steps with both towers compiled (T2: the cached step, launch-bound
        # in eager mode; every path's graphs compile first: minutes), each
        # call writing its own results
        bench compiled_text 150 --mode text --iters 10 --warmup 3 \
            --methods positivecoop dualcoop --num-classes 80 --autocast bf16 \
            --compile "$COMPILE"
        bench compiled_steps 330 --mode steps --iters 10 --warmup 3 \
            --methods positivecoop --num-classes 80 --autocast bf16 \
            --channels-last --compile "$COMPILE" ;;
    shared)
        # 1, 2, 4 and 8 processes, each training its own cached PositiveCoOp
        # at once on the one GPU (what `tools/sweep.py --jobs` gains there:
        # the cached step is latency-bound); about a minute
        bench shared 150 --mode shared --methods positivecoop --num-classes 80 \
            --shared-procs 1 2 4 8 --shared-rounds 2 --iters 30 --warmup 5 \
            --autocast bf16 ;;
    data)
        # the configs' (tensor) path per core on the CPU against the
        # official one, the CPU side of data_path=device (decode + resize +
        # draw) and of device-decode (bytes: read + draw) per core, and
        # the GPU decode + augmentation
        bench data 180 --mode data --data-images 256 \
            --data-pipelines official tensor device bytes \
            --data-cores 1 4 8 --data-rounds 2 --batch-size 32 ;;
    epoch)
        # an uncached epoch with the exact recipe's augmentation vs the
        # cache, on data_path=device (the workers decode and resize, the
        # GPU augments); `device-decode` for the GPU's decode
        bench epoch "$EPOCH_LIMIT" --mode epoch --workers 8 --epoch-images "$EPOCH_IMAGES" \
            --epoch-resolution 448 --batch-size 32 --epoch-pipeline device \
            --autocast bf16 --channels-last ;;
    epoch_decode)
        # the same with data_path=device-decode (the GPU also decodes)
        bench epoch_decode "$EPOCH_LIMIT" --mode epoch --workers 8 \
            --epoch-images "$EPOCH_IMAGES" --epoch-resolution 448 \
            --batch-size 32 --epoch-pipeline device-decode --autocast bf16 \
            --channels-last ;;
    epoch_cpu)
        # the same with the configs' CPU tensor path
        bench epoch_cpu "$EPOCH_LIMIT" --mode epoch --workers 8 --epoch-images "$EPOCH_IMAGES" \
            --epoch-resolution 448 --batch-size 32 --epoch-pipeline tensor \
            --autocast bf16 --channels-last ;;
    towers)
        # the frozen towers of every CLIP family (about 5 min)
        bench towers 540 --mode towers --iters 5 --warmup 2 --autocast bf16 ;;
    *)
        echo "[check.sh] unknown part '$part' (parts: $KNOWN_PARTS)" >&2
        status=1 ;;
    esac
done
echo "[check.sh] done in $(($(date +%s) - START))s"
exit $status
