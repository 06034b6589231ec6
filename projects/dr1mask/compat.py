"""Compatibility fixes for running mmengine 0.10.7 on the torch we build on.

Every fix for the stack lives here, is applied once when ``projects.dr1mask``
is imported (configs do that through ``custom_imports``, so mmdet's own
``tools/train.py`` and ``tools/test.py`` get them too), and is covered by
``tests/test_compat.py``.

1. Checkpoints. torch >= 2.6 made ``torch.load(weights_only=True)`` the
   default, and mmengine 0.10.7 calls ``torch.load`` without the argument, so
   the runner cannot load the checkpoints it wrote itself (they pickle numpy
   scalars, ``HistoryBuffer`` and the config in ``meta``). We re-register
   mmengine's loader for local paths with ``weights_only=False``. Only
   mmengine's checkpoint loading changes; every other ``torch.load`` in the
   process keeps torch's safe default. Like any pickle, load checkpoints you
   trust.
2. Distributed training without a GPU. mmengine's ``pytorch`` launcher calls
   ``torch.cuda.set_device`` and the runner wraps the model in DDP with
   ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only torch. On such a
   machine we start the process group with gloo and give DDP no device ids,
   so ``tools/dist_train.sh CONFIG N`` runs unchanged; with GPUs nothing
   changes (nccl, one device per rank).
"""
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.runner.checkpoint import CheckpointLoader

_original_init_dist_pytorch = dist_utils._init_dist_pytorch
_original_ddp_init = MMDistributedDataParallel.__init__


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's loader for local paths, pickled objects included."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def _init_dist_pytorch(backend: str = 'nccl',
                       init_backend: str = 'torch',
                       **kwargs) -> None:
    if torch.cuda.is_available():
        _original_init_dist_pytorch(backend, init_backend=init_backend,
                                    **kwargs)
    else:
        # rank and world size come from the launcher's environment variables.
        torch_dist.init_process_group(backend='gloo', **kwargs)


def _ddp_init(self, module, detect_anomalous_params: bool = False,
              **kwargs) -> None:
    on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
    if on_cpu and kwargs.get('device_ids'):
        # DDP accepts device ids only for modules on a single GPU.
        kwargs['device_ids'] = None
    _original_ddp_init(self, module, detect_anomalous_params, **kwargs)


def apply() -> None:
    """Install the fixes; safe to call more than once."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    dist_utils._init_dist_pytorch = _init_dist_pytorch
    MMDistributedDataParallel.__init__ = _ddp_init
