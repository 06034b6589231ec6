"""Test-time augmentation for DR1Mask: boxes, instance masks and panoptic.

mmdet's ``DetTTAModel`` merges boxes only. DR1Mask's masks and panoptic
logits are linear in the basis F of each view, so the views are merged
before any decision, not afterwards:

1. The detections of every view (flips undone, scales undone) are merged by
   NMS, with the model's ``test_cfg.nms`` and ``max_per_img`` unless
   ``tta_cfg`` sets its own.
2. Each kept detection's embedding is applied to every view's basis: its
   mask probabilities over its box (the instance module) and its panoptic
   logits (the unified panoptic layer), each brought back to the original
   image's frame and averaged over the views.
3. The averaged mask probabilities are pasted at ``test_cfg.mask_thr``; the
   panoptic map is the argmax of the averaged logits, as for one view
   (:func:`~.post_processing.merged_panoptic_segmentation`), after mask NMS
   on the first view. No fusion heuristic is needed.

One view through this model is the plain ``DR1Mask.predict``.
"""
from typing import List

import torch
from mmcv.ops import batched_nms
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, SampleList
from mmdet.structures.bbox import bbox2roi, bbox_flip, scale_boxes
from mmdet.utils import ConfigType, OptConfigType

from ..post_processing import (merged_panoptic_segmentation, panoptic_view,
                              paste_masks_in_image, unique_instances)


