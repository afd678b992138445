#!/usr/bin/env bash
# One prepared GPU session, run from the repo root on a CUDA machine (about
# 8-10 min on one H100/H200): the CUDA tests, then the benchmark at the
# paper's settings (RN101 @ 448 px, batch 32, random weights) in fp32 and
# with the mixed-precision tower options, the data paths (CPU per core and
# the GPU decode + augmentation path), then the epoch mode with the exact
# recipe's augmentation (uncached, on the device path) and the feature
# cache. Everything is
# written under $OUT (default work_dirs/gpu_check); copy the tables into
# docs/benchmarks.md section 5 with the device name and this command.
#
# Without the OpenMMLab packages (the GPU machine's image), first run
# tools/analysis/gpu/fetch_wheels.sh on a machine with the registry and
# carry `.whl`; this script installs them into /tmp/site.
#
# PARTS selects what runs (default: tests steps data epoch, ~10 min); for
# machines lent with a 10-minute limit per command run `PARTS="tests steps"`
# then `PARTS="data epoch"`; `epoch_cpu` and `towers` are extra parts.
set -uo pipefail
OUT=${OUT:-work_dirs/gpu_check}
PARTS=${PARTS:-tests steps data epoch}
part() { [[ " $PARTS " == *" $1 "* ]]; }
PY=${PYTHON:-python3}
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
status=0
part tests && { $PY -m pytest tests/test_performance/test_cuda.py -q -rs \
    -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.txt" || status=1; }
bench() {  # name, timeout (s), benchmark arguments
    local name=$1 limit=$2
    shift 2
    # --force: a rerun replaces this script's own results under $OUT
    timeout "$limit" $PY tools/analysis/benchmark.py --device cuda --force \
        --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.md" || status=1
}
# COCO (C = 80) only, to fit one call of a lent machine; add `20` for VOC
part steps && bench steps_fp32 270 --mode text steps --iters 10 --warmup 3 \
    --methods positivecoop dualcoop baseline --num-classes 80
part steps && bench steps_amp 120 --mode steps amp --iters 10 --warmup 3 \
    --methods positivecoop --num-classes 80 --autocast bf16 --channels-last \
    --amp-batch-size 32
# the data paths: the configs' (tensor) per core on the CPU against the
# official one, the device path's CPU side (bytes: read + draw) per core,
# and the GPU decode + augmentation
part data && bench data 150 --mode data --data-images 256 \
    --data-pipelines official tensor bytes \
    --data-cores 1 4 8 --data-rounds 2 --batch-size 32
# an uncached epoch with the exact recipe's augmentation vs the cache: on
# the device path (workers read the files, the GPU decodes and augments);
# `PARTS=epoch_cpu` runs the same with the configs' CPU tensor path
part epoch && bench epoch 240 --mode epoch --workers 8 --epoch-images 512 \
    --epoch-resolution 448 --batch-size 32 --epoch-pipeline device \
    --autocast bf16 --channels-last
part epoch_cpu && bench epoch_cpu 240 --mode epoch --workers 8 \
    --epoch-images 512 --epoch-resolution 448 --batch-size 32 \
    --epoch-pipeline tensor --autocast bf16 --channels-last
# the frozen towers of every CLIP family (not in the default PARTS: about
# 5 min; run `PARTS=towers` on its own)
part towers && bench towers 540 --mode towers --iters 5 --warmup 2 \
    --autocast bf16
exit $status
