"""The dense head of DR1Mask: FCOS with the paper's top layer (Sec. 3.2.1).

The top layer is one 3x3 convolution on the FCOS box (regression) tower of
every level; it emits, per location, the instance embedding ``E_l`` and the
context maps ``C_l = [A_l, B_l]`` that modulate DR1Basis (Eq. 5):

    {C_l, E_l} = Top(Tower(P_l)),  l = 3..7

The box tower is where Table 3 says the context must come from: it keeps the
instance embedding and the context it modulates consistent.

Target assignment, the positives' bookkeeping and the NMS that carries the
embeddings of the kept detections are mmdet's CondInst box head, itself FCOS
(its per-location ``param_preds`` are our embeddings).
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import Scale
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import CondInstBboxHead
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList


@MODELS.register_module()
class DR1MaskHead(CondInstBboxHead):
    """FCOS head whose box tower ends in DR1Mask's top layer.

    Args:
        embedding_channels (int): Channels of the per-location instance
            embedding ``E_l``; the instance module and the panoptic layer
            say how many they need.
        context_channels (int): Channels of the context maps ``C_l`` (2 * D
            for DR1Basis of width D with A and B; 0 for the plain basis).
        **kwargs: FCOSHead's arguments.
    """

    def __init__(self, *args, embedding_channels: int,
                 context_channels: int, **kwargs) -> None:
        self.context_channels = context_channels
        super().__init__(*args, num_params=embedding_channels, **kwargs)

    @property
    def embedding_channels(self) -> int:
        return self.num_params

    def _init_layers(self) -> None:
        super()._init_layers()
        # CondInst's `controller` conv is reused as the paper's top layer,
        # widened to emit the context maps next to the embedding. It is
        # initialised N(0, 0.01), bias 0, by FCOSHead's init_cfg.
        self.controller = nn.Conv2d(
            self.feat_channels,
            self.num_params + self.context_channels,
            3,
            padding=1)

    def forward_single(self, x: Tensor, scale: Scale,
                       stride: int) -> Tuple[Tensor, ...]:
        """One FPN level.

        Returns:
            tuple: ``cls_score`` (N, num_classes, H, W), ``bbox_pred``
            (N, 4, H, W), ``centerness`` (N, 1, H, W), ``embedding``
            (N, embedding_channels, H, W) and ``context`` (N,
            context_channels, H, W).
        """
        cls_score, bbox_pred, centerness, top = super().forward_single(
            x, scale, stride)
        embedding, context = top.split(
            [self.num_params, self.context_channels], dim=1)
        return cls_score, bbox_pred, centerness, embedding, context

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     centernesses: List[Tensor],
                     embeddings: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None
                     ) -> dict:
        """FCOS losses; remembers the positives for the mask and panoptic
        losses (see :meth:`get_positive_infos`).

        Centre sampling uses the box centre, as FCOS and BlendMask do, so the
        masks are not passed on (CondInst's head would use their centroid).
        """
        box_instances = [
            InstanceData(bboxes=gt.bboxes, labels=gt.labels)
            for gt in batch_gt_instances
        ]
        self._raw_positive_infos.update(batch_gt_instances=box_instances)
        return super().loss_by_feat(cls_scores, bbox_preds, centernesses,
                                    embeddings, box_instances,
                                    batch_img_metas,
                                    batch_gt_instances_ignore)

    def get_positive_infos(self) -> InstanceList:
        """The positive locations of the last loss, per image.

        Returns:
            list[InstanceData]: per image, for its P positive locations:
            ``param_preds`` (P, embedding_channels) the embeddings,
            ``pos_assigned_gt_inds`` (P,), ``points`` (P, 2) and
            ``centerness_targets`` (P,), the FCOS centerness of each location
            in its GT box (the mask loss weights, as in BlendMask).
        """
        positive_infos = super().get_positive_infos()
        for info, gt in zip(positive_infos,
                            self._raw_positive_infos['batch_gt_instances']):
            boxes = gt.bboxes[info.pos_assigned_gt_inds]
            ltrb = torch.cat(
                [info.points - boxes[:, :2], boxes[:, 2:] - info.points], 1)
            info.centerness_targets = self.centerness_target(ltrb)
        return positive_infos

    def _bbox_post_process(self, results: InstanceData, cfg: ConfigDict,
                           **kwargs) -> InstanceData:
        # FCOS ranks by the geometric mean of class score and centerness.
        if 'score_factors' in results:
            results.scores = (results.scores *
                              results.pop('score_factors')).sqrt()
        return super()._bbox_post_process(results, cfg, **kwargs)
