"""DR1Mask: instance and panoptic segmentation on one shared feature map.

``loss`` and ``predict`` follow the paper's Figure 2 top to bottom: backbone
and FPN, the FCOS head whose top layer emits instance embeddings and context
maps, DR1Basis, the instance prediction module and, for panoptic models, the
unified panoptic layer.
"""
from typing import List, Optional, Tuple

from mmengine.config import ConfigDict
from torch import Tensor

from mmdet.models.detectors import SingleStageDetector
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig

# F = up2(F_3) is at stride 4 of the (padded) input.
BASIS_STRIDE = 4


@MODELS.register_module()
class DR1Mask(SingleStageDetector):
    """DR1Mask detector.

    Args:
        backbone, neck (dict): as mmdet's single-stage detectors (FPN P3-P7).
        bbox_head (dict): the dense head (``DR1MaskHead``); its embedding and
            context widths are filled in from ``mask_head`` and ``basis``.
        basis (dict): ``DR1Basis``, the bottom-up branch producing F.
        mask_head (dict): ``InstancePredictionModule``; its
            ``basis_channels`` is taken from ``basis``.
        panoptic_head (dict, optional): ``UnifiedPanopticLayer`` (its
            ``basis_channels`` from ``basis``); with it the model also
            predicts ``pred_panoptic_seg``.
        semantic_head (dict, optional): ``AuxSemanticHead``, training only.
    """

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 bbox_head: ConfigType,
                 basis: ConfigType,
                 mask_head: ConfigType,
                 panoptic_head: OptConfigType = None,
                 semantic_head: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        # SingleStageDetector's own __init__ would build the head before we
        # know the widths it must emit.
        BaseDetector.__init__(
            self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.basis = MODELS.build(basis)
        self.mask_head = MODELS.build(
            dict(mask_head, basis_channels=self.basis.channels))
        bbox_head = ConfigDict(bbox_head)
        bbox_head.update(
            embedding_channels=self.mask_head.embedding_channels,
            context_channels=self.basis.context_channels,
            train_cfg=train_cfg,
            test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head)
        self.panoptic_head = MODELS.build(
            dict(panoptic_head, basis_channels=self.basis.channels)
        ) if panoptic_head is not None else None
        self.semantic_head = MODELS.build(semantic_head) \
            if semantic_head is not None else None
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    @property
    def with_panoptic(self) -> bool:
        return self.panoptic_head is not None

    @staticmethod
    def _basis_size(batch_inputs: Tensor) -> Tuple[int, int]:
        """Size of F: the padded input (a multiple of 4, Table 5) / 4."""
        return (batch_inputs.size(-2) // BASIS_STRIDE,
                batch_inputs.size(-1) // BASIS_STRIDE)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> dict:
        gt_instances = [s.gt_instances for s in batch_data_samples]
        img_metas = [s.metainfo for s in batch_data_samples]

        feats = self.extract_feat(batch_inputs)
        cls_scores, bbox_preds, centernesses, box_feats, contexts = \
            self.bbox_head(feats)
        losses = self.bbox_head.loss_by_feat(cls_scores, bbox_preds,
                                             centernesses, box_feats,
                                             gt_instances, img_metas)
        positives = self.bbox_head.get_positive_infos()
        basis = self.basis(feats, contexts, self._basis_size(batch_inputs))
        losses.update(self.mask_head.loss(basis, positives, gt_instances))
        if self.with_panoptic:
            losses.update(
                self.panoptic_head.loss(basis, positives, batch_data_samples))
        if self.semantic_head is not None:
            losses.update(self.semantic_head.loss(feats[0], gt_instances))
        return losses

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """``pred_instances`` (bboxes, scores, labels, bool masks) and, for
        panoptic models, ``pred_panoptic_seg``, at the original image size
        when ``rescale``."""
        img_metas = [s.metainfo for s in batch_data_samples]

        feats = self.extract_feat(batch_inputs)
        cls_scores, bbox_preds, centernesses, box_feats, contexts = \
            self.bbox_head(feats)
        detections = self.bbox_head.predict_by_feat(
            cls_scores, bbox_preds, centernesses, box_feats,
            batch_img_metas=img_metas, rescale=False)
        basis = self.basis(feats, contexts, self._basis_size(batch_inputs))
        instances = self.mask_head.predict(basis, detections, img_metas,
                                           rescale)
        batch_data_samples = self.add_pred_to_datasample(
            batch_data_samples, instances)
        if self.with_panoptic:
            panoptic = self.panoptic_head.predict(basis, detections,
                                                  img_metas)
            for sample, pred in zip(batch_data_samples, panoptic):
                sample.pred_panoptic_seg = pred
        return batch_data_samples

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: Optional[SampleList] = None
                 ) -> Tuple[List[Tensor], ...]:
        """Raw outputs, no ground truth needed (FLOPs counting, export):
        the head's five per-level lists and the basis F."""
        feats = self.extract_feat(batch_inputs)
        head_outs = self.bbox_head(feats)
        basis = self.basis(feats, head_outs[-1],
                           self._basis_size(batch_inputs))
        return (*head_outs, basis)
