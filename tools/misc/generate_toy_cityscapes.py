"""Generate a tiny dataset in Cityscapes' own layout, for tests.

Cityscapes cannot be downloaded here; this writes the files its converter
(``tools/dataset_converters/cityscapes_panoptic.py``) reads, with the
labels of ``cityscapesscripts.helpers.labels``::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png    RGB
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     uint8
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png  uint16

As in Cityscapes, ``labelIds`` holds each pixel's label id and
``instanceIds`` holds ``label_id * 1000 + k`` on the pixels of instance
``k`` of a class with instances and the plain label id everywhere else.

Every image holds all 19 evaluated classes: the 11 stuff classes as
bands (flat and construction classes, objects, nature, sky), then one or
two instances of each of the 8 thing classes, drawn as rectangles that may
occlude each other. It also holds what the conversion must not take as a
segment: a *crowd* region (a thing class without an instance id, e.g. a
group of people), an instance of ``caravan`` (has instances but is ignored
in evaluation), and pixels of ignored stuff labels (``ego vehicle`` along the
bottom, a ``static`` block). Each pixel's colour is its label's Cityscapes
colour, shaded per instance, plus noise.

Image ``i`` of split ``s`` draws from ``numpy.random.default_rng([seed, s,
i])``: a seed gives identical files.

Usage::

    python tools/misc/generate_toy_cityscapes.py data/cityscapes \\
        --num-train 4 --num-val 2
"""
import argparse
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from cityscapesscripts.helpers.labels import labels, name2label
from PIL import Image

SPLITS = ('train', 'val')
# Real city names of each split, two per split so that city folders matter.
CITIES = dict(train=('aachen', 'bochum'), val=('frankfurt', 'lindau'))
THINGS = [lb for lb in labels if lb.hasInstances and not lb.ignoreInEval]
# Stuff bands from top to bottom; the classes within a band are shuffled.
STUFF_BANDS = (('sky', 'building', 'vegetation', 'wall'),
               ('fence', 'pole', 'traffic light', 'traffic sign', 'terrain'),
               ('sidewalk', 'road'))
IGNORED_INSTANCE = name2label['caravan']
MAX_ATTEMPTS = 50


