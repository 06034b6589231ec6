"""How many positive training samples each ground-truth object gets, by
object size, under DR1Mask's assignment (FCOS's, with CondInst's head:
points of P3-P7 inside the object's centre region and its regress range)
and under Panoptic-FPN's RPN (anchors of P2-P6 matched by IoU, low-quality
matches included).

Each training image of the config's dataset at its training size (no
flip), the boxes from its COCO instances json; no network is run. Sizes are
the square root of the box area, in pixels. Panoptic-FPN's RoI head adds
every ground-truth box to its proposals (``add_gt_as_proposals``), so its
second stage trains on every object whatever the RPN assigns.

Usage::

    python tools/analysis_tools/positives_per_object.py \\
        configs/dr1mask/dr1mask_r18_fpn_toy.py \\
        configs/baselines/panoptic-fpn_r18_fpn_toy-panoptic.py \\
        data/toy_panoptic/annotations/instances_train.json
"""
import argparse
import json
import math
from typing import Dict, List, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import register_all_modules

BINS = [0, 8, 16, 32, 64, math.inf]


def featmap_sizes(height: int, width: int, pad: int,
                  strides: Sequence[int]) -> List[Tuple[int, int]]:
    """Feature map sizes of a ResNet + FPN at ``strides`` for an image
    padded to a multiple of ``pad``: every stride-2 layer rounds up."""
    height, width = (math.ceil(height / pad) * pad,
                     math.ceil(width / pad) * pad)
    sizes = []
    for stride in strides:
        h, w = height, width
        for _ in range(int(math.log2(stride))):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


def images(ann_file: str) -> List[Tuple[int, int, InstanceData]]:
    """(height, width, ground truth: xyxy ``bboxes`` and ``labels``) per
    image with at least one object."""
    with open(ann_file) as f:
        coco = json.load(f)
    boxes: Dict[int, list] = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        boxes.setdefault(ann['image_id'], []).append([x, y, x + w, y + h])
    result = []
    for image in coco['images']:
        if image['id'] in boxes:
            gt = InstanceData(bboxes=torch.tensor(boxes[image['id']]))
            gt.labels = torch.zeros(len(gt.bboxes), dtype=torch.long)
            result.append((image['height'], image['width'], gt))
    return result


def dense_head_positives(cfg: Config, data) -> torch.Tensor:
    """Positive points per object under the config's FCOS-style head."""
    # the detector builds its head (DR1Mask's takes arguments from it)
    head = MODELS.build(cfg.model).bbox_head
    counts = []
    for height, width, gt in data:
        points = head.prior_generator.grid_priors(
            featmap_sizes(height, width,
                          cfg.model.data_preprocessor.pad_size_divisor,
                          head.strides), device='cpu')
        _, _, _, pos_gt_inds = head.get_targets(points, [gt])
        counts.append(torch.bincount(pos_gt_inds[0],
                                     minlength=len(gt.bboxes)))
    return torch.cat(counts)


def rpn_positives(cfg: Config, data) -> torch.Tensor:
    """Positive anchors per object under the config's RPN assigner."""
    generator = TASK_UTILS.build(cfg.model.rpn_head.anchor_generator)
    assigner = TASK_UTILS.build(cfg.model.train_cfg.rpn.assigner)
    counts = []
    for height, width, gt in data:
        anchors = torch.cat(generator.grid_priors(
            featmap_sizes(height, width,
                          cfg.model.data_preprocessor.pad_size_divisor,
                          [s[0] for s in generator.strides]), device='cpu'))
        result = assigner.assign(InstanceData(priors=anchors), gt)
        positive = result.gt_inds[result.gt_inds > 0] - 1
        counts.append(torch.bincount(positive, minlength=len(gt.bboxes)))
    return torch.cat(counts)


def table(data, columns: Dict[str, torch.Tensor]) -> str:
    """Per size bin: objects, and per column the share with no positive and
    the mean number of positives."""
    sizes = torch.cat([((gt.bboxes[:, 2] - gt.bboxes[:, 0]) *
                        (gt.bboxes[:, 3] - gt.bboxes[:, 1])).sqrt()
                       for _, _, gt in data])
    header = '| size (px) | objects | ' + ' | '.join(
        f'{name}: none | {name}: mean' for name in columns) + ' |'
    lines = [header, '|---' * (2 + 2 * len(columns)) + '|']
    for low, high in zip(BINS[:-1], BINS[1:]):
        inside = (sizes >= low) & (sizes < high)
        cells = []
        for counts in columns.values():
            part = counts[inside].float()
            cells += [f'{(part == 0).float().mean() * 100:.0f} %',
                      f'{part.mean():.1f}']
        lines.append(f'| {low}-{high} | {int(inside.sum())} | ' +
                     ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dense_config', help='DR1Mask (or CondInst) config')
    parser.add_argument('rpn_config', help='Panoptic-FPN (or Mask R-CNN) '
                        'config')
    parser.add_argument('ann_file', help='COCO instances json')
    args = parser.parse_args()
    register_all_modules()
    import projects.dr1mask  # noqa: F401  registers DR1Mask's modules
    data = images(args.ann_file)
    print(table(data, {
        'DR1Mask': dense_head_positives(Config.fromfile(args.dense_config),
                                        data),
        'RPN': rpn_positives(Config.fromfile(args.rpn_config), data),
    }))


if __name__ == '__main__':
    main()
