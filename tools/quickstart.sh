#!/usr/bin/env bash
# The main job on the embedded default (`make quickstart`, after the set-up step):
# generate the toy panoptic set, train panoptic DR1Mask on the CPU, evaluate it once
# (PQ and mask AP), save metrics.json and overlays under work_dirs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py
WORK_DIR=${WORK_DIR:-work_dirs/quickstart}
say() { printf '[quickstart] %s\n' "$*"; }
trap 'say "FAILED (see the output above)"' ERR

start=$(date +%s)
say "1/3 generating the toy panoptic dataset in data/toy_panoptic"
"$PY" tools/misc/generate_toy_panoptic.py data/toy_panoptic

say "2/3 training $CONFIG (the log shows the loss and the ETA)"
rm -rf "$WORK_DIR"
# Evaluation happens once, in step 3.
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
    --cfg-options train_cfg.val_interval=1000000000
trained=$(date +%s)

say "3/3 evaluating, writing metrics.json and overlays"
"$PY" tools/misc/evaluate_and_visualize.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
    --work-dir "$WORK_DIR"
say "done in $(( $(date +%s) - start )) s (training $(( trained - start )) s)"
