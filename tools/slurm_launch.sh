#!/usr/bin/env bash
# Usage: tools/slurm_launch.sh SCRIPT PARTITION JOB_NAME [SCRIPT arguments...]
# Runs tools/SCRIPT as GPUS slurm tasks through srun, reading MMDetection's environment
# variables GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5) and SRUN_ARGS (extra srun
# options, split on spaces). Each task finds its rank from slurm (--launcher slurm).
set -x
TOOLS=$(dirname "$0")
SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-$(if [ -x "$TOOLS/../.venv/bin/python" ]; then echo "$TOOLS/../.venv/bin/python"; else echo python; fi)}

# SRUN_ARGS is unquoted on purpose: it holds several options.
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$TOOLS/$SCRIPT" "${@:4}"
