"""What the benchmark tools share: the compared models, how they are built,
and how a process's peak memory is read on the CPU.

The models are R-50 with random, seeded weights, built from their configs:
DR1Mask's own (``configs/dr1mask``) and mmdet's (installed with mmdet under
``.mim/configs``). ``import projects.dr1mask`` registers DR1Mask's modules:
run the tools with the repository importable (installed, or on
``PYTHONPATH``).
"""
import argparse
import ctypes
import os
import os.path as osp
import re
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

import mmdet
import projects.dr1mask  # noqa: F401  registers DR1Mask's modules
from mmdet.registry import MODELS

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
CONFIGS = {
    'dr1mask_panoptic':
    osp.join(REPO, 'configs/dr1mask/dr1mask_r50_fpn_1x_coco-panoptic.py'),
    'dr1mask_instance':
    osp.join(REPO, 'configs/dr1mask/dr1mask_r50_fpn_1x_coco.py'),
    'panoptic_fpn':
    osp.join(MMDET_CONFIGS, 'panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'),
    'condinst':
    osp.join(MMDET_CONFIGS,
             'condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py'),
    'fcos':
    osp.join(
        MMDET_CONFIGS, 'fcos/fcos_r50_fpn_gn-head-center-normbbox-'
        'centeronreg-giou_8xb8-amp-lsj-200e_coco.py'),
    'mask2former':
    osp.join(MMDET_CONFIGS,
             'mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'),
}
TITLES = {
    'fcos': 'FCOS',
    'condinst': 'CondInst',
    'panoptic_fpn': 'Panoptic-FPN',
    'mask2former': 'Mask2Former',
    'dr1mask_instance': 'DR1Mask inst',
    'dr1mask_panoptic': 'DR1Mask pan',
}


def parse_size(text: str) -> Tuple[int, int]:
    """``'HxW'`` as ``(H, W)``, for argparse."""
    match = re.fullmatch(r'([1-9]\d*)x([1-9]\d*)', text)
    if not match:
        raise argparse.ArgumentTypeError(f'{text!r} is not HxW')
    return int(match.group(1)), int(match.group(2))


def ratio_cell(by_model: Dict[str, dict], num: str, den: str, field: str,
               bound: float) -> str:
    """``'<ratio> met'`` or ``'<ratio> MISSED'``: ``field`` of model ``num``
    over that of ``den`` against ``bound``; ``'n/a'`` where one is not
    measured."""
    if num not in by_model or den not in by_model:
        return 'n/a'
    ratio = by_model[num][field] / by_model[den][field]
    return f'{ratio:.2f} {"met" if ratio <= bound else "MISSED"}'


def load_config(name: str) -> Config:
    """The config of model ``name`` (a key of ``CONFIGS``), with no
    pretrained weights to download."""
    cfg = Config.fromfile(CONFIGS[name])
    cfg.model.backbone.init_cfg = None
    return cfg


def build_model(cfg: Config, device: torch.device) -> nn.Module:
    """``cfg.model`` with random weights, seeded so that every build (and
    every process) gets the same ones: they decide which detections survive
    and which proposals are sampled, so unseeded runs would time different
    work."""
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device)


class ProcessMemory:
    """The growth of this process's peak resident set over a baseline, on
    Linux.

    :meth:`reset` returns freed heap memory to the kernel (glibc's
    ``malloc_trim``), takes the resident set as the baseline and resets the
    kernel's high-water mark to it (``/proc/self/clear_refs``);
    :meth:`peak_growth_mb` is the high-water mark since, minus the
    baseline. So it counts what the code run in between touches at its
    peak (activations, gradients, optimizer state, outputs, and what the
    allocator keeps of them), not what was resident before (libraries,
    weights, inputs).
    """

    def __init__(self) -> None:
        self.libc = ctypes.CDLL('libc.so.6')
        self.baseline_kb = 0

    @staticmethod
    def status_kb(key: str) -> int:
        """A ``/proc/self/status`` field, in kB (``VmRSS``, ``VmHWM``)."""
        with open('/proc/self/status') as f:
            return int(re.search(rf'{key}:\s+(\d+)', f.read()).group(1))

    def reset(self) -> None:
        self.libc.malloc_trim(0)
        self.baseline_kb = self.status_kb('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current resident set

    def peak_growth_mb(self) -> float:
        return (self.status_kb('VmHWM') - self.baseline_kb) / 1024

    def peak_mb(self) -> float:
        """The high-water mark itself (baseline included)."""
        return self.status_kb('VmHWM') / 1024


def write_text(path: Optional[str], text: str) -> None:
    """Write ``text`` to ``path`` (folders created), if a path is given."""
    if path:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
