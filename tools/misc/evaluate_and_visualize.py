"""Evaluate a panoptic checkpoint once, save its metrics and a few overlays.

The last step of ``make quickstart``; works for any panoptic DR1Mask config:

    python tools/misc/evaluate_and_visualize.py CONFIG CHECKPOINT \
        --work-dir work_dirs/quickstart --num-vis 6

writes ``WORK_DIR/metrics.json`` (PQ / SQ / RQ for all, things and stuff, in
percent as ``CocoPanopticMetric`` reports them; box and mask mAP in [0, 1] as
``CocoMetric`` does; the panoptic map's mIoU in percent) and
``WORK_DIR/vis/*.png``: ground truth (left) beside the prediction (right),
drawn by mmdet's ``DetLocalVisualizer``.
"""
import argparse
import json
import os.path as osp

import numpy as np
import torch
from mmcv import imread
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmengine.structures import PixelData
from panopticapi.utils import rgb2id

from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import VISUALIZERS


# metrics.json key -> key of the metrics the runner reports
REPORTED = {
    **{
        f'{name}{part}': f'coco_panoptic/{name}{part}'
        for name in ('PQ', 'SQ', 'RQ') for part in ('', '_th', '_st')
    },
    'bbox_mAP': 'coco/bbox_mAP',
    'bbox_mAP_50': 'coco/bbox_mAP_50',
    'segm_mAP': 'coco/segm_mAP',
    'segm_mAP_50': 'coco/segm_mAP_50',
    'mIoU': 'panoptic_semantic/mIoU',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--num-vis', type=int, default=6,
                        help='validation images to draw')
    return parser.parse_args()


def gt_panoptic_seg(data_info: dict, num_classes: int) -> PixelData:
    """The ground-truth PNG in mmdet's id format, for drawing."""
    png = rgb2id(imread(data_info['seg_map_path'], channel_order='rgb'))
    ids = np.full(png.shape, num_classes, dtype=np.int64)
    for k, segment in enumerate(data_info['segments_info'], start=1):
        ids[png == segment['id']] = segment['category'] + (
            k * INSTANCE_OFFSET if segment['is_thing'] else 0)
    return PixelData(sem_seg=ids[None])


def save_overlays(runner: Runner, out_dir: str, num: int) -> None:
    dataset = runner.test_dataloader.dataset
    visualizer = VISUALIZERS.build(runner.cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    num_classes = len(dataset.metainfo['classes'])
    runner.model.eval()
    for idx in range(min(num, len(dataset))):
        data = pseudo_collate([dataset[idx]])
        with torch.no_grad():
            sample = runner.model.test_step(data)[0]
        info = dataset.get_data_info(idx)
        # Draw the panoptic segmentation alone on both sides.
        drawn = sample.clone()
        for key in ('gt_instances', 'gt_sem_seg', 'pred_instances'):
            if key in drawn:
                delattr(drawn, key)
        drawn.gt_panoptic_seg = gt_panoptic_seg(info, num_classes)
        image = data['inputs'][0].permute(1, 2, 0).numpy()[..., ::-1]
        name = osp.splitext(osp.basename(info['img_path']))[0]
        visualizer.add_datasample(
            name, np.ascontiguousarray(image), drawn,
            out_file=osp.join(out_dir, f'{name}.png'))


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    cfg.load_from = args.checkpoint
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    report = {key: metrics[source] for key, source in REPORTED.items()
              if source in metrics}
    with open(osp.join(args.work_dir, 'metrics.json'), 'w') as f:
        json.dump(report, f, indent=2)
    vis_dir = osp.join(args.work_dir, 'vis')
    save_overlays(runner, vis_dir, args.num_vis)
    print('\n'.join([f'{key:>12}: {value:.3f}' for key, value in report.items()]))
    print(f'metrics: {osp.join(args.work_dir, "metrics.json")}, '
          f'overlays: {vis_dir}/')


if __name__ == '__main__':
    main()
