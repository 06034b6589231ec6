"""Panoptic DR1Mask on any image: an overlay PNG and a JSON of its segments.

    python demo/image_demo.py IMAGE CONFIG --weights CKPT --out-dir DIR

writes ``DIR/<image name>.png`` (the panoptic segmentation drawn by mmdet's
``DetLocalVisualizer``) and ``DIR/<image name>.json``: one entry per segment
with its class name, whether it is a thing, its area in pixels and, for
things, the detection score. Grayscale images are read as 3-channel.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
from mmcv import imread
from mmengine.dataset import Compose

from mmdet.apis import inference_detector, init_detector
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import VISUALIZERS


ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='a panoptic DR1Mask config')
    parser.add_argument('--weights', required=True, help='checkpoint file')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args()


def segments(panoptic: np.ndarray, scores: np.ndarray, classes: tuple,
             num_things: int) -> list:
    """Describe each segment of an mmdet panoptic id map."""
    ids, areas = np.unique(panoptic, return_counts=True)
    described = []
    for segment_id, area in zip(ids.tolist(), areas.tolist()):
        label, instance = segment_id % INSTANCE_OFFSET, \
            segment_id // INSTANCE_OFFSET
        if label >= len(classes):  # void
            continue
        entry = dict(id=segment_id, label=label, name=classes[label],
                     isthing=label < num_things, area=area)
        if instance:
            entry['score'] = round(float(scores[instance - 1]), 4)
        described.append(entry)
    return described


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.image):
        sys.exit(f'error: image {args.image!r} does not exist')
    model = init_detector(args.config, args.weights, device=args.device)
    if not getattr(model, 'with_panoptic', False):
        sys.exit(f'error: {args.config} is not a panoptic DR1Mask config')
    # A new image has no annotations to load.
    pipeline = Compose([
        step for step in model.cfg.test_dataloader.dataset.pipeline
        if step['type'] not in ANNOTATION_LOADERS
    ])
    result = inference_detector(model, args.image, test_pipeline=pipeline)

    meta = model.dataset_meta
    panoptic = result.pred_panoptic_seg.sem_seg[0].cpu().numpy()
    info = segments(panoptic, result.pred_instances.scores.cpu().numpy(),
                    meta['classes'], len(meta['thing_classes']))
    os.makedirs(args.out_dir, exist_ok=True)
    name = osp.splitext(osp.basename(args.image))[0]
    with open(osp.join(args.out_dir, f'{name}.json'), 'w') as f:
        json.dump(dict(image=args.image, segments=info), f, indent=2)

    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = meta
    drawn = result.clone()
    del drawn.pred_instances  # draw the panoptic segmentation alone
    image = imread(args.image, channel_order='rgb')
    visualizer.add_datasample(
        name, image, drawn, draw_gt=False,
        out_file=osp.join(args.out_dir, f'{name}.png'))
    print(f'{len(info)} segments: {osp.join(args.out_dir, name)}.png / .json')


if __name__ == '__main__':
    main()
