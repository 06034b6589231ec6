"""tools/analysis_tools/browse_dataset.py draws the panoptic ground truth
after the training pipeline: each stuff region and each thing instance in its
own colour."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mmdet.datasets import CocoPanopticDataset

from conftest import CONFIGS, REPO

CONFIG = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
NAMES = ['disk', 'square', 'triangle', 'ring', 'sky', 'grass', 'brick']
GREY = 100
ALPHA = 0.8  # DetLocalVisualizer's default
SIZE = 128
SQUARE, SKY, GRASS = 1, 4, 5
# Two touching squares on the sky / grass border: (row, col) slices.
BOXES = [(slice(20, 60), slice(20, 60)), (slice(20, 60), slice(60, 100))]


def write_dataset(root: Path, num_images: int) -> None:
    """A COCO panoptic train split of flat grey images: sky on the left half,
    grass on the right, and two touching squares (one class) on top."""
    (root / 'train').mkdir(parents=True)
    (root / 'annotations' / 'panoptic_train').mkdir(parents=True)
    categories = [
        dict(id=i + 1, name=name, supercategory='x', isthing=int(i < 4))
        for i, name in enumerate(NAMES)
    ]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        name = f'{image_id:012d}'
        Image.fromarray(np.full((SIZE, SIZE, 3), GREY, np.uint8)).save(
            root / 'train' / f'{name}.png')
        ids = np.zeros((SIZE, SIZE), np.int64)
        ids[:, :SIZE // 2] = 1
        ids[:, SIZE // 2:] = 2
        for k, box in enumerate(BOXES):
            ids[box] = 3 + k
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1)
        Image.fromarray(png.astype(np.uint8)).save(
            root / 'annotations' / 'panoptic_train' / f'{name}.png')
        segments = []
        for segment_id, label in [(1, SKY), (2, GRASS), (3, SQUARE),
                                  (4, SQUARE)]:
            rows, cols = np.nonzero(ids == segment_id)
            segments.append(
                dict(id=segment_id, category_id=label + 1, iscrowd=0,
                     area=int(len(rows)),
                     bbox=[int(cols.min()), int(rows.min()),
                           int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1]))
        images.append(
            dict(id=image_id, file_name=f'{name}.png', height=SIZE,
                 width=SIZE))
        annotations.append(
            dict(image_id=image_id, file_name=f'{name}.png',
                 segments_info=segments))
    (root / 'annotations' / 'panoptic_train.json').write_text(
        json.dumps(
            dict(images=images, annotations=annotations,
                 categories=categories)))


def modal_colour(image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """The most frequent colour of a region shrunk by 3 px (away from the
    white outlines); the class name covers less than half of it."""
    region = image[rows.start + 3:rows.stop - 3, cols.start + 3:cols.stop - 3]
    colours, counts = np.unique(
        region.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()].astype(np.int64)


def test_browse_draws_panoptic_segments(tmp_path):
    root = tmp_path / 'data'
    write_dataset(root, num_images=2)
    out = tmp_path / 'browse'
    subprocess.run([
        sys.executable,
        str(REPO / 'tools/analysis_tools/browse_dataset.py'),
        str(CONFIG), '--output-dir', str(out), '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/',
        'train_dataloader.dataset.pipeline.3.prob=0.0'
    ], check=True, capture_output=True, cwd=tmp_path,
                   env=dict(os.environ, PYTHONPATH=str(REPO)))

    assert sorted(p.name for p in out.iterdir()) == [
        '000000000001.png', '000000000002.png'
    ]
    drawn = np.asarray(Image.open(out / '000000000001.png').convert('RGB'))
    assert drawn.shape == (SIZE, SIZE, 3)
    palette = np.array(CocoPanopticDataset.METAINFO['palette'], np.float64)
    # Stuff takes its class colour; the first square its class colour, the
    # second the class colour moved 30 % towards white.
    expected = {
        'sky': palette[SKY],
        'grass': palette[GRASS],
        'square 1': palette[SQUARE],
        'square 2': 0.7 * palette[SQUARE] + 0.3 * 255,
    }
    half = SIZE // 2
    regions = {
        'sky': (slice(64, SIZE), slice(0, half)),
        'grass': (slice(64, SIZE), slice(half, SIZE)),
        'square 1': BOXES[0],
        'square 2': BOXES[1],
    }
    seen = {}
    for name, (rows, cols) in regions.items():
        seen[name] = modal_colour(drawn, rows, cols)
        blended = (1 - ALPHA) * GREY + ALPHA * expected[name]
        assert np.abs(seen[name] - blended).max() <= 3, (name, seen[name],
                                                         blended)
    assert np.abs(seen['square 1'] - seen['square 2']).max() > 20
    assert np.abs(seen['sky'] - seen['grass']).max() > 20
