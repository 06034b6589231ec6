"""MMDetection's `tools/test.py`, run unchanged after this project's stack
fixes (see _mmdet_tool)."""
from _mmdet_tool import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('test.py')