@MODELS.register_module()
class DR1MaskTTAModel(BaseTTAModel):
    """Merges the views of ``TestTimeAug`` (horizontal flips, resizes) of a
    :class:`~.DR1Mask` into one prediction: boxes, masks and, for panoptic
    models, the panoptic map, at the original image size.

    The first view is the reference of the panoptic mask NMS; the configs'
    ``tta_pipeline`` make it the plain one (no flip, the test scale).

    Args:
        module (dict or nn.Module): the DR1Mask to test.
        tta_cfg (dict, optional): ``nms`` and ``max_per_img`` of the merge
            of the views' detections, as mmdet's ``DetTTAModel``'s; each
            defaults to the model's ``test_cfg``.
        data_preprocessor (dict, optional): as ``BaseTTAModel``'s.
    """

    def __init__(self,
                 module: ConfigType,
                 tta_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        if self.module.with_panoptic and self.module.panoptic_head is None:
            raise ValueError(
                f'{type(self.module).__name__} has no unified panoptic layer '
                'whose logits the views could average: test it without --tta')
        self.tta_cfg = tta_cfg or {}

    def test_step(self, data: dict) -> SampleList:
        """Run the network on each view, then :meth:`merge_preds`.

        Each view's data samples get the view's own outputs: its detections
        as ``pred_instances`` (boxes in the view's input pixels, with their
        ``embeddings``) and its basis as ``basis`` (D, h, w).
        """
        model = self.module
        num_views = len(data['inputs'])
        views = []
        for view in range(num_views):
            batch = model.data_preprocessor(
                {key: value[view] for key, value in data.items()}, False)
            samples = batch['data_samples']
            feats = model._forward(batch['inputs'])
            detections = model.detections(feats,
                                          [s.metainfo for s in samples])
            for sample, dets, basis in zip(samples, detections, feats.basis):
                sample.pred_instances = dets
                sample.basis = basis
            views.append(samples)
        return self.merge_preds(list(zip(*views)))

    def merge_preds(self, data_samples_list: List[SampleList]) -> SampleList:
        """One prediction per image from its views' outputs.

        Args:
            data_samples_list (list[list[DetDataSample]]): per image, its
                views' samples as :meth:`test_step` fills them.

        Returns:
            list[DetDataSample]: per image, the first view's sample with
            ``pred_instances`` (``bboxes``, ``scores``, ``labels``, bool
            ``masks``) and, for panoptic models, ``pred_panoptic_seg``, in
            the original image's frame.
        """
        return [self._merge_views(views) for views in data_samples_list]

    def _merge_views(self, views: SampleList) -> DetDataSample:
        model = self.module
        cfg = model.test_cfg
        bases = [view.pop('basis') for view in views]
        metas = [view.metainfo for view in views]
        ori_shape = metas[0]['ori_shape'][:2]
        kept = self._merge_detections(views)
        probs = torch.stack([
            self._mask_probs(basis, kept, index, meta)
            for index, (basis, meta) in enumerate(zip(bases, metas))
        ]).mean(0)
        merged = views[0]
        merged.pred_instances = InstanceData(
            bboxes=kept.bboxes,
            scores=kept.scores,
            labels=kept.labels,
            masks=paste_masks_in_image(probs, kept.bboxes, ori_shape,
                                       cfg.mask_thr))
        if model.with_panoptic:
            things = kept[kept.scores >= cfg.panoptic.score_thr]
            merged.pred_panoptic_seg = PixelData(
                sem_seg=self._panoptic(bases, things, metas)[None])
        return merged

    def _merge_detections(self, views: SampleList) -> InstanceData:
        """All views' detections in the original frame, merged by NMS.

        Returns:
            InstanceData: the kept detections in descending score order:
            ``bboxes`` (original frame), ``scores``, ``labels``,
            ``embeddings``, ``view`` (the view each comes from),
            ``view_flipped`` (whether that view is flipped) and
            ``view_bboxes`` (its box in that view's input pixels).
        """
        detections = []
        for index, view in enumerate(views):
            dets = view.pred_instances
            detections.append(
                InstanceData(
                    bboxes=to_original(dets.bboxes, view.metainfo),
                    scores=dets.scores,
                    labels=dets.labels,
                    embeddings=dets.embeddings,
                    view=dets.labels.new_full((len(dets), ), index),
                    view_flipped=dets.labels.new_full(
                        (len(dets), ), is_flipped(view.metainfo),
                        dtype=torch.bool),
                    view_bboxes=dets.bboxes))
        detections = InstanceData.cat(detections)
        if len(detections) == 0:
            return detections
        test_cfg = self.module.test_cfg
        _, keep = batched_nms(detections.bboxes, detections.scores,
                              detections.labels,
                              self.tta_cfg.get('nms', test_cfg.nms))
        return detections[keep[:self.tta_cfg.get('max_per_img',
                                                 test_cfg.max_per_img)]]

    def _boxes_in_view(self, kept: InstanceData, index: int,
                       meta: dict) -> Tensor:
        """(n, 4) the kept boxes in the input pixels of view ``index``; a
        detection of that view keeps its own box (mapping it back and forth
        would round it)."""
        return torch.where((kept.view == index)[:, None], kept.view_bboxes,
                           from_original(kept.bboxes, meta))

    def _mask_probs(self, basis: Tensor, kept: InstanceData, index: int,
                    meta: dict) -> Tensor:
        """(n, S, S) mask probabilities of the kept detections from view
        ``index``'s basis (D, h, w), over their boxes, in the original
        image's orientation.

        A factored or full attention is laid out in the orientation of the
        view its embedding comes from: the crops of a view flipped the other
        way are mirrored into it before the blending. A vector embedding
        weighs channels only, so its mask is read in this view's orientation
        as the plain model reads it (one cropped map, not D).
        """
        head = self.module.mask_head
        rois = bbox2roi([self._boxes_in_view(kept, index, meta)])
        mirrored = (kept.view_flipped != is_flipped(meta)) \
            & (head.attention != 'vector')
        logits = rois.new_zeros((len(rois), head.mask_size, head.mask_size))
        if (~mirrored).any():
            logits[~mirrored] = head(basis[None], rois[~mirrored],
                                     kept.embeddings[~mirrored])
        if mirrored.any():
            crops = head.crop(basis[None], rois[mirrored]).flip(-1)
            logits[mirrored] = head.blend(
                crops, kept.embeddings[mirrored]).flip(-1)
        probs = logits.sigmoid()
        return probs.flip(-1) if is_flipped(meta) else probs

    def _panoptic(self, bases: List[Tensor], things: InstanceData,
                  metas: List[dict]) -> Tensor:
        """(H, W) panoptic ids at the original size from the views' bases
        (D, h_v, w_v) and the thing channels' detections."""
        model = self.module
        cfg = model.test_cfg.panoptic
        head = model.panoptic_head
        ori_shape = metas[0]['ori_shape'][:2]
        views = [
            panoptic_view(
                model.panoptic_logits(basis, things.embeddings,
                                      meta['img_shape'][:2]),
                meta['img_shape'][:2], ori_shape, model.basis.stride,
                flip=is_flipped(meta))
            for basis, meta in zip(bases, metas)
        ]
        keep = unique_instances(views[0].logits,
                                self._boxes_in_view(things, 0, metas[0]),
                                head.num_stuff_classes, model.basis.stride,
                                cfg.mask_overlap)
        return merged_panoptic_segmentation(
            views,
            things.labels,
            things.bboxes,
            keep,
            num_things_classes=head.num_things_classes,
            num_stuff_classes=head.num_stuff_classes,
            stuff_area_limit=cfg.stuff_area_limit,
            suppress_outside_box=cfg.get('suppress_outside_box', True))


def is_flipped(meta: dict) -> bool:
    """Whether a view is the image flipped horizontally (the only flip the
    merge undoes)."""
    if not meta.get('flip', False):
        return False
    if meta['flip_direction'] != 'horizontal':
        raise ValueError(
            f"flip_direction={meta['flip_direction']!r}: DR1MaskTTAModel "
            "undoes horizontal flips only; use RandomFlip(prob=1., "
            "direction='horizontal') in tta_pipeline")
    return True


def to_original(bboxes: Tensor, meta: dict) -> Tensor:
    """(n, 4) boxes in a view's input pixels -> the original image's."""
    if is_flipped(meta):
        bboxes = bbox_flip(bboxes, meta['img_shape'][:2], 'horizontal')
    return scale_boxes(bboxes, [1 / s for s in meta['scale_factor']])


def from_original(bboxes: Tensor, meta: dict) -> Tensor:
    """(n, 4) boxes in the original image -> a view's input pixels."""
    bboxes = scale_boxes(bboxes, meta['scale_factor'])
    if is_flipped(meta):
        bboxes = bbox_flip(bboxes, meta['img_shape'][:2], 'horizontal')
    return bboxes
