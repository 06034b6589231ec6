"""Run one of MMDetection's own tool scripts with this repository importable.

Our ``tools/train.py`` and ``tools/test.py`` are mmdet 3.3.0's scripts, run
unchanged (same arguments, same behaviour), with the repository root on
``sys.path`` so that configs' ``custom_imports=['projects.dr1mask']`` resolve
from any working directory.
"""
import os.path as osp
import runpy
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_mmdet_tool(name: str) -> None:
    """Execute ``mmdet/.mim/tools/<name>`` as ``__main__``."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import mmdet
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.isfile(script):
        raise FileNotFoundError(
            f'{script} is missing: reinstall mmdet==3.3.0 from its wheel, '
            'which ships the tools under mmdet/.mim/tools')
    sys.argv[0] = script
    runpy.run_path(script, run_name='__main__')
