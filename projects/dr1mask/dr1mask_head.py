"""The dense head of DR1Mask: FCOS with the paper's top layer (Sec. 3.2.1).

The top layer is one 3x3 convolution on the FCOS box (regression) tower of
every level; it emits, per location, the instance embedding ``E_l`` and the
context maps ``C_l = [A_l, B_l]`` that modulate DR1Basis (Eq. 5):

    {C_l, E_l} = Top(Tower(P_l)),  l = 3..7

The box tower is where Table 3 says the context must come from: it keeps the
instance embedding and the context it modulates consistent.

Target assignment, the positives' bookkeeping and the NMS that carries the
embeddings of the kept detections are mmdet's CondInst box head, itself FCOS
(its per-location ``param_preds`` are our embeddings). The context maps are
needed at every location. At test time the embeddings are needed only at the
detections kept by NMS, and only there are they computed; in training they
are computed densely, since CondInst gathers the positives' from dense maps.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
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
        # CondInst's forward hands the box-tower features to `controller`;
        # they pass through unchanged, so that at test time the top layer
        # can be applied densely for the context maps only (DR1Basis needs
        # them everywhere) and for the embeddings only at the detections.
        self.controller = nn.Identity()
        # The top layer, initialised N(0, 0.01), bias 0, by FCOSHead's
        # init_cfg. Output channels: [embedding ; context].
        self.top_layer = nn.Conv2d(
            self.feat_channels,
            self.num_params + self.context_channels,
            3,
            padding=1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str,
                              *args, **kwargs) -> None:
        # Checkpoints written before the top layer was split from CondInst's
        # `controller` (now an identity) hold its weights under that name.
        for name in ('weight', 'bias'):
            old = f'{prefix}controller.{name}'
            if old in state_dict:
                state_dict[f'{prefix}top_layer.{name}'] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_single(self, x: Tensor, scale: Scale,
                       stride: int) -> Tuple[Tensor, ...]:
        """One FPN level.

        Returns:
            tuple: ``cls_score`` (N, num_classes, H, W), ``bbox_pred``
            (N, 4, H, W), ``centerness`` (N, 1, H, W), ``box_feat`` (N,
            feat_channels, H, W), the box tower's output, from which
            :meth:`embeddings` computes the instance embeddings, and
            ``context`` (N, context_channels, H, W).
        """
        cls_score, bbox_pred, centerness, box_feat = super().forward_single(
            x, scale, stride)
        return cls_score, bbox_pred, centerness, box_feat, self._top_layer(
            box_feat, slice(self.num_params, None))

    def _top_layer(self, box_feat: Tensor, channels: slice) -> Tensor:
        """Output ``channels`` of the top layer, densely."""
        weight = self.top_layer.weight[channels]
        if len(weight) == 0:  # no context maps for a basis without A, B
            return box_feat.new_zeros((box_feat.size(0), 0,
                                       *box_feat.shape[2:]))
        return F.conv2d(box_feat, weight, self.top_layer.bias[channels],
                        padding=1)

    def embeddings(self, box_feat: Tensor) -> Tensor:
        """The embeddings E_l (N, embedding_channels, H, W) of every
        location of one level."""
        return self._top_layer(box_feat, slice(None, self.num_params))

    def embeddings_at(self, box_feats: List[Tensor], points: Tensor,
                      strides: Tensor) -> Tensor:
        """The embeddings (n, embedding_channels) at n locations of one
        image: the top layer on the 3 x 3 box-tower neighbourhood of each.

        Args:
            box_feats (list[Tensor]): per level, (feat_channels, H, W).
            points (Tensor): (n, 2) the locations' (x, y) points, as the
                head's prior generator places them.
            strides (Tensor): (n,) the stride of each location's level.
        """
        weight = self.top_layer.weight[:self.num_params].flatten(1)
        bias = self.top_layer.bias[:self.num_params]
        embeddings = points.new_zeros((len(points), self.num_params))
        taps = torch.arange(3, device=points.device)
        for box_feat, stride in zip(box_feats, self.strides):
            at_level = strides == stride
            # Point (j + offset) * stride is column j; padding by 1 shifts
            # the 3 x 3 neighbourhood of j to columns j .. j + 2.
            cols, rows = (points[at_level] / stride).floor().long().T
            patches = F.pad(box_feat, (1, 1, 1, 1))[
                :, rows[:, None, None] + taps[:, None],
                cols[:, None, None] + taps]
            embeddings[at_level] = patches.transpose(0, 1).flatten(1) \
                @ weight.T + bias
        return embeddings

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     centernesses: List[Tensor],
                     box_feats: List[Tensor],
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
                                    [self.embeddings(f) for f in box_feats],
                                    box_instances, batch_img_metas,
                                    batch_gt_instances_ignore)

    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        centernesses: List[Tensor],
                        box_feats: List[Tensor],
                        batch_img_metas: List[dict],
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """CondInst's detections (FCOS decoding and NMS), each with its
        embedding ``param_preds``, computed only for the kept locations.

        Returns:
            list[InstanceData]: per image ``bboxes``, ``scores``, ``labels``,
            ``param_preds`` (n, embedding_channels), ``points`` and
            ``strides``.
        """
        # CondInst carries a per-location embedding through the selection;
        # it gets a zero-stride stand-in (no memory), and the kept
        # locations' embeddings are computed afterwards.
        no_embeddings = [
            f.new_zeros(()).expand(f.size(0), self.num_params, *f.shape[2:])
            for f in box_feats
        ]
        results_list = super().predict_by_feat(
            cls_scores, bbox_preds, centernesses, no_embeddings,
            batch_img_metas=batch_img_metas, cfg=cfg, rescale=rescale,
            with_nms=with_nms)
        for img_id, results in enumerate(results_list):
            results.param_preds = self.embeddings_at(
                [f[img_id] for f in box_feats], results.points,
                results.strides)
        return results_list

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
