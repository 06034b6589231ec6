"""The same-detector baseline: DR1Mask's detector and instance masks with a
separate semantic branch and heuristic fusion, as BlendMask builds its
panoptic model, instead of the unified panoptic layer.

The paper's Table 9 sets DR1Mask (42.9 PQ, R-50) beside BlendMask (42.5):
the same FCOS detector and instance-branch family, with stuff from a
semantic FPN head and things pasted over it by score. This model is that
pair's other half on DR1Mask's own detector, so a comparison against it
isolates what the unified layer adds (the ablation "unified layer against
separate branch" the paper does not run).
"""
from typing import List

from mmengine.structures import PixelData

from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, InstanceList

from .dr1mask import DR1Mask, DR1MaskFeatures


@MODELS.register_module()
class DR1MaskSeparateBranch(DR1Mask):
    """DR1Mask with a semantic branch and heuristic fusion for panoptic.

    Args:
        seg_head (dict): the semantic branch on the FPN, mmdet's
            ``PanopticFPNHead`` (stuff classes and one "thing" class). It
            sums its levels upsampled by powers of two, so they must halve
            exactly: pad the input to the stride of its coarsest level.
        panoptic_fusion_head (dict): mmdet's ``HeuristicFusionHead``: masks
            pasted by score, one dropped when more than ``mask_overlap`` of
            it is taken, stuff from the semantic argmax, stuff segments under
            ``stuff_area_limit`` pixels void.
        test_cfg (dict): DR1Mask's, with ``panoptic=dict(score_thr,
            mask_overlap, stuff_area_limit)``: detections scoring at least
            ``score_thr`` are fused.
        **kwargs: DR1Mask's arguments, without ``panoptic_head``.
    """

    def __init__(self, seg_head: ConfigType, panoptic_fusion_head: ConfigType,
                 test_cfg: ConfigType, **kwargs) -> None:
        if kwargs.get('panoptic_head') is not None:
            raise ValueError(
                'DR1MaskSeparateBranch segments stuff with its seg_head '
                'instead of the unified panoptic layer: set '
                'model.panoptic_head=None')
        if test_cfg.get('panoptic') is None:
            raise ValueError(
                'DR1MaskSeparateBranch fuses the detections scoring at least '
                'test_cfg.panoptic.score_thr: set model.test_cfg.panoptic='
                'dict(score_thr, mask_overlap, stuff_area_limit)')
        super().__init__(test_cfg=test_cfg, **kwargs)
        self.seg_head = MODELS.build(seg_head)
        self.panoptic_fusion_head = MODELS.build(
            dict(panoptic_fusion_head, test_cfg=test_cfg['panoptic']))

    @property
    def with_panoptic(self) -> bool:
        return True

    def panoptic_loss(self, feats: DR1MaskFeatures,
                      positive_infos: InstanceList,
                      batch_data_samples: SampleList) -> dict:
        """The semantic branch's cross entropy over [stuff ; thing]."""
        return self.seg_head.loss(feats.fpn, batch_data_samples)

    def predict_panoptic(self, feats: DR1MaskFeatures,
                         detections: InstanceList, instances: InstanceList,
                         batch_img_metas: List[dict],
                         rescale: bool) -> List[PixelData]:
        """The semantic branch's logits at the size of ``instances``' masks,
        and the instances scoring at least ``test_cfg.panoptic.score_thr``
        pasted over them by ``HeuristicFusionHead``."""
        seg_preds = self.seg_head.predict(feats.fpn, batch_img_metas,
                                          rescale)
        if not rescale:
            # at the padded input size: the masks are at the unpadded one
            seg_preds = [
                seg[:, :meta['img_shape'][0], :meta['img_shape'][1]]
                for seg, meta in zip(seg_preds, batch_img_metas)
            ]
        score_thr = self.test_cfg.panoptic.score_thr
        kept = [inst[inst.scores >= score_thr] for inst in instances]
        return self.panoptic_fusion_head.predict(kept, seg_preds)
