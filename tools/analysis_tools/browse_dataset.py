"""Browse a dataset as the model sees it: the panoptic ground truth after the
training pipeline.

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir DIR

writes one image per training sample to ``DIR/<image file name>``: every
stuff region and every thing instance filled in its own colour with its class
name, drawn by mmdet's ``DetLocalVisualizer`` (its panoptic drawing). Without
``--output-dir`` the images are shown in a window instead.

mmdet's own ``browse_dataset.py`` draws boxes and masks per instance and the
semantic map per class, so on a panoptic config two touching instances of one
class share one semantic colour. Here the segments come from what the
pipeline outputs: each instance mask of ``gt_instances`` is a segment, and
the pixels of ``gt_sem_seg`` outside every mask form one segment per class
(stuff, and thing pixels without an instance mask, such as crowd regions).
"""
import argparse
import os.path as osp
from typing import List, Tuple

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.utils import ProgressBar

from mmdet.registry import DATASETS, VISUALIZERS
from mmdet.structures import DetDataSample
from mmdet.visualization import get_palette


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--output-dir',
        help='save the drawings here instead of showing them')
    parser.add_argument(
        '--not-show',
        action='store_true',
        help='accepted for mmdet compatibility: with --output-dir nothing '
        'is shown')
    parser.add_argument(
        '--show-interval',
        type=float,
        default=2,
        help='seconds each image is shown')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value (as in tools/train.py)')
    return parser.parse_args()


def panoptic_segments(data_sample: DetDataSample,
                      ignore_index: int = 255) -> Tuple[np.ndarray,
                                                        np.ndarray]:
    """Split a packed training sample into panoptic segments.

    The segments are the ``S`` classes present in ``gt_sem_seg`` outside all
    instance masks (one segment per class), then the ``N`` instance masks of
    ``gt_instances``. With ``M_n`` the n-th instance mask and ``s`` the
    semantic map, segment ``k`` covers

    .. math::

        \\Omega_k = \\{p : s_p = c_k, \\textstyle\\bigvee_n M_n(p) = 0\\},
        \\quad k < S;
        \\qquad \\Omega_{S+n} = M_n

    (for overlapping masks a pixel goes to the first). Pixels in no segment
    (``ignore_index``) are void.

    Returns:
        tuple: ``segment_map`` (H, W) int64 with values in ``[0, S + N]``,
        ``S + N`` marking void, and ``labels`` (S + N,) int64, each
        segment's class.
    """
    instances = data_sample.get('gt_instances')
    if instances is not None and 'masks' in instances:
        masks = instances.masks.to_ndarray().astype(bool)
        instance_labels = instances.labels.cpu().numpy().astype(np.int64)
    else:
        masks = np.zeros((0, *data_sample.img_shape), dtype=bool)
        instance_labels = np.zeros(0, dtype=np.int64)
    if 'gt_sem_seg' in data_sample:
        semantic = data_sample.gt_sem_seg.sem_seg[0].cpu().numpy().astype(
            np.int64)
    elif len(masks):
        semantic = np.full(masks.shape[1:], ignore_index, dtype=np.int64)
    else:
        raise ValueError(
            'the training pipeline yields neither instance masks '
            '(gt_instances.masks) nor a semantic map (gt_sem_seg) for '
            f'{data_sample.img_path}: no panoptic ground truth to draw')

    covered = masks.any(axis=0)
    semantic = np.where(covered, ignore_index, semantic)
    semantic_labels = np.unique(semantic)
    semantic_labels = semantic_labels[semantic_labels != ignore_index]
    num_segments = len(semantic_labels) + len(masks)

    segment_map = np.full(semantic.shape, num_segments, dtype=np.int64)
    labelled = semantic != ignore_index
    segment_map[labelled] = np.searchsorted(semantic_labels,
                                            semantic[labelled])
    if len(masks):
        segment_map[covered] = len(semantic_labels) + masks.argmax(
            axis=0)[covered]
    return segment_map, np.concatenate([semantic_labels, instance_labels])


def segment_colours(labels: np.ndarray,
                    palette: List[Tuple[int, int, int]]) -> np.ndarray:
    """One colour per segment, distinct among the segments of a class.

    The r-th segment of class ``c`` (in segment order) takes the class colour
    ``p_c`` moved towards white (odd r) or black (even r > 0):

    .. math::

        t_r = 1 - 0.7^{\\lceil r / 2 \\rceil}, \\qquad
        \\mathrm{colour} = (1 - t_r)\\, p_c + t_r\\, q_r, \\quad
        q_r = 255 \\text{ if } r \\text{ odd else } 0.

    Args:
        labels: (K,) class of each segment.
        palette: colour (R, G, B) of each class.

    Returns:
        np.ndarray: (K, 3) uint8 colours.
    """
    same_class_before = np.tril(labels[:, None] == labels[None, :], k=-1)
    rank = same_class_before.sum(axis=1)
    shift = 1 - 0.7**np.ceil(rank / 2)
    target = np.where(rank % 2 == 1, 255.0, 0.0)
    base = np.asarray(palette, dtype=np.float64)[labels].reshape(-1, 3)
    colours = (1 - shift[:, None]) * base + shift[:, None] * target[:, None]
    return np.round(colours).astype(np.uint8)


def main() -> None:
    args = parse_args()
    if args.output_dir is None and args.not_show:
        raise SystemExit('nothing to do: give --output-dir or drop --not-show')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))

    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    classes = dataset.metainfo['classes']
    palette = get_palette(
        dataset.metainfo.get('palette', 'random'), len(classes))
    # Drawings go to files or a window, never to the config's backends.
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, vis_backends=None))
    show = args.output_dir is None

    progress_bar = ProgressBar(len(dataset))
    for item in dataset:
        sample = item['data_samples']
        segment_map, labels = panoptic_segments(sample)
        # Each segment is its own "class" of the drawing, so that it gets its
        # own colour and its class name; `len(labels)` is the void id.
        visualizer.dataset_meta = dict(
            classes=[classes[label] for label in labels],
            palette=[tuple(c) for c in segment_colours(labels, palette)])
        drawn = DetDataSample(metainfo=sample.metainfo)
        if len(labels):  # an all-void sample is drawn as the bare image
            drawn.gt_panoptic_seg = PixelData(sem_seg=segment_map[None])

        name = osp.basename(sample.img_path)
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # RGB
        visualizer.add_datasample(
            name,
            np.ascontiguousarray(image),
            drawn,
            draw_pred=False,
            show=show,
            wait_time=args.show_interval,
            out_file=None if args.output_dir is None else osp.join(
                args.output_dir, name))
        progress_bar.update()


if __name__ == '__main__':
    main()
