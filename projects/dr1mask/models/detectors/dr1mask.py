"""DR1Mask: instance and panoptic segmentation on one shared feature map.

``loss`` and ``predict`` follow the paper's Figure 2 top to bottom: backbone
and FPN, the FCOS head whose top layer emits instance embeddings and context
maps, DR1Basis, the instance prediction module and, for panoptic models, the
unified panoptic layer. The learnt parts are modules; from their outputs to
masks and panoptic ids is :mod:`.post_processing`, with the thresholds of
``test_cfg``.
"""
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import scale_boxes
from mmdet.utils import ConfigType, InstanceList, OptConfigType, OptMultiConfig

from ..post_processing import panoptic_segmentation, paste_masks_in_image


class DR1MaskFeatures(NamedTuple):
    """One pass of the network up to the basis, per image of the batch.

    ``fpn``: P3..P7, each (N, C, H_l, W_l). ``cls_scores``,
    ``bbox_preds``, ``centernesses``, ``box_feats``, ``contexts``: the dense
    head's outputs per level (:meth:`DR1MaskHead.forward_single`).
    ``basis``: F, (N, D, H / 4, W / 4).
    """
    fpn: Tuple[Tensor, ...]
    cls_scores: List[Tensor]
    bbox_preds: List[Tensor]
    centernesses: List[Tensor]
    box_feats: List[Tensor]
    contexts: List[Tensor]
    basis: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> 'DR1MaskFeatures':
        """The same fields with ``fn`` applied to every tensor (a dtype or
        device change)."""
        return DR1MaskFeatures(*[
            [fn(t) for t in field] if isinstance(field, (list, tuple))
            else fn(field) for field in self
        ])


