"""Run one of MMDetection's own tool scripts, with the stack fixes this
project's tools need, each explicit and applied here only.

Our ``tools/train.py`` and ``tools/test.py`` are mmdet 3.3.0's scripts, run
unchanged (same arguments, same behaviour), after:

1. ``projects.dr1mask.engine.safe_checkpoints``: torch's ``weights_only`` loading
   reads the checkpoints mmengine's runner writes (for any config; the
   project's configs import it themselves too).
2. For ``train.py`` and ``test.py``: the panoptic datasets' json is
   checked before anything is built
   (``projects.dr1mask.datasets.dataset_check.check_panoptic_annotations``). mmdet
   fails on an unknown category or a category without ``isthing`` while it
   builds the dataset, with a bare ``KeyError`` and before any hook runs;
   this raises the dataset checker's lines instead.
3. On a machine without a GPU, with ``--launcher pytorch``: mmengine would
   call ``torch.cuda.set_device`` and give DDP the rank's device id, both of
   which fail on a CPU-only torch. The gloo process group is started here
   (the runner then skips its own), and DDP gets no device ids through the
   config (``model_wrapper_cfg``). With a GPU nothing changes.
"""
import os.path as osp
import runpy
import sys
from typing import List, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

import projects.dr1mask.engine.safe_checkpoints  # noqa: F401  (see above)
from projects.dr1mask.datasets.dataset_check import (check_config_datasets,
                                            raise_dataset_problems)

# Without a GPU, DDP wraps the model with no device ids.
CPU_DDP_OPTIONS = [
    'model_wrapper_cfg.type=MMDistributedDataParallel',
    'model_wrapper_cfg.device_ids=None'
]


def with_cfg_options(argv: List[str], options: List[str]) -> List[str]:
    """``argv`` with ``options`` first in its ``--cfg-options`` (mmdet's
    scripts keep only the last ``--cfg-options``; the user's own options
    come after ours and override them)."""
    if '--cfg-options' in argv:
        at = argv.index('--cfg-options') + 1
        return argv[:at] + options + argv[at:]
    return argv + ['--cfg-options', *options]


def start_cpu_process_group(argv: List[str]) -> List[str]:
    """For ``--launcher pytorch`` without a GPU: the gloo process group,
    and ``argv`` with DDP's device ids cleared. Otherwise ``argv`` as is."""
    launcher = argv[argv.index('--launcher') + 1] \
        if '--launcher' in argv[:-1] else None
    if launcher != 'pytorch' or torch.cuda.is_available():
        return argv
    if not torch_dist.is_initialized():
        # rank, world size and address come from the launcher's environment
        torch_dist.init_process_group(backend='gloo')
    return with_cfg_options(argv, CPU_DDP_OPTIONS)


def run_mmdet_tool(name: str) -> None:
    """Execute ``mmdet/.mim/tools/<name>`` as ``__main__``."""
    import mmdet
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.isfile(script):
        raise FileNotFoundError(
            f'{script} is missing: reinstall mmdet==3.3.0 from its wheel, '
            'which ships the tools under mmdet/.mim/tools')
    sys.argv = [script, *sys.argv[1:]]
    if name in CHECKED_LOADERS:
        check_annotations(script, CHECKED_LOADERS[name])
    sys.argv = [script, *start_cpu_process_group(sys.argv[1:])]
    runpy.run_path(script, run_name='__main__')


# The dataloaders each tool builds.
CHECKED_LOADERS = {
    'train.py': ('train_dataloader', 'val_dataloader'),
    'test.py': ('test_dataloader', ),
}


def check_annotations(script: str, loaders: Tuple[str, ...]) -> None:
    """Raise the json-level problems of the panoptic datasets of
    ``loaders``, in the config that ``script``'s own argument parser reads
    from ``sys.argv`` (with its ``--cfg-options``)."""
    args = runpy.run_path(script, run_name='dr1mask_args')['parse_args']()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    raise_dataset_problems(
        check_config_datasets(cfg, loaders=loaders, images=False))
