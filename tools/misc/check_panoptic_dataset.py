"""Report every problem of a COCO-panoptic dataset, one line each.

    python tools/misc/check_panoptic_dataset.py ANN_JSON SEG_DIR IMG_DIR \\
        [--config CONFIG] [--nproc N]

checks the images and PNGs (present, decodable, the same size as the json
says), the segments (every json segment in the PNG and the reverse, known
category ids), the categories (``isthing``, things before stuff), mmdet's
derivation of the PNG name from the image name and, with ``--config``, the
config's ``metainfo.classes`` and its heads' class counts. Exits 1 if it
found any problem, 0 if none. Training runs the same check
(``CheckPanopticDatasetHook``) and fails before the first iteration with
the same lines.
"""
import argparse
import sys
import time

from mmengine.config import Config

from projects.dr1mask.datasets.dataset_check import (check_panoptic_dataset,
                                            coco_seg_map_name,
                                            metainfo_classes,
                                            panoptic_datasets, seg_map_namer)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ann_json', help='panoptic json')
    parser.add_argument('seg_dir', help='folder of the panoptic PNGs')
    parser.add_argument('img_dir', help='folder of the images')
    parser.add_argument(
        '--config',
        help="a config whose train dataset's metainfo.classes and model "
        'class counts must match the dataset')
    parser.add_argument(
        '--nproc', type=int, default=4, help='images decoded in parallel')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    classes = model_cfg = None
    seg_map_name = coco_seg_map_name
    if args.config:
        cfg = Config.fromfile(args.config)
        model_cfg = cfg.model
        datasets = list(panoptic_datasets(cfg.train_dataloader.dataset))
        if datasets:
            classes = metainfo_classes(datasets[0])
            seg_map_name = seg_map_namer(datasets[0])
    start = time.perf_counter()
    problems = check_panoptic_dataset(args.ann_json, args.seg_dir,
                                      args.img_dir, classes, model_cfg,
                                      args.nproc, seg_map_name)
    for problem in problems:
        print(problem)
    print(f'{len(problems)} problem(s) in {args.ann_json} '
          f'({time.perf_counter() - start:.1f} s)',
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
