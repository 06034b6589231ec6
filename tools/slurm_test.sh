#!/usr/bin/env bash
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments...]
exec "$(dirname "$0")/slurm_launch.sh" test.py "$1" "$2" "$3" "$4" --launcher=slurm "${@:5}"
