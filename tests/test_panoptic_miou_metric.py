"""PanopticMIoUMetric: IoU of the panoptic map's class labels against
gt_sem_seg, from one confusion matrix over the dataset."""
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger

from mmdet.evaluation.functional import INSTANCE_OFFSET

from projects.dr1mask.evaluation.panoptic_miou_metric import PanopticMIoUMetric

META = dict(classes=('car', 'road', 'sky'), thing_classes=('car', ),
            stuff_classes=('road', 'sky'))
VOID = len(META['classes'])
PREFIX = 'panoptic_semantic/'


def sample(gt, pan):
    return dict(
        img_path='x.png',
        gt_sem_seg=dict(sem_seg=torch.tensor(gt)[None]),
        pred_panoptic_seg=dict(sem_seg=torch.tensor(pan)[None]))


def evaluate(samples, **kwargs):
    metric = PanopticMIoUMetric(**kwargs)
    metric.dataset_meta = META
    for s in samples:
        metric.process({}, [s])
    return metric.evaluate(len(samples))


# Ground truth 0 car, 1 road, 2 sky, 255 void; the prediction holds two car
# instances (ids 1000, 2000), void (3) and stuff.
GT = [[0, 0, 1, 1], [2, 2, 255, 1]]
PAN = [[INSTANCE_OFFSET, 1, 1, 1], [2, VOID, 2 * INSTANCE_OFFSET, 2]]
# Pixel pairs (gt, pred), the void-gt pixel left out:
# car: TP 1, gt 2, pred 1 -> 1 / 2; road: TP 2, gt 3, pred 3 -> 2 / 4;
# sky: TP 1, gt 2 (one predicted void), pred 2 (one road pixel) -> 1 / 3.
IOU = np.array([1 / 2, 2 / 4, 1 / 3]) * 100


def test_known_confusion_gives_hand_computed_iou():
    results = evaluate([sample(GT, PAN)])
    assert results[PREFIX + 'mIoU'] == pytest.approx(IOU.mean(), abs=1e-3)
    assert results[PREFIX + 'mIoU_th'] == pytest.approx(IOU[0], abs=1e-3)
    assert results[PREFIX + 'mIoU_st'] == pytest.approx(
        IOU[1:].mean(), abs=1e-3)


def test_iou_pools_pixels_over_images():
    """The same pixels split over two images give the same IoU: one
    confusion matrix, not a mean of per-image IoUs (which would differ:
    the first row alone has car IoU 1/2, road 2/3, no sky)."""
    split = evaluate([sample(GT[:1], PAN[:1]), sample(GT[1:], PAN[1:])])
    assert split == evaluate([sample(GT, PAN)])


def test_ground_truth_oracle_scores_100():
    gt = np.array(GT)
    pan = np.where(gt == 0, gt + 7 * INSTANCE_OFFSET, gt)
    pan[gt == 255] = VOID
    results = evaluate([sample(gt, pan)])
    assert results == {
        PREFIX + 'mIoU': 100.0,
        PREFIX + 'mIoU_th': 100.0,
        PREFIX + 'mIoU_st': 100.0
    }


def test_absent_class_is_left_out_and_false_class_counts_zero():
    # No sky anywhere: sky has no IoU, the mean is over car and road.
    assert evaluate([sample([[0, 1]], [[0, 1]])])[PREFIX + 'mIoU'] == 100.0
    # Sky predicted where there is none: sky IoU 0, and road loses a pixel.
    results = evaluate([sample([[0, 1, 1]], [[0, 1, 2]])])
    assert results[PREFIX + 'mIoU_st'] == pytest.approx((50 + 0) / 2)


def test_classwise_logs_a_table(capsys):
    MMLogger.get_instance('test_panoptic_miou')
    evaluate([sample(GT, PAN)], classwise=True)
    out = capsys.readouterr().out
    assert 'Per-class IoU' in out and '33.33' in out


def test_missing_ground_truth_or_size_mismatch_is_named():
    metric = PanopticMIoUMetric()
    metric.dataset_meta = META
    missing = sample(GT, PAN)
    del missing['gt_sem_seg']
    with pytest.raises(KeyError, match='LoadPanopticAnnotations'):
        metric.process({}, [missing])
    with pytest.raises(ValueError, match=r'x.png.*\(2, 4\).*\(1, 4\)'):
        metric.process({}, [sample(GT, PAN[:1])])
