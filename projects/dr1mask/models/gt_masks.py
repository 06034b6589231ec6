"""Ground-truth instance masks as tensors, without copying them.

The dense targets of the panoptic layer and the auxiliary semantic head read
the padded full-resolution masks at one pixel in ``stride x stride``
(location j of a map at that stride is pixel ``stride * j``). Converting
them to a tensor first (``BitmapMasks.to_tensor``) copies n x H x W values,
at COCO sizes more time than those losses take; a view of the bitmap's array
costs nothing, and its strided slice copies only the pixels read.
"""
import torch
from torch import Tensor

from mmdet.structures.mask import BaseInstanceMasks, BitmapMasks


def mask_tensor(masks: BaseInstanceMasks) -> Tensor:
    """(n, H, W) masks on the CPU, nonzero inside: a view of a
    ``BitmapMasks`` array (not copied; uint8 as mmdet loads them), or
    polygons rasterised to bool."""
    if isinstance(masks, BitmapMasks):
        return torch.from_numpy(masks.masks)
    return masks.to_tensor(torch.bool, 'cpu')
