#!/usr/bin/env bash
# Multi-GPU (and multi-node) testing with torchrun.
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py args...]" >&2
    exit 1
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
# 0 stops torchrun with a bare AssertionError; an option here means GPUS
# was left out
if [[ "$GPUS" =~ ^0*$ || "$GPUS" == -* ]]; then
    echo "$0: GPUS (the 3rd argument) must be the number of processes" \
        "on this node, an integer >= 1 (or a torchrun keyword such as" \
        "auto); got '$GPUS'. Usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py args...]" >&2
    exit 1
fi

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
