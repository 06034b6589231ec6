"""Shared builders for the model tests: small configs and consistent batches."""
import zlib
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData, PixelData

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs' / 'dr1mask'
NUM_THINGS, NUM_STUFF = 4, 3

register_all_modules()
import projects.dr1mask  # noqa: E402,F401  registers DR1Mask's modules


def load_config(name: Union[str, Path]) -> Config:
    """A project config (a name in configs/dr1mask/ or a path) with no
    pretrained weights to fetch."""
    cfg = Config.fromfile(str(CONFIGS / name))
    cfg.model.backbone.init_cfg = None
    return cfg


def small_model_cfg(panoptic: bool = True, attention: str = 'vector',
                    **basis) -> Config:
    """DR1Mask from the COCO configs, shrunk for CPU tests: ResNet-18, thin
    towers, 4 thing and 3 stuff classes."""
    name = 'dr1mask_r50_fpn_1x_coco-panoptic.py' if panoptic \
        else 'dr1mask_r50_fpn_1x_coco.py'
    model = load_config(name).model
    model.backbone.depth = 18
    model.neck.in_channels = [64, 128, 256, 512]
    model.neck.out_channels = 64
    model.bbox_head.update(
        num_classes=NUM_THINGS, in_channels=64, feat_channels=64,
        stacked_convs=1, norm_cfg=dict(type='GN', num_groups=8))
    model.basis.update(in_channels=64, channels=16, **basis)
    model.mask_head.attention = attention
    model.semantic_head.update(num_things_classes=NUM_THINGS, in_channels=64,
                               feat_channels=32)
    model.test_cfg.score_thr = 0.0
    if panoptic:
        model.panoptic_head.update(num_things_classes=NUM_THINGS,
                                   num_stuff_classes=NUM_STUFF)
        model.test_cfg.panoptic.update(score_thr=0.0, stuff_area_limit=0)
    return model


def build_model(model_cfg: Config) -> torch.nn.Module:
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def seeded_weights(model: torch.nn.Module) -> None:
    """Fill every parameter and buffer from a generator seeded by its name,
    so the weights do not depend on the order modules are built in; the box
    regression is biased to boxes of a few strides, as a trained head's."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith('running_var'):
                value = 1 + 0.1 * noise.abs()
            elif tensor.dim() > 1:
                value = noise / (tensor[0].numel()**0.5)
            elif name.endswith('weight'):
                value = 1 + 0.1 * noise
            elif name == 'bbox_head.conv_reg.bias':
                value = 2 + 0.1 * noise  # boxes a few strides wide
            else:
                value = 0.1 * noise
            tensor.copy_(value)


def make_sample(img_hw: Tuple[int, int],
                boxes: Sequence[Sequence[float]],
                labels: Sequence[int],
                stuff_label: int = NUM_THINGS,
                scale: float = 1.0) -> Tuple[torch.Tensor, DetDataSample]:
    """One image with box-shaped instances on one stuff class.

    Returns the uint8 image (3, H, W) and its sample: ``gt_instances`` with
    bitmap masks and ``gt_sem_seg`` (things 0.., stuff NUM_THINGS..), as
    ``LoadPanopticAnnotations`` + ``PackDetInputs`` produce them; the image
    is said to be ``scale`` times its original size.
    """
    h, w = img_hw
    masks = np.zeros((len(boxes), h, w), dtype=np.uint8)
    sem_seg = np.full((h, w), stuff_label, dtype=np.int64)
    for i, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
        masks[i, int(y1):int(y2), int(x1):int(x2)] = 1
        sem_seg[masks[i] > 0] = label
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(h, w),
            ori_shape=(round(h / scale), round(w / scale)),
            scale_factor=(scale, scale),
            img_id=0))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        masks=BitmapMasks(masks, h, w))
    sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem_seg)[None])
    # The same spec always gives the same pixels.
    generator = torch.Generator().manual_seed(h * 10007 + w)
    image = torch.randint(
        0, 255, (3, h, w), dtype=torch.uint8, generator=generator)
    return image, sample


def preprocess(model: torch.nn.Module, images: List[torch.Tensor],
               samples: List[DetDataSample], training: bool) -> dict:
    """Run the model's data preprocessor (normalise, pad to 4)."""
    return model.data_preprocessor(
        dict(inputs=images, data_samples=samples), training)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
