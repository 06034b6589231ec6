"""The auxiliary semantic loss of DR1Mask (BlendMask's, weight 0.3).

A small head on P3 classifies every location into the thing classes or
background; its targets are painted from the GT instance masks on the fly.
It only adds a training signal to the shared features and is not run at test
time.
"""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.utils import ConfigType, InstanceList

from ..constants import IGNORE_INDEX


@MODELS.register_module()
class AuxSemanticHead(BaseModule):
    """Thing-only semantic segmentation from one FPN level.

    Args:
        num_things_classes (int): thing classes; class
            ``num_things_classes`` is background.
        in_channels (int): channels of the FPN level.
        feat_channels (int): channels of the hidden 3x3 convs.
        num_convs (int): hidden 3x3 convs.
        stride (int): stride of the level used (P3: 8).
        loss_seg (dict): the loss, with its weight (0.3 in the paper).
    """

    def __init__(self,
                 num_things_classes: int,
                 in_channels: int = 256,
                 feat_channels: int = 128,
                 num_convs: int = 2,
                 stride: int = 8,
                 loss_seg: ConfigType = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=False,
                     ignore_index=IGNORE_INDEX,
                     avg_non_ignore=True,
                     loss_weight=0.3),
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01)
                 ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_things_classes = num_things_classes
        self.stride = stride
        self.convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else feat_channels,
                       feat_channels, 3, padding=1)
            for i in range(num_convs)
        ])
        self.conv_seg = nn.Conv2d(feat_channels, num_things_classes + 1, 1)
        self.loss_seg = MODELS.build(loss_seg)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, num_things_classes + 1, h, w) logits."""
        return self.conv_seg(self.convs(x))

    def targets(self, batch_gt_instances: InstanceList,
                size: torch.Size) -> Tensor:
        """Thing class (or background) at each location of the level.

        Locations sample the padded input at multiples of the stride, where
        the strided convolutions centre them; beyond the padded masks they
        are ignored.

        Returns:
            Tensor: (N, h, w) long.
        """
        h, w = size
        out = []
        for gt in batch_gt_instances:
            masks = gt.masks.to_tensor(torch.bool, gt.labels.device)
            full = torch.full((h * self.stride, w * self.stride), IGNORE_INDEX,
                              dtype=torch.long, device=gt.labels.device)
            mask_h = min(gt.masks.height, h * self.stride)
            mask_w = min(gt.masks.width, w * self.stride)
            painted = torch.full_like(full[:mask_h, :mask_w],
                                      self.num_things_classes)
            if len(masks):
                # Where masks overlap the larger label wins: only a tie-break.
                labels = (masks[:, :mask_h, :mask_w] *
                          (gt.labels + 1)[:, None, None]).amax(0)
                painted = torch.where(labels > 0, labels - 1, painted)
            full[:mask_h, :mask_w] = painted
            out.append(full[::self.stride, ::self.stride])
        return torch.stack(out)

    def loss(self, x: Tensor, batch_gt_instances: InstanceList) -> dict:
        """Semantic loss of the level ``x`` (N, C, h, w)."""
        logits = self(x)
        targets = self.targets(batch_gt_instances, logits.shape[-2:])
        return dict(loss_aux_semantic=self.loss_seg(logits, targets))
