"""Panoptic DR1Mask on any image: an overlay PNG and a JSON of its segments.

    python demo/image_demo.py IMAGE [IMAGE ...] CONFIG --weights CKPT \
        --out-dir DIR

writes, for each image, ``DIR/<image name>.png`` (the panoptic segmentation
drawn by mmdet's ``DetLocalVisualizer``) and ``DIR/<image name>.json``: the
image's size and one entry per segment with its class name, whether it is a
thing, its area in pixels and, for things, the detection score. Images are
decoded as training decodes them (mmcv, cv2): grayscale, RGBA and 16-bit
images become 8-bit 3-channel, EXIF orientation is applied, and the outputs
have the size of the image so decoded.

``--backend onnxruntime --onnx FILE.onnx`` runs the dense network in ONNX
Runtime from the graph ``tools/deployment/export_onnx.py`` wrote for the same
config and checkpoint (``projects.dr1mask.DR1MaskORT``); the rest, and the
outputs, are the PyTorch backend's.
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
from projects.dr1mask import DR1MaskORT


ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('config', help='a panoptic DR1Mask config')
    parser.add_argument('--weights', required=True, help='checkpoint file')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--backend', choices=('pytorch', 'onnxruntime'),
                        default='pytorch',
                        help='what runs the dense network (default pytorch)')
    parser.add_argument('--onnx', help='the graph of '
                        'tools/deployment/export_onnx.py, for --backend '
                        'onnxruntime')
    args = parser.parse_args()
    if (args.backend == 'onnxruntime') != (args.onnx is not None):
        parser.error('--onnx FILE.onnx goes with --backend onnxruntime, '
                     'and only with it')
    return args


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
    missing = [image for image in args.images if not osp.isfile(image)]
    if missing:
        sys.exit(f'error: image(s) {missing} do not exist')
    if args.onnx is not None and not osp.isfile(args.onnx):
        sys.exit(f'error: --onnx {args.onnx} does not exist: write it with '
                 'tools/deployment/export_onnx.py CONFIG CKPT --out FILE')
    model = init_detector(args.config, args.weights, device=args.device)
    if not getattr(model, 'with_panoptic', False):
        sys.exit(f'error: {args.config} is not a panoptic DR1Mask config')
    if args.backend == 'onnxruntime':
        model = DR1MaskORT(model, args.onnx)
    # A new image has no annotations to load.
    pipeline = Compose([
        step for step in model.cfg.test_dataloader.dataset.pipeline
        if step['type'] not in ANNOTATION_LOADERS
    ])
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = meta = model.dataset_meta
    os.makedirs(args.out_dir, exist_ok=True)
    for path in args.images:
        result = inference_detector(model, path, test_pipeline=pipeline)
        panoptic = result.pred_panoptic_seg.sem_seg[0].cpu().numpy()
        info = segments(panoptic,
                        result.pred_instances.scores.cpu().numpy(),
                        meta['classes'], len(meta['thing_classes']))
        name = osp.splitext(osp.basename(path))[0]
        height, width = panoptic.shape
        with open(osp.join(args.out_dir, f'{name}.json'), 'w') as f:
            json.dump(dict(image=path, height=height, width=width,
                           segments=info), f, indent=2)

        drawn = result.clone()
        del drawn.pred_instances  # draw the panoptic segmentation alone
        if not info:
            # All void (e.g. an image smaller than the stuff area limit):
            # mmdet's visualizer cannot draw an empty segmentation.
            del drawn.pred_panoptic_seg
        # Decoded as the pipeline's LoadImageFromFile decodes it.
        image = imread(path, channel_order='rgb')
        visualizer.add_datasample(
            name, image, drawn, draw_gt=False,
            out_file=osp.join(args.out_dir, f'{name}.png'))
        print(f'{len(info)} segments: {osp.join(args.out_dir, name)}'
              '.png / .json')


if __name__ == '__main__':
    main()
