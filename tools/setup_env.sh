#!/usr/bin/env bash
# Build the DR1Mask environment in .venv/ from nothing; the one set-up step behind
# `make quickstart` and `make test`. Idempotent: a second run checks a stamp and does no work.
#
# Environment variables:
#   PYTHON=python3            interpreter used to create .venv
#   DR1MASK_KEEP_TORCH=1      keep the torch already installed in .venv (e.g. your CUDA build)
#                             instead of installing the pinned CPU torch
#   DR1MASK_WHEEL_CACHE=DIR   where the mmcv wheel built from source is cached
#                             (default ~/.cache/dr1mask/wheels; outside the clone so every
#                             clone on the machine reuses it)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_PIN="torch==2.13.0"
MMCV_VERSION="2.1.0"
WHEEL_CACHE="${DR1MASK_WHEEL_CACHE:-$HOME/.cache/dr1mask/wheels}"
STAMP="$VENV/.dr1mask-setup"

step=""
say() { printf '[setup] %s\n' "$*"; }
run_step() { step="$1"; say "$1"; }
trap 'say "FAILED during: ${step:-start} (see the output above)"; exit 1' ERR

stamp_of() {
    cat requirements.txt tools/setup_env.sh pyproject.toml | sha256sum | cut -d' ' -f1
    printf 'keep_torch=%s\n' "${DR1MASK_KEEP_TORCH:-0}"
}

if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_of)" ]]; then
    say "environment in .venv is up to date with requirements.txt: nothing to do"
    exit 0
fi

run_step "1/6 virtual environment at .venv"
if [[ ! -x "$PY" ]]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }
# mmcv 2.1.0's setup.py imports pkg_resources, removed in setuptools 82; torch 2.13 needs >= 77.0.3.
pip install -q "setuptools>=77.0.3,<82" wheel

run_step "2/6 torch"
if [[ "${DR1MASK_KEEP_TORCH:-0}" == "1" ]]; then
    if ! "$PY" -c "import torch" 2>/dev/null; then
        say "DR1MASK_KEEP_TORCH=1 but .venv has no torch: install your build first, e.g."
        say "  $PY -m pip install torch==<version> --index-url https://download.pytorch.org/whl/cu121"
        false
    fi
else
    pip install -q "$TORCH_PIN"
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)")
say "using torch $TORCH_VERSION"

run_step "3/6 mmcv $MMCV_VERSION (ops compiled against torch $TORCH_VERSION)"
# One cache folder per torch build: compiled ops are ABI-bound to the torch they were built with.
MMCV_CACHE="$WHEEL_CACHE/torch-$TORCH_VERSION"
mkdir -p "$MMCV_CACHE"
if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
    say "mmcv $MMCV_VERSION with ops already installed"
else
    if ! ls "$MMCV_CACHE"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        say "no cached wheel in $MMCV_CACHE: building mmcv from source (about 20 minutes on 2 cores)"
        # ninja compiles MAX_JOBS files at once (without it the build is serial). -g0 comes after
        # Python's own `-g` in the compiler line and drops debug information, which the wheel
        # does not need; the optimisation level (-O3) is unchanged.
        pip install -q ninja
        CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" MMCV_WITH_OPS=1 \
            MAX_JOBS="${MAX_JOBS:-$(nproc)}" PATH="$VENV/bin:$PATH" \
            pip wheel --no-deps --no-build-isolation "mmcv==$MMCV_VERSION" -w "$MMCV_CACHE"
    else
        say "reusing the cached wheel in $MMCV_CACHE"
    fi
    pip install -q --no-deps "$MMCV_CACHE"/mmcv-"$MMCV_VERSION"-*.whl
fi

run_step "4/6 pinned packages from requirements.txt"
pip install -q --no-deps -r requirements.txt
# panopticapi-lite's metadata pins numpy<2 although it runs on numpy 2.
pip install -q --no-deps panopticapi-lite==0.2.0

run_step "5/6 this repository, editable (import projects.dr1mask from anywhere)"
pip install -q --no-deps --no-build-isolation -e "$ROOT"

run_step "6/6 checking the stack imports"
"$PY" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmengine, panopticapi, pycocotools, torch
import projects.dr1mask
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}')
EOF
stamp_of > "$STAMP"
say "done: environment ready in .venv"
