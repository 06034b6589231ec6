"""The auxiliary semantic loss of DR1Mask (BlendMask's, weight 0.3).

A small head on P3 classifies every location into the thing classes or
background, its targets painted from the GT instance masks on the fly; or,
with ``num_stuff_classes``, into the thing and stuff classes of the panoptic
ground truth. It only adds a training signal to the shared features and is
not run at test time.
"""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, InstanceList

from ..constants import IGNORE_INDEX
from ..gt_masks import mask_tensor


@MODELS.register_module()
class AuxSemanticHead(BaseModule):
    """Semantic segmentation from one FPN level: the thing classes and
    background (the paper's, BlendMask's) or the thing and stuff classes.

    Args:
        num_things_classes (int): thing classes.
        num_stuff_classes (int): 0: the classes are the things and one
            background (``num_things_classes``), painted from the instance
            masks; else the things and these stuff classes, read from the
            panoptic ground truth's ``gt_sem_seg`` (things first, void
            ignored).
        in_channels (int): channels of the FPN level.
        feat_channels (int): channels of the hidden 3x3 convs.
        num_convs (int): hidden 3x3 convs.
        stride (int): stride of the level used (P3: 8).
        loss_seg (dict): the loss, with its weight (0.3 in the paper).
    """

    def __init__(self,
                 num_things_classes: int,
                 num_stuff_classes: int = 0,
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
        self.num_stuff_classes = num_stuff_classes
        self.stride = stride
        self.convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else feat_channels,
                       feat_channels, 3, padding=1)
            for i in range(num_convs)
        ])
        self.conv_seg = nn.Conv2d(feat_channels,
                                  num_things_classes + max(num_stuff_classes, 1),
                                  1)
        self.loss_seg = MODELS.build(loss_seg)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, classes, h, w) logits."""
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
            device = gt.labels.device
            # Location j reads pixel stride * j; beyond the masks, ignored.
            masks = mask_tensor(gt.masks)[:, ::self.stride, ::self.stride]
            masks = masks[:, :h, :w].to(device, torch.bool)
            target = torch.full((h, w), IGNORE_INDEX, dtype=torch.long,
                                device=device)
            mask_h, mask_w = masks.shape[-2:]
            painted = torch.full_like(target[:mask_h, :mask_w],
                                      self.num_things_classes)
            if len(masks):
                # Where masks overlap the larger label wins: only a tie-break.
                labels = (masks * (gt.labels + 1)[:, None, None]).amax(0)
                painted = torch.where(labels > 0, labels - 1, painted)
            target[:mask_h, :mask_w] = painted
            out.append(target)
        return torch.stack(out)

    def panoptic_targets(self, batch_data_samples: SampleList,
                         size: torch.Size) -> Tensor:
        """Thing or stuff class of each location of the level, from the
        panoptic ground truth ``gt_sem_seg`` (things 0..T-1, stuff T..T+S-1,
        255 void) sampled at multiples of the stride; beyond it, ignored.

        Returns:
            Tensor: (N, h, w) long.
        """
        h, w = size
        out = []
        for sample in batch_data_samples:
            sem_seg = sample.gt_sem_seg.sem_seg[0, ::self.stride,
                                                ::self.stride][:h, :w]
            target = sem_seg.new_full((h, w), IGNORE_INDEX)
            target[:sem_seg.size(0), :sem_seg.size(1)] = sem_seg
            out.append(target.long())
        return torch.stack(out)

    def loss(self, x: Tensor, batch_data_samples: SampleList) -> dict:
        """Semantic loss of the level ``x`` (N, C, h, w)."""
        logits = self(x)
        if self.num_stuff_classes:
            targets = self.panoptic_targets(batch_data_samples,
                                            logits.shape[-2:])
        else:
            targets = self.targets(
                [sample.gt_instances for sample in batch_data_samples],
                logits.shape[-2:])
        return dict(loss_aux_semantic=self.loss_seg(logits, targets))
