#!/usr/bin/env bash
# Usage: tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT arguments...]
# Starts NUM_PROCS ranks of tools/SCRIPT with torch.distributed.run, reading MMDetection's
# environment variables NNODES, NODE_RANK, PORT, MASTER_ADDR. On a machine without a GPU the
# ranks use gloo on the CPU (tools/_mmdet_tool.py); with GPUs, nccl as usual.
TOOLS=$(dirname "$0")
SCRIPT=$1
NPROCS=$2
PYTHON=${PYTHON:-$(if [ -x "$TOOLS/../.venv/bin/python" ]; then echo "$TOOLS/../.venv/bin/python"; else echo python; fi)}

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" \
    --master_port="${PORT:-29500}" \
    "$TOOLS/$SCRIPT" "${@:3}"