@MODELS.register_module()
class DR1Mask(SingleStageDetector):
    """DR1Mask detector.

    Args:
        backbone, neck (dict): as mmdet's single-stage detectors (FPN P3-P7).
        bbox_head (dict): the dense head (``DR1MaskHead``); its embedding and
            context widths are filled in from ``mask_head`` and ``basis``.
        basis (dict): ``DR1Basis``, the bottom-up branch producing F.
        mask_head (dict): ``InstancePredictionModule``; its
            ``basis_channels`` and ``basis_stride`` are the basis'.
        panoptic_head (dict, optional): ``UnifiedPanopticLayer`` (its
            ``basis_channels`` and ``basis_stride`` the basis'); with it the
            model also predicts ``pred_panoptic_seg``.
        semantic_head (dict, optional): ``AuxSemanticHead``, training only.
        test_cfg (dict): the dense head's (``nms_pre``, ``score_thr``,
            ``nms``, ``max_per_img``, ...), ``mask_thr`` for the instance
            masks and, for panoptic models, ``panoptic=dict(score_thr,
            mask_overlap, stuff_area_limit)`` (see :meth:`predict_panoptic`).
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
        # The dense head emits what the basis and the instance module read,
        # so they are built first and give it its widths.
        basis = MODELS.build(basis)
        on_basis = dict(basis_channels=basis.channels,
                        basis_stride=basis.stride)
        mask_head = MODELS.build(dict(mask_head, **on_basis))
        if panoptic_head is not None:
            panoptic_head = MODELS.build(dict(panoptic_head, **on_basis))
            if mask_head.embedding_channels != basis.channels:
                raise ValueError(
                    'the panoptic layer uses the instance embeddings as '
                    f'{basis.channels}-channel columns of W (Eq. 9), but '
                    f"mask_head.attention='{mask_head.attention}' makes "
                    f'them {mask_head.embedding_channels} long: set '
                    "model.mask_head.attention='vector'")
        super().__init__(
            backbone=backbone,
            neck=neck,
            bbox_head=dict(
                bbox_head,
                embedding_channels=mask_head.embedding_channels,
                context_channels=basis.context_channels),
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.basis = basis
        self.mask_head = mask_head
        self.panoptic_head = panoptic_head
        self.semantic_head = MODELS.build(semantic_head) \
            if semantic_head is not None else None

    @property
    def with_panoptic(self) -> bool:
        return self.panoptic_head is not None

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: Optional[SampleList] = None
                 ) -> DR1MaskFeatures:
        """Backbone, FPN, dense head and basis: what ``loss`` and
        ``predict`` share, and mmdet's ``mode='tensor'`` (no ground truth
        needed)."""
        fpn = self.extract_feat(batch_inputs)
        cls_scores, bbox_preds, centernesses, box_feats, contexts = \
            self.bbox_head(fpn)
        basis = self.basis(fpn, contexts,
                           self.basis.output_size(batch_inputs.shape[-2:]))
        return DR1MaskFeatures(fpn, cls_scores, bbox_preds, centernesses,
                               box_feats, contexts, basis)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> dict:
        gt_instances = [s.gt_instances for s in batch_data_samples]
        img_metas = [s.metainfo for s in batch_data_samples]

        feats = self._forward(batch_inputs)
        # Under mixed precision (--amp) the network above runs in half
        # precision; the losses, and the mask and panoptic logits they are
        # computed on, are computed in fp32 from its outputs.
        with torch.autocast(batch_inputs.device.type, enabled=False):
            feats = feats.map(Tensor.float)
            losses = self.bbox_head.loss_by_feat(
                feats.cls_scores, feats.bbox_preds, feats.centernesses,
                feats.box_feats, gt_instances, img_metas)
            positives = self.bbox_head.positive_infos(gt_instances)
            _add_losses(
                losses,
                self.mask_head.loss(feats.basis, positives, gt_instances))
            if self.with_panoptic:
                _add_losses(
                    losses,
                    self.panoptic_loss(feats, positives, batch_data_samples))
            if self.semantic_head is not None:
                _add_losses(
                    losses,
                    self.semantic_head.loss(feats.fpn[0], batch_data_samples))
        return losses

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """``pred_instances`` (bboxes, scores, labels, bool masks) and, for
        panoptic models, ``pred_panoptic_seg``: at the original image size
        when ``rescale``, else at the (unpadded) input size."""
        feats = self._forward(batch_inputs)
        return self.predict_by_feat(feats, batch_data_samples, rescale)

    def predict_by_feat(self,
                        feats: DR1MaskFeatures,
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> SampleList:
        """:meth:`predict` from the network's outputs: the detections, their
        masks and, for panoptic models, the panoptic map. Everything here is
        post-processing, so ``feats`` may come from another runtime (an
        exported ONNX graph) as long as it has :class:`DR1MaskFeatures`'
        tensors."""
        img_metas = [s.metainfo for s in batch_data_samples]
        detections = self.detections(feats, img_metas)
        instances = self.predict_instances(feats.basis, detections,
                                           img_metas, rescale)
        batch_data_samples = self.add_pred_to_datasample(
            batch_data_samples, instances)
        if self.with_panoptic:
            panoptic = self.predict_panoptic(feats, detections, instances,
                                             img_metas, rescale)
            for sample, pred in zip(batch_data_samples, panoptic):
                sample.pred_panoptic_seg = pred
        return batch_data_samples

    def detections(self, feats: DR1MaskFeatures,
                   batch_img_metas: List[dict]) -> InstanceList:
        """The dense head's detections: ``bboxes`` in input pixels (not
        rescaled), ``scores``, ``labels`` and the ``embeddings`` of the
        instance module and the panoptic layer, per image."""
        return self.bbox_head.predict_by_feat(
            feats.cls_scores, feats.bbox_preds, feats.centernesses,
            feats.box_feats, batch_img_metas=batch_img_metas, rescale=False)

    def predict_instances(self, basis: Tensor, detections: InstanceList,
                          batch_img_metas: List[dict],
                          rescale: bool) -> InstanceList:
        """Each detection's mask, pasted into the image.

        Args:
            basis (Tensor): F, (N, D, h, w).
            detections (list[InstanceData]): the dense head's, boxes in
                input pixels, with ``embeddings``.
            batch_img_metas (list[dict]): ``img_shape``, ``ori_shape``,
                ``scale_factor``.
            rescale (bool): boxes and masks at the original image size, else
                at the input size.

        Returns:
            list[InstanceData]: ``bboxes``, ``scores``, ``labels`` and bool
            ``masks`` (n, H, W) per image, binarised at ``test_cfg.mask_thr``.
        """
        results = []
        for dets, probs, meta in zip(detections,
                                     self.mask_head.predict(basis, detections),
                                     batch_img_metas):
            bboxes, size = dets.bboxes, meta['img_shape'][:2]
            if rescale:
                bboxes = scale_boxes(bboxes,
                                     [1 / s for s in meta['scale_factor']])
                size = meta['ori_shape'][:2]
            results.append(
                InstanceData(
                    bboxes=bboxes,
                    scores=dets.scores,
                    labels=dets.labels,
                    masks=paste_masks_in_image(probs, bboxes, size,
                                               self.test_cfg.mask_thr)))
        return results

    def panoptic_loss(self, feats: DR1MaskFeatures,
                      positive_infos: InstanceList,
                      batch_data_samples: SampleList) -> dict:
        """The unified panoptic layer's loss (Eq. 9 in training: each GT
        instance's column is the mean embedding of its positives)."""
        return self.panoptic_head.loss(feats.basis, positive_infos,
                                       batch_data_samples)

    def predict_panoptic(self, feats: DR1MaskFeatures,
                         detections: InstanceList, instances: InstanceList,
                         batch_img_metas: List[dict],
                         rescale: bool) -> List[PixelData]:
        """Eq. 9 at test time: the thing columns are the embeddings of the
        detections scoring at least ``test_cfg.panoptic.score_thr``; each
        pixel's argmax over [stuff ; instances] is its segment
        (:func:`~.post_processing.panoptic_segmentation`, with
        ``mask_overlap`` and ``stuff_area_limit`` from
        ``test_cfg.panoptic``). The pasted ``instances`` are not read: the
        layer segments the things itself.

        Returns:
            list[PixelData]: ``sem_seg`` (1, H, W) int64 panoptic ids in
            mmdet's format, at the original size when ``rescale``.
        """
        cfg = self.test_cfg.panoptic
        head = self.panoptic_head
        stride = self.basis.stride
        results = []
        for feat, dets, meta in zip(feats.basis, detections,
                                    batch_img_metas):
            dets = dets[dets.scores >= cfg.score_thr]
            img_shape = meta['img_shape'][:2]
            ids = panoptic_segmentation(
                self.panoptic_logits(feat, dets.embeddings, img_shape),
                dets.labels,
                dets.bboxes,
                img_shape,
                meta['ori_shape'][:2] if rescale else img_shape,
                num_things_classes=head.num_things_classes,
                num_stuff_classes=head.num_stuff_classes,
                stride=stride,
                mask_overlap=cfg.mask_overlap,
                stuff_area_limit=cfg.stuff_area_limit,
                suppress_outside_box=cfg.get('suppress_outside_box', True))
            results.append(PixelData(sem_seg=ids[None]))
        return results

    def panoptic_logits(self, basis: Tensor, embeddings: Tensor,
                        img_shape: Tuple[int, int]) -> Tensor:
        """Eq. 9 for one image over its unpadded input of ``img_shape``:
        (num_stuff_classes + n, h, w) from the basis (D, H_pad / s, W_pad /
        s) and the n embeddings (n, D) of its thing channels."""
        stride = self.basis.stride
        # Drop the padding before anything is resized.
        return self.panoptic_head.logits(
            basis[:, :-(-img_shape[0] // stride),
                  :-(-img_shape[1] // stride)], embeddings)


def _add_losses(losses: dict, new: dict) -> None:
    """Merge ``new`` into ``losses``; two heads naming a loss alike would
    silently drop one of them."""
    clash = losses.keys() & new.keys()
    if clash:
        raise KeyError(f'loss names {sorted(clash)} come from two heads: '
                       'rename one (each head names its own losses)')
    losses.update(new)
