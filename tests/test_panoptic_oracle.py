"""Oracle: logits built from the ground truth, through the real post-processing
and mmdet's CocoPanopticMetric, score PQ 100. The path from logits to metric
loses nothing."""
import json
import subprocess
import sys

import numpy as np
import torch
from mmcv import imread
from mmengine.structures import InstanceData
from panopticapi.utils import rgb2id

from mmdet.evaluation import CocoPanopticMetric

from conftest import REPO
from projects.dr1mask.models.post_processing import panoptic_segmentation

THINGS = ('disk', 'square', 'triangle', 'ring')
STUFF = ('sky', 'grass', 'brick')


def oracle_logits(png: np.ndarray, segments: list, cat2label: dict):
    """One channel per stuff class, then one per thing segment (crowd ones
    too: a prediction over a crowd region of its class is not penalised),
    then one over the void pixels (ignored by PQ)."""
    h, w = png.shape
    stuff = np.zeros((len(STUFF), h, w), dtype=np.float32)
    things, labels = [], []
    for segment in segments:
        label = cat2label[segment['category_id']]
        mask = png == segment['id']
        if label >= len(THINGS):
            stuff[label - len(THINGS)][mask] = 1
        else:
            things.append(mask)
            labels.append(label)
    things.append(png == 0)
    labels.append(0)
    logits = np.concatenate([stuff, np.stack(things).astype(np.float32)])
    results = InstanceData(
        labels=torch.tensor(labels),
        bboxes=torch.tensor([[0., 0., w, h]] * len(labels)))
    return torch.from_numpy(logits), results


def test_ground_truth_logits_score_pq_100(tmp_path):
    root = tmp_path / 'toy'
    subprocess.run([
        sys.executable,
        str(REPO / 'tools/misc/generate_toy_panoptic.py'), str(root),
        '--num-train', '1', '--num-val', '6', '--seed', '3'
    ], check=True, capture_output=True)
    ann = json.loads((root / 'annotations/panoptic_val.json').read_text())
    cat2label = {c['id']: i for i, c in enumerate(ann['categories'])}
    metric = CocoPanopticMetric(
        ann_file=str(root / 'annotations/panoptic_val.json'),
        seg_prefix=str(root / 'annotations/panoptic_val'))
    metric.dataset_meta = dict(
        classes=THINGS + STUFF, thing_classes=THINGS, stuff_classes=STUFF)
    images = {image['id']: image for image in ann['images']}
    for annotation in ann['annotations']:
        image = images[annotation['image_id']]
        png = rgb2id(
            imread(str(root / 'annotations/panoptic_val' /
                       annotation['file_name']), channel_order='rgb'))
        logits, results = oracle_logits(png, annotation['segments_info'],
                                        cat2label)
        shape = png.shape
        ids = panoptic_segmentation(
            logits, results.labels, results.bboxes, shape, shape,
            len(THINGS), len(STUFF), stride=1, mask_overlap=0.5,
            stuff_area_limit=0)
        metric.process({}, [
            dict(
                img_id=image['id'],
                img_path=str(root / 'val' / image['file_name']),
                ori_shape=shape,
                pred_panoptic_seg=dict(sem_seg=ids[None]))
        ])
    results = metric.evaluate(size=len(ann['annotations']))
    assert results['coco_panoptic/PQ'] == 100.0
    assert results['coco_panoptic/PQ_th'] == 100.0
    assert results['coco_panoptic/PQ_st'] == 100.0
