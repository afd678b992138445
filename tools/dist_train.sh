#!/usr/bin/env bash
# Multi-GPU (and multi-node) training with torchrun.
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8
#
# GPUS is the number of processes on this node. The batch size in the
# configs is per GPU: with N GPUs set train_dataloader.batch_size=32/N to
# keep the recipe's total batch of 32.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py args...]" >&2
    exit 1
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
# 0 stops torchrun with a bare AssertionError; an option here means GPUS
# was left out
if [[ "$GPUS" =~ ^0*$ || "$GPUS" == -* ]]; then
    echo "$0: GPUS (the 2nd argument) must be the number of processes" \
        "on this node, an integer >= 1 (or a torchrun keyword such as" \
        "auto); got '$GPUS'. Usage: $0 CONFIG GPUS [tools/train.py args...]" >&2
    exit 1
fi

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
