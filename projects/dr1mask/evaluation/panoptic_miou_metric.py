"""mIoU of a panoptic map's semantic labels, things and stuff together, as
Panoptic-DeepLab reports it beside PQ; mmdet has no such metric for
panoptic models."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import METRICS


def confusion_entries(gt: np.ndarray, pred: np.ndarray,
                      num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """One image's confusion matrix, as its non-zero entries.

    The matrix ``M`` is ``(C, C + 1)``: row ``i`` is the ground-truth class,
    column ``j`` the predicted one, and column ``C`` is void (no class
    predicted). Ground-truth pixels outside ``[0, C)`` (void, 255) are left
    out; predicted labels outside ``[0, C)`` count as void.

    Args:
        gt: (H, W) ground-truth class labels.
        pred: (H, W) predicted class labels.
        num_classes: ``C``.

    Returns:
        ``(index, count)``: the flat indices ``i * (C + 1) + j`` of the
        non-zero entries of ``M`` and their pixel counts, both (K,).
    """
    gt = gt.astype(np.int64, copy=False)
    pred = pred.astype(np.int64, copy=False)
    valid = (gt >= 0) & (gt < num_classes)
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(
        gt[valid] * (num_classes + 1) + pred[valid],
        minlength=num_classes * (num_classes + 1))
    index = np.flatnonzero(counts)
    return index, counts[index]


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU from a ``(C, C + 1)`` confusion matrix ``M``.

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` with ``TP_c = M[c, c]``,
    ``TP_c + FN_c = sum_j M[c, j]`` (void predictions included: a missed
    pixel) and ``TP_c + FP_c = sum_i M[i, c]``. A class neither in the
    ground truth nor predicted has no IoU (NaN).

    Returns:
        (C,) IoU in [0, 1], NaN where undefined.
    """
    num_classes = confusion.shape[0]
    tp = np.diagonal(confusion).astype(np.float64)
    union = confusion.sum(1) + confusion[:, :num_classes].sum(0) - tp
    iou = np.full(num_classes, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


@METRICS.register_module()
class PanopticMIoUMetric(BaseMetric):
    """mIoU over all classes (things and stuff) of ``pred_panoptic_seg``.

    Each pixel's predicted class is ``id % INSTANCE_OFFSET`` of the panoptic
    map (void: ``num_classes``); its ground-truth class is ``gt_sem_seg``,
    which ``LoadPanopticAnnotations`` builds from the ground-truth PNG and
    its segments (every segment, crowd ones included, gets its class; void
    is 255). Reading the ground truth from the data samples, not from the
    annotation files as ``CocoPanopticMetric`` does, keeps the metric free
    of file paths: the COCO and Cityscapes test pipelines already load it,
    after ``Resize``, so it is at the original size of the predictions.

    One confusion matrix is accumulated over the dataset (non-zero entries
    per image, summed at the end), so the IoU of a class is over all its
    pixels, not a mean over images::

        IoU_c = TP_c / (TP_c + FP_c + FN_c),   mIoU = mean_c IoU_c

    over the classes with a defined IoU. A ground-truth pixel predicted as
    void is a false negative of its class; void ground truth is ignored.

    Args:
        classwise: Also log a table of per-class IoU.
        collect_device: Device used to collect results across ranks.
        prefix: Prefix of the metric names (default ``panoptic_semantic``).

    Metrics: ``mIoU`` (all classes), ``mIoU_th`` (things), ``mIoU_st``
    (stuff), in percent.
    """

    default_prefix: Optional[str] = 'panoptic_semantic'

    def __init__(self,
                 classwise: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.classwise = classwise

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            if 'gt_sem_seg' not in sample:
                raise KeyError(
                    f'PanopticMIoUMetric: image {sample.get("img_path")} '
                    'has no gt_sem_seg; the test pipeline must load it '
                    '(LoadPanopticAnnotations with with_seg=True, after '
                    'Resize)')
            gt = _numpy(sample['gt_sem_seg']['sem_seg'])[0]
            pred = _numpy(sample['pred_panoptic_seg']['sem_seg'])[0]
            if gt.shape != pred.shape:
                raise ValueError(
                    f'PanopticMIoUMetric: image {sample.get("img_path")}: '
                    f'gt_sem_seg is {gt.shape}, pred_panoptic_seg '
                    f'{pred.shape}; load the ground truth after Resize so '
                    'that it keeps the original size')
            self.results.append(
                confusion_entries(gt, pred % INSTANCE_OFFSET, num_classes))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        classes = self.dataset_meta['classes']
        num_classes = len(classes)
        index = np.concatenate([entries[0] for entries in results])
        count = np.concatenate([entries[1] for entries in results])
        # float64 counts are exact up to 2**53 pixels.
        confusion = np.bincount(
            index, weights=count,
            minlength=num_classes * (num_classes + 1)).reshape(
                num_classes, num_classes + 1)
        iou = iou_from_confusion(confusion)
        is_thing = np.array(
            [name in self.dataset_meta['thing_classes'] for name in classes])
        metrics = {}
        for key, selected in (('mIoU', slice(None)), ('mIoU_th', is_thing),
                              ('mIoU_st', ~is_thing)):
            values = iou[selected]
            values = values[~np.isnan(values)]
            metrics[key] = round(float(values.mean()) * 100,
                                 3) if values.size else float('nan')
        if self.classwise:
            rows = [['class', 'IoU', 'thing']] + [[
                name, '-' if np.isnan(value) else f'{value * 100:.2f}',
                'yes' if thing else 'no'
            ] for name, value, thing in zip(classes, iou, is_thing)]
            MMLogger.get_current_instance().info(
                'Per-class IoU of the panoptic map:\n' +
                AsciiTable(rows).table)
        return metrics


def _numpy(data) -> np.ndarray:
    return data.cpu().numpy() if isinstance(data, torch.Tensor) \
        else np.asarray(data)
