#!/usr/bin/env bash
# Usage: tools/gpu_check.sh [--dry-run]
# The checks that need a GPU, on the GPUs of the machine it runs on, one line each:
#   1. torch sees a GPU and mmcv has its CUDA ops (NMS, RoIAlign)
#   2. the tests marked `cuda` (tests/test_cuda.py): GPU against CPU on the same weights,
#      forward, backward, predict, post-processing, fp16 autocast
#   3. 20 training iterations of the toy config on the GPU, with --amp
#   4. tools/dist_train.sh with 2 processes (needs 2 GPUs; reported as skipped with one)
# Each line reads "PASS|FAIL|SKIP <check>: <detail>"; the exit status is the number of failures.
# --dry-run prints the commands instead of running them and checks that what they need exists
# (run on the CPU by the test suite, so the script cannot rot where no GPU is).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
WORK=${GPU_CHECK_DIR:-work_dirs/gpu_check}
CONFIG=configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py
# 20 iterations of batch 2 on a small generated set, evaluation at the end.
TRAIN_OPTIONS=(--cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20
               train_dataloader.batch_size=2 default_hooks.checkpoint.interval=20)
failures=0

report() {  # report STATUS CHECK DETAIL
    printf '%s %s: %s\n' "$1" "$2" "$3"
    [[ "$1" == FAIL ]] && failures=$((failures + 1))
}

check() {  # check NAME COMMAND...: run it, PASS / FAIL with the last output line
    local name=$1; shift
    if (( DRY )); then
        report DRY "$name" "$*"
        return
    fi
    local log="$WORK/$name.log"
    if "$@" > "$log" 2>&1; then
        report PASS "$name" "$(tail -n 1 "$log")"
    else
        report FAIL "$name" "see $log: $(tail -n 1 "$log")"
    fi
}

mkdir -p "$WORK"
# Wiring, in both modes: the scripts exist, the config loads, the GPU tests are collected.
for needed in "$CONFIG" tests/test_cuda.py tools/train.py tools/dist_train.sh \
              tools/misc/generate_toy_panoptic.py; do
    [[ -e "$needed" ]] || report FAIL wiring "$needed is missing"
done
if collected=$("$PY" -m pytest tests/test_cuda.py -m cuda --collect-only -q \
                 -p no:cacheprovider 2>&1 | grep -c '::') && (( collected > 0 )) \
        && "$PY" -c "from mmengine.config import Config; Config.fromfile('$CONFIG')" \
            > /dev/null 2>&1; then
    report PASS wiring "$collected GPU tests collected, $CONFIG loads"
else
    report FAIL wiring "the GPU tests or $CONFIG do not load"
fi

check cuda_ops "$PY" -c "
import torch
from mmcv.ops import nms, RoIAlign
assert torch.cuda.is_available(), 'torch sees no GPU'
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], device='cuda')
nms(boxes, torch.tensor([0.9, 0.8], device='cuda'), 0.5)
RoIAlign(7, 1.0, 1, aligned=True)(torch.rand(1, 2, 16, 16, device='cuda'),
                                  torch.tensor([[0., 1., 1., 9., 9.]], device='cuda'))
print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
check cuda_tests "$PY" -m pytest tests/test_cuda.py -m cuda -q -p no:cacheprovider
check toy_data "$PY" tools/misc/generate_toy_panoptic.py "$WORK/data/toy_panoptic" \
    --num-train 8 --num-val 4
# The configs read data/toy_panoptic relative to the working directory.
check train_amp bash -c "cd '$WORK' && '$(pwd)/$PY' '$(pwd)/tools/train.py' '$(pwd)/$CONFIG' \
    --amp --work-dir train ${TRAIN_OPTIONS[*]}"
gpus=$( (( DRY )) && echo 2 || "$PY" -c "import torch; print(torch.cuda.device_count())")
if (( gpus >= 2 )); then
    check dist_train bash -c "cd '$WORK' && PYTHON='$(pwd)/$PY' '$(pwd)/tools/dist_train.sh' \
        '$(pwd)/$CONFIG' 2 --work-dir dist ${TRAIN_OPTIONS[*]}"
else
    report SKIP dist_train "$gpus GPU(s): 2 processes need 2"
fi
exit "$failures"
