"""The dense head of DR1Mask: FCOS with the paper's top layer (Sec. 3.2.1).

The top layer is one 3x3 convolution on the FCOS box (regression) tower of
every level; it emits, per location, the instance embedding ``E_l`` and the
context maps ``C_l = [A_l, B_l]`` that modulate DR1Basis (Eq. 5):

    {C_l, E_l} = Top(Tower(P_l)),  l = 3..7

The box tower is where Table 3 says the context should come from: it keeps
the instance embedding and the context it modulates consistent. For Table
3's other rows the context part of the top layer reads the class tower or
the FPN level instead (``context_source``); without A and B (the plain
basis) there is no context at all.

Target assignment is mmdet's CondInst box head (FCOS that tells which GT each
positive location is assigned to), used through its public ``loss_by_feat``
and ``get_targets``. The context maps are needed at every location; the
embeddings only at the positive locations in training and at the detections
kept by NMS at test time, and only there are they computed.
"""
import copy
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import Scale
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import (AnchorFreeHead, CondInstBboxHead,
                                      FCOSHead)
from mmdet.models.utils import filter_scores_and_topk
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList

CONTEXT_SOURCES = ('box_tower', 'cls_tower', 'fpn')


@MODELS.register_module()
class DR1MaskHead(CondInstBboxHead):
    """FCOS head whose box tower ends in DR1Mask's top layer.

    Args:
        embedding_channels (int): Channels of the per-location instance
            embedding ``E_l``; the detector fills it in from what the
            instance module and the panoptic layer need.
        context_channels (int): Channels of the context maps ``C_l`` (2 * D
            for DR1Basis of width D with A and B; 0 for the plain basis);
            the detector fills it in from the basis.
        context_source (str): What the context part of the top layer reads
            (Table 3): ``'box_tower'`` (the paper's choice, default),
            ``'cls_tower'`` or ``'fpn'`` (the level's FPN features).
        **kwargs: FCOSHead's arguments.
    """

    def __init__(self, *args, embedding_channels: int,
                 context_channels: int, context_source: str = 'box_tower',
                 **kwargs) -> None:
        if context_source not in CONTEXT_SOURCES:
            raise ValueError(f'context_source={context_source!r}: expected '
                             f'one of {CONTEXT_SOURCES}')
        self.embedding_channels = embedding_channels
        self.context_channels = context_channels
        self.context_source = context_source
        # CondInst's `num_params` sizes its controller and its dense
        # parameters; the top layer takes the controller's place and the
        # one-channel centernesses the parameters' (loss_by_feat).
        super().__init__(*args, num_params=1, **kwargs)
        self._positives: dict = {}
        if context_source == 'fpn' and self.in_channels != self.feat_channels:
            raise ValueError(
                "context_source='fpn' reads the FPN level with the top "
                f'layer, which takes feat_channels={self.feat_channels} '
                f'channels, but in_channels={self.in_channels}')

    def _init_layers(self) -> None:
        # FCOS's towers and predictors; the top layer takes the place of
        # CondInst's controller. Initialised N(0, 0.01), bias 0, by
        # FCOSHead's init_cfg. Output channels: [embedding ; context].
        FCOSHead._init_layers(self)
        self.top_layer = nn.Conv2d(
            self.feat_channels,
            self.embedding_channels + self.context_channels,
            3,
            padding=1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str,
                              *args, **kwargs) -> None:
        # Checkpoints written before the top layer had its own name hold its
        # weights under CondInst's `controller`.
        for name in ('weight', 'bias'):
            old = f'{prefix}controller.{name}'
            if old in state_dict:
                state_dict[f'{prefix}top_layer.{name}'] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_single(self, x: Tensor, scale: Scale,
                       stride: int) -> Tuple[Tensor, ...]:
        """One FPN level: FCOS's outputs, the box tower's features and the
        context maps.

        Returns:
            tuple: ``cls_score`` (N, num_classes, H, W), ``bbox_pred``
            (N, 4, H, W), ``centerness`` (N, 1, H, W), ``box_feat`` (N,
            feat_channels, H, W), the box tower's output, from which
            :meth:`embeddings_at` computes the instance embeddings where
            they are needed, and ``context`` (N, context_channels, H, W).
        """
        cls_score, bbox_pred, cls_feat, box_feat = \
            AnchorFreeHead.forward_single(self, x)
        # FCOS's centerness and box scaling (FCOSHead.forward_single, which
        # does not return the box tower's features).
        centerness = self.conv_centerness(
            box_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = scale(bbox_pred).float()
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred *= stride
        else:
            bbox_pred = bbox_pred.exp()
        source = dict(box_tower=box_feat, cls_tower=cls_feat, fpn=x)
        context = self._top_layer(source[self.context_source],
                                  slice(self.embedding_channels, None))
        return cls_score, bbox_pred, centerness, box_feat, context

    def _top_layer(self, box_feat: Tensor, channels: slice) -> Tensor:
        """Output ``channels`` of the top layer, densely."""
        weight = self.top_layer.weight[channels]
        if len(weight) == 0:  # no context maps for a basis without A, B
            return box_feat.new_zeros((box_feat.size(0), 0,
                                       *box_feat.shape[2:]))
        return F.conv2d(box_feat, weight, self.top_layer.bias[channels],
                        padding=1)

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
        num = self.embedding_channels
        weight = self.top_layer.weight[:num].flatten(1)
        bias = self.top_layer.bias[:num]
        embeddings = points.new_zeros((len(points), num))
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
        """FCOS losses; remembers the positives for :meth:`positive_infos`.

        Centre sampling uses the box centre, as FCOS and BlendMask do, so
        only boxes and labels are passed on (given masks, CondInst's
        assignment would use their centroid).

        CondInst's loss also stores dense per-location parameters for its
        ``get_positive_infos``, which is not used here: the embeddings are
        needed at the positive locations only, and :meth:`positive_infos`
        computes them there. The centernesses, which it stores anyway,
        stand in for those parameters, so that no other map is held until
        the next iteration.
        """
        box_instances = [
            InstanceData(bboxes=gt.bboxes, labels=gt.labels)
            for gt in batch_gt_instances
        ]
        losses = super().loss_by_feat(cls_scores, bbox_preds, centernesses,
                                      centernesses, box_instances,
                                      batch_img_metas,
                                      batch_gt_instances_ignore)
        self._positives.update(box_feats=box_feats)
        return losses

    def get_targets(self, points: List[Tensor],
                    batch_gt_instances: InstanceList) -> tuple:
        """CondInst's targets (FCOS's, with each positive's GT index);
        remembers the points and the positives for :meth:`positive_infos`.
        """
        targets = super().get_targets(points, batch_gt_instances)
        self._positives = dict(
            points=points, pos_inds=targets[2], pos_gt_inds=targets[3])
        return targets

    def positive_infos(self,
                       batch_gt_instances: InstanceList) -> InstanceList:
        """The positive locations of the last :meth:`loss_by_feat`.

        Args:
            batch_gt_instances (list[InstanceData]): the GT instances that
                loss was computed with.

        Returns:
            list[InstanceData]: per image, for its P positive locations:
            ``embeddings`` (P, embedding_channels), computed at those
            locations alone (:meth:`embeddings_at`), ``pos_assigned_gt_inds``
            (P,), ``points`` (P, 2) and ``centerness_targets`` (P,), the
            FCOS centerness of each location in its GT box (the mask loss
            weights, as in BlendMask).
        """
        # Read once: nothing of this iteration is held into the next.
        positives, self._positives = self._positives, {}
        if 'box_feats' not in positives:
            raise RuntimeError('DR1MaskHead.positive_infos() reads the '
                               'positives of the last loss_by_feat(): call '
                               'that first, once per positive_infos()')
        points = positives['points']
        strides = torch.cat([
            level.new_full((len(level), ), stride)
            for level, stride in zip(points, self.strides)
        ])
        points = torch.cat(points)
        infos = []
        for i, (pos_inds, gt_inds, gt) in enumerate(
                zip(positives['pos_inds'], positives['pos_gt_inds'],
                    batch_gt_instances)):
            pos_points = points[pos_inds]
            boxes = gt.bboxes[gt_inds]
            ltrb = torch.cat(
                [pos_points - boxes[:, :2], boxes[:, 2:] - pos_points], 1)
            infos.append(
                InstanceData(
                    embeddings=self.embeddings_at(
                        [f[i] for f in positives['box_feats']], pos_points,
                        strides[pos_inds]),
                    pos_assigned_gt_inds=gt_inds,
                    points=pos_points,
                    centerness_targets=self.centerness_target(ltrb)))
        return infos

    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        centernesses: List[Tensor],
                        box_feats: List[Tensor],
                        batch_img_metas: List[dict],
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """FCOS's detections, each with its location and its embedding.

        As AdelaiDet's FCOS, which BlendMask and the paper build on: per
        level, the (location, class) pairs whose class score is above
        ``score_thr``, at most ``nms_pre`` of them ranked by ``cls *
        centerness`` (mmdet's FCOS ranks by ``cls`` alone), are decoded and
        scored ``sqrt(cls * centerness)``; NMS keeps ``max_per_img``; only
        the kept locations' embeddings are computed
        (:meth:`embeddings_at`).

        Returns:
            list[InstanceData]: per image ``bboxes``, ``scores``, ``labels``,
            ``embeddings`` (n, embedding_channels), ``points`` (n, 2) and
            ``strides`` (n,).
        """
        cfg = copy.deepcopy(self.test_cfg if cfg is None else cfg)
        priors = self.prior_generator.grid_priors(
            [score.shape[-2:] for score in cls_scores],
            dtype=bbox_preds[0].dtype,
            device=bbox_preds[0].device,
            with_stride=True)
        results_list = []
        for img_id, img_meta in enumerate(batch_img_metas):
            levels = [
                self._level_candidates(cls_score[img_id].detach(),
                                       bbox_pred[img_id].detach(),
                                       centerness[img_id].detach(),
                                       level_priors, cfg)
                for cls_score, bbox_pred, centerness, level_priors in zip(
                    cls_scores, bbox_preds, centernesses, priors)
            ]
            candidates = InstanceData.cat(levels)
            candidates.bboxes = self.bbox_coder.decode(
                candidates.points, candidates.pop('bbox_pred'),
                max_shape=img_meta['img_shape'])
            results = self._bbox_post_process(
                candidates, cfg, rescale=rescale, with_nms=with_nms,
                img_meta=img_meta)
            results.embeddings = self.embeddings_at(
                [f[img_id] for f in box_feats], results.points,
                results.strides)
            results_list.append(results)
        return results_list

    def _level_candidates(self, cls_score: Tensor, bbox_pred: Tensor,
                          centerness: Tensor, priors: Tensor,
                          cfg: ConfigDict) -> InstanceData:
        """The ``nms_pre`` best (location, class) pairs of one level of one
        image (see :meth:`predict_by_feat`), with their scores, labels,
        box predictions, points and strides."""
        cls = cls_score.permute(1, 2, 0).reshape(
            -1, self.cls_out_channels).sigmoid()
        # cls * centerness is > 0 wherever cls passes the threshold
        quality = torch.where(cls > cfg.get('score_thr', 0),
                              cls * centerness.reshape(-1, 1).sigmoid(), 0)
        quality, labels, _, kept = filter_scores_and_topk(
            quality, 0, cfg.get('nms_pre', -1),
            dict(
                bbox_pred=bbox_pred.permute(1, 2, 0).reshape(-1, 4),
                priors=priors))
        return InstanceData(
            scores=quality.sqrt(),
            labels=labels,
            bbox_pred=kept['bbox_pred'],
            points=kept['priors'][:, :2],
            strides=kept['priors'][:, 2])