def _stuff(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Label ids of the stuff bands, each band cut into shuffled columns."""
    label_ids = np.zeros((height, width), np.uint8)
    rows = np.linspace(0, height, len(STUFF_BANDS) + 1).round().astype(int)
    rows[1:-1] += rng.integers(-height // 16, height // 16 + 1,
                               len(STUFF_BANDS) - 1)
    for band, top, bottom in zip(STUFF_BANDS, rows[:-1], rows[1:]):
        names = rng.permutation(band)
        cuts = np.sort(rng.choice(np.arange(width // 8, width - width // 8),
                                  len(names) - 1, replace=False))
        for name, left, right in zip(names, [0, *cuts], [*cuts, width]):
            label_ids[top:bottom, left:right] = name2label[name].id
    return label_ids


def _box(rng: np.random.Generator, height: int, width: int,
         min_frac: float, max_frac: float) -> Tuple[slice, slice]:
    h = int(rng.uniform(min_frac, max_frac) * height)
    w = int(rng.uniform(min_frac, max_frac) * height * rng.uniform(0.6, 1.6))
    y = int(rng.integers(0, height - h))
    x = int(rng.integers(0, width - w))
    return slice(y, y + h), slice(x, x + w)


def _draw(rng: np.random.Generator, height: int,
          width: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """One image's ``labelIds`` and ``instanceIds`` maps, and the label id
    of its crowd region."""
    label_ids = _stuff(rng, height, width)
    instance_ids = label_ids.astype(np.int32)
    # Crowd first, so the instances drawn after it may occlude it.
    crowd = THINGS[int(rng.integers(len(THINGS)))]
    region = _box(rng, height, width, 0.2, 0.3)
    label_ids[region] = crowd.id
    instance_ids[region] = crowd.id
    drawn = [(lb, k) for lb in THINGS for k in range(rng.integers(1, 3))]
    drawn.append((IGNORED_INSTANCE, 0))
    for index in rng.permutation(len(drawn)):
        label, k = drawn[index]
        region = _box(rng, height, width, 0.12, 0.3)
        label_ids[region] = label.id
        instance_ids[region] = label.id * 1000 + k
    # Ignored stuff: ego vehicle along the bottom, a static block.
    label_ids[-max(2, height // 16):] = name2label['ego vehicle'].id
    region = _box(rng, height, width, 0.08, 0.12)
    label_ids[region] = name2label['static'].id
    for label_id in (name2label['ego vehicle'].id, name2label['static'].id):
        instance_ids[label_ids == label_id] = label_id
    return label_ids, instance_ids, crowd.id


def _complete(label_ids: np.ndarray, instance_ids: np.ndarray,
              crowd_id: int) -> bool:
    """Every evaluated class is visible, each thing as an instance, and so
    are the crowd region and the ignored instance."""
    present = set(np.unique(label_ids).tolist())
    evaluated = {lb.id for lb in labels if not lb.ignoreInEval}
    segments = set(np.unique(instance_ids).tolist())
    instances = {s // 1000 for s in segments if s >= 1000}
    return (evaluated <= present and crowd_id in segments
            and IGNORED_INSTANCE.id in instances
            and all(lb.id in instances for lb in THINGS))


def _render(label_ids: np.ndarray, instance_ids: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """RGB: the label colours, shaded per segment, plus noise."""
    palette = np.zeros((256, 3), np.float32)
    for label in labels:
        if label.id >= 0:
            palette[label.id] = label.color
    segments, inverse = np.unique(instance_ids, return_inverse=True)
    shade = rng.uniform(0.75, 1.0, len(segments)).astype(np.float32)
    image = palette[label_ids] * shade[inverse.reshape(label_ids.shape), None]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def generate_toy_cityscapes(out_dir: str | Path,
                            num_train: int = 4,
                            num_val: int = 2,
                            height: int = 128,
                            width: int = 256,
                            seed: int = 0) -> Dict[str, List[str]]:
    """Write the tiny Cityscapes tree under ``out_dir``.

    Args:
        out_dir: The Cityscapes root (``leftImg8bit/`` and ``gtFine/`` go
            in it).
        num_train, num_val: Images per split (>= 1).
        height, width: Image size in pixels (>= 64 and >= 128: room for
            every class).
        seed: Seed; the same seed gives identical files.

    Returns:
        The image stems (``<city>_<seq>_<frame>``) written, per split.
    """
    for name, value, low in (('num_train', num_train, 1),
                             ('num_val', num_val, 1), ('height', height, 64),
                             ('width', width, 128), ('seed', seed, 0)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value!r}')
    root = Path(out_dir)
    written = {}
    for split_index, (split, count) in enumerate(
            zip(SPLITS, (num_train, num_val))):
        written[split] = []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            for _ in range(MAX_ATTEMPTS):
                label_ids, instance_ids, crowd_id = _draw(rng, height, width)
                if _complete(label_ids, instance_ids, crowd_id):
                    break
            else:
                raise RuntimeError(
                    f'{split} image {index}: not every class visible after '
                    f'{MAX_ATTEMPTS} draws; use larger images')
            city = CITIES[split][index % len(CITIES[split])]
            stem = f'{city}_{index:06d}_{19 + split_index:06d}'
            image_dir = root / 'leftImg8bit' / split / city
            gt_dir = root / 'gtFine' / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_render(label_ids, instance_ids, rng)).save(
                image_dir / f'{stem}_leftImg8bit.png')
            Image.fromarray(label_ids).save(
                gt_dir / f'{stem}_gtFine_labelIds.png')
            Image.fromarray(instance_ids.astype(np.uint16)).save(
                gt_dir / f'{stem}_gtFine_instanceIds.png')
            written[split].append(stem)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Write a tiny Cityscapes-format tree (leftImg8bit, '
        'gtFine labelIds / instanceIds) for tests.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('out_dir', help='Cityscapes root to write')
    parser.add_argument('--num-train', type=int, default=4)
    parser.add_argument('--num-val', type=int, default=2)
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    try:
        written = generate_toy_cityscapes(
            args.out_dir, args.num_train, args.num_val, args.height,
            args.width, args.seed)
    except ValueError as err:
        parser.error(str(err))
    print(', '.join(f'{split}: {len(stems)} images'
                    for split, stems in written.items()) +
          f', written under {args.out_dir}')


if __name__ == '__main__':
    main()
