"""The unified panoptic layer of DR1Mask (Sec. 3.3, Eq. 9).

One 1x1 convolution turns the basis F (D channels, stride 4) into panoptic
logits ``Y = W^T F`` with ``W = [W_stuff ; W_thing]``: the first C_stuff
columns are static parameters, the thing columns are the instances' own
embeddings. In training, each GT instance's column is the mean embedding of
the positive locations assigned to it (``e_c = sum_n e_n / N_c``); at test
time, the embeddings of the detections kept by NMS. A pixel's argmax is a
stuff class or one instance: the panoptic segmentation, with no fusion step.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import InstanceList, reduce_mean

from ..constants import IGNORE_INDEX
from ..gt_masks import mask_tensor


@MODELS.register_module()
class UnifiedPanopticLayer(BaseModule):
    """Panoptic logits over [stuff classes ; instances] from the basis.

    Only what is learnt lives here: the stuff columns, the thing columns'
    construction from embeddings and the loss. From logits to panoptic ids
    is :func:`~.post_processing.panoptic_segmentation`.

    Args:
        num_things_classes (int): thing classes (labels 0..T - 1).
        num_stuff_classes (int): stuff classes (labels T..T + S - 1); 53 on
            COCO.
        basis_channels (int): D. The instance embeddings must have D
            channels, i.e. the instance module uses vector attention
            (position-sensitive attention hurts stuff: Table 7).
        basis_stride (int): input pixels per location of F; the detector
            passes the basis' own.
        loss_weight (float): weight of the per-pixel cross entropy.
    """

    def __init__(self,
                 num_things_classes: int,
                 num_stuff_classes: int,
                 basis_channels: int,
                 basis_stride: int,
                 loss_weight: float = 1.0,
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01)
                 ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_things_classes = num_things_classes
        self.num_stuff_classes = num_stuff_classes
        self.basis_channels = basis_channels
        self.basis_stride = basis_stride
        self.loss_weight = loss_weight
        self.stuff_conv = nn.Conv2d(basis_channels, num_stuff_classes, 1)

    def logits(self, basis: Tensor, thing_weights: Tensor) -> Tensor:
        """Y = W^T F for one image.

        Args:
            basis (Tensor): F, (D, h, w).
            thing_weights (Tensor): W_thing, (n, D).

        Returns:
            Tensor: (num_stuff_classes + n, h, w).
        """
        stuff = self.stuff_conv(basis[None])[0]
        things = torch.einsum('nd,dhw->nhw', thing_weights, basis)
        return torch.cat([stuff, things])

    @staticmethod
    def mean_embeddings(positive_info: InstanceData,
                        num_gts: int) -> Tuple[Tensor, Tensor]:
        """Eq. 9's columns: the mean embedding of each GT instance.

        Returns:
            tuple: ``means`` (num_gts, E) and ``has_positive`` (num_gts,)
            bool; an instance with no positive location has no embedding.
        """
        embeddings = positive_info.embeddings
        gt_inds = positive_info.pos_assigned_gt_inds
        sums = embeddings.new_zeros((num_gts, embeddings.size(1)))
        sums.index_add_(0, gt_inds, embeddings)
        counts = torch.bincount(gt_inds, minlength=num_gts)
        return sums / counts.clamp(min=1)[:, None].to(sums), counts > 0

    def targets(self, sem_seg: Tensor, masks: Tensor,
                has_positive: Tensor) -> Tensor:
        """Channel index of every pixel of one image at the basis stride.

        Location j is pixel ``basis_stride * j``; only those pixels of
        ``sem_seg`` and ``masks`` are read (strided views, so the
        full-resolution maps are never copied).

        Args:
            sem_seg (Tensor): (H, W) things 0..T-1, stuff T..T+S-1, 255
                ignored (void), at the padded input size.
            masks (Tensor): (n, H', W') GT instance masks, nonzero inside,
                on any device.
            has_positive (Tensor): (n,) bool.

        Returns:
            Tensor: (ceil(H / s), ceil(W / s)) long: stuff ``c`` is channel
            ``c - T``, instance ``j`` with a positive is channel ``S + (its
            rank among those)``; void, crowd (thing pixels of no instance)
            and instances with no positive are 255.
        """
        stride = self.basis_stride
        sem_seg = sem_seg[::stride, ::stride]
        target = torch.full_like(sem_seg, IGNORE_INDEX, dtype=torch.long)
        num_things = self.num_things_classes
        is_stuff = (sem_seg >= num_things) & (sem_seg != IGNORE_INDEX)
        target[is_stuff] = sem_seg[is_stuff].long() - num_things
        channel = torch.where(
            has_positive,
            self.num_stuff_classes + has_positive.cumsum(0) - 1,
            IGNORE_INDEX)
        if len(masks):
            masks = masks[:, ::stride, ::stride].to(sem_seg.device,
                                                    torch.bool)
            mask_h, mask_w = masks.shape[-2:]
            covered = masks.any(0)
            instance = masks.to(torch.uint8).argmax(0)
            region = target[:mask_h, :mask_w]
            region[covered] = channel[instance[covered]]
        return target

    def loss(self, basis: Tensor, positive_infos: InstanceList,
             batch_data_samples: SampleList) -> dict:
        """Per-pixel cross entropy over [stuff ; instances of the image]."""
        losses, valid = [], []
        for feat, info, sample in zip(basis, positive_infos,
                                      batch_data_samples):
            gt = sample.gt_instances
            means, has_positive = self.mean_embeddings(info, len(gt))
            target = self.targets(
                sample.gt_sem_seg.sem_seg[0].to(basis.device),
                mask_tensor(gt.masks), has_positive)
            target = target[:feat.size(1), :feat.size(2)]
            logits = self.logits(feat[:, :target.size(0), :target.size(1)],
                                 means[has_positive])
            losses.append(
                F.cross_entropy(
                    logits[None], target[None], ignore_index=IGNORE_INDEX,
                    reduction='sum'))
            valid.append((target != IGNORE_INDEX).sum())
        # The mean over ranks: DDP then averages sum / mean, which is the
        # loss of the whole distributed batch (FCOS normalises by num_pos so).
        num_valid = reduce_mean(torch.stack(valid).sum().float()).clamp(min=1)
        return dict(
            loss_panoptic=self.loss_weight * torch.stack(losses).sum() /
            num_valid)
