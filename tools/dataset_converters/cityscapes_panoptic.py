"""Convert Cityscapes' fine annotations to COCO panoptic (and COCO instances).

Reads ``gtFine/<split>/<city>/*_gtFine_instanceIds.png`` and
``*_gtFine_labelIds.png`` under ``CITYSCAPES_ROOT`` and writes, for each
split, into ``--out-dir`` (default ``CITYSCAPES_ROOT/annotations``)::

    cityscapes_panoptic_<split>.json    COCO panoptic
    cityscapes_panoptic_<split>/        its PNGs, <stem>_leftImg8bit.png
    cityscapes_instances_<split>.json   COCO instances (RLE) of its things

The panoptic segments are those of ``cityscapesscripts``' own preparation
(``preparation/createPanopticImgs.convert2panoptic``), which this runs on
each group of images: one segment per instance id ``label_id * 1000 + k``,
``iscrowd=1`` for the pixels of a class with instances that carry no
instance id (``instanceIds < 1000``), and void (id 0) for every label that
``cityscapesscripts.helpers.labels`` marks ``ignoreInEval``. That leaves 8
thing and 11 stuff categories with Cityscapes' label ids as category ids.
What this adds for MMDetection:

* categories are listed things first, then stuff (each in Cityscapes'
  order): ``CocoPanopticDataset`` numbers classes in the json's order, and
  the panoptic heads take labels ``0..7`` as things;
* image ids are integers (1, 2, ... through the splits in order) and image
  ``file_name`` is ``<city>/<stem>_leftImg8bit.png`` under
  ``leftImg8bit/<split>/``;
* each PNG is named after its image, ``<stem>_leftImg8bit.png``, because
  ``CocoPanopticMetric`` finds a ground-truth PNG by the image's file name;
* the instances json holds every thing segment of the panoptic json (crowd
  ones with ``iscrowd=1``) as an RLE of exactly its pixels, so mask AP and
  PQ score against the same ground truth.

Before anything is written, every ``instanceIds`` image is checked against
its ``labelIds`` image (same size; ``instanceIds`` reduced to label ids,
``id // 1000`` where ``id >= 1000``, equals ``labelIds``; every label id is
one of ``cityscapesscripts``') and its ``leftImg8bit`` image must exist; a
mismatch stops the conversion with the file, pixel and values.

Usage::

    python tools/dataset_converters/cityscapes_panoptic.py data/cityscapes \\
        --nproc 8
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from mmengine.utils import track_parallel_progress, track_progress
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_utils

SPLITS = ('train', 'val')
INSTANCE_SUFFIX = '_gtFine_instanceIds.png'
LABEL_SUFFIX = '_gtFine_labelIds.png'
IMAGE_SUFFIX = '_leftImg8bit.png'
# convert2panoptic's names for a split's json / PNG folder and a PNG.
CS_NAME = 'cityscapes_panoptic_{split}'
CS_PNG_SUFFIX = '_gtFine_panoptic.png'
# Images per convert2panoptic call: small enough for a fine progress bar
# and an even spread over the processes.
GROUP_SIZE = 16
# Thing masks RLE-encoded at once: a (H, W, n) uint8 stack, 32 MiB at
# 1024 x 2048.
ENCODE_GROUP = 16


@dataclass(frozen=True)
class Frame:
    """One annotated Cityscapes image: ``<city>/<stem>`` of a split."""

    city: str
    stem: str
    instance_path: str
    label_path: str
    image_path: str


def collect_frames(root: str, split: str) -> List[Frame]:
    """Every ``instanceIds`` image of ``split``, sorted, with its
    ``labelIds`` and ``leftImg8bit`` paths (existence checked)."""
    gt_dir = osp.join(root, 'gtFine', split)
    if not osp.isdir(gt_dir):
        raise FileNotFoundError(f'{gt_dir}: no such folder (CITYSCAPES_ROOT '
                                'must hold gtFine/ and leftImg8bit/)')
    frames = []
    for city in sorted(os.listdir(gt_dir)):
        city_dir = osp.join(gt_dir, city)
        if not osp.isdir(city_dir):
            continue
        for name in sorted(os.listdir(city_dir)):
            if not name.endswith(INSTANCE_SUFFIX):
                continue
            stem = name[:-len(INSTANCE_SUFFIX)]
            frame = Frame(
                city, stem, osp.join(city_dir, name),
                osp.join(city_dir, stem + LABEL_SUFFIX),
                osp.join(root, 'leftImg8bit', split, city,
                         stem + IMAGE_SUFFIX))
            for path in (frame.label_path, frame.image_path):
                if not osp.isfile(path):
                    raise FileNotFoundError(
                        f'{path}: missing (it belongs with '
                        f'{frame.instance_path})')
            frames.append(frame)
    if not frames:
        raise FileNotFoundError(
            f'no *{INSTANCE_SUFFIX} in {gt_dir}/<city>/')
    return frames


def check_frame(frame: Frame) -> None:
    """Raise ValueError unless ``instanceIds`` and ``labelIds`` agree."""
    instance_ids = np.asarray(Image.open(frame.instance_path), np.int64)
    label_ids = np.asarray(Image.open(frame.label_path), np.int64)
    if instance_ids.shape != label_ids.shape:
        raise ValueError(
            f'{frame.instance_path}: shape {instance_ids.shape} differs from '
            f'{frame.label_path}: {label_ids.shape}')
    from_instances = np.where(instance_ids >= 1000, instance_ids // 1000,
                              instance_ids)
    unknown = ~np.isin(from_instances, list(id2label))
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise ValueError(
            f'{frame.instance_path}: pixel (y={y}, x={x}) has instance id '
            f'{instance_ids[y, x]}, whose label id {from_instances[y, x]} '
            'is not a Cityscapes label id (cityscapesscripts.helpers.labels)')
    wrong = from_instances != label_ids
    if wrong.any():
        y, x = np.argwhere(wrong)[0]
        raise ValueError(
            f'{frame.instance_path}: {int(wrong.sum())} pixels disagree with '
            f'{frame.label_path}, first at (y={y}, x={x}): instance id '
            f'{instance_ids[y, x]} means label {from_instances[y, x]}, '
            f'labelIds says {label_ids[y, x]}')


def _thing_annotations(png_path: str, segments: Sequence[dict],
                       thing_ids: set) -> List[dict]:
    """COCO instance annotations (no ids yet) of the thing segments."""
    things = [s for s in segments if s['category_id'] in thing_ids]
    if not things:
        return []
    ids = rgb2id(np.asarray(Image.open(png_path).convert('RGB')))
    annotations = []
    for start in range(0, len(things), ENCODE_GROUP):
        group = things[start:start + ENCODE_GROUP]
        masks = np.asfortranarray(
            ids[..., None] == np.array([s['id'] for s in group]),
            dtype=np.uint8)
        for segment, rle in zip(group, mask_utils.encode(masks)):
            annotations.append(
                dict(
                    category_id=segment['category_id'],
                    segmentation=dict(
                        size=[int(n) for n in rle['size']],
                        counts=rle['counts'].decode('ascii')),
                    area=segment['area'],
                    bbox=segment['bbox'],
                    iscrowd=segment['iscrowd']))
    return annotations


def convert_group(task: Tuple[List[Frame], str, str, str]) -> dict:
    """Run ``convert2panoptic`` on a group of frames in its own folder.

    Args:
        task: ``(frames, split, work_dir, png_dir)``: the frames, their
            split, an empty folder for this group, and the folder the PNGs
            end up in (renamed to ``<stem>_leftImg8bit.png``).

    Returns:
        ``categories``, ``images`` (as convert2panoptic lists them: ids
        are the stems), ``annotations`` (``file_name`` renamed) and
        ``instances`` (per frame, the COCO annotations of its things).
    """
    frames, split, work_dir, png_dir = task
    # convert2panoptic globs gtFine/<split>/*/*_instanceIds.png: give it
    # this group's files only, as links.
    gt_root = osp.join(work_dir, 'gtFine')
    for frame in frames:
        city_dir = osp.join(gt_root, split, frame.city)
        os.makedirs(city_dir, exist_ok=True)
        os.symlink(
            osp.abspath(frame.instance_path),
            osp.join(city_dir, osp.basename(frame.instance_path)))
    out = osp.join(work_dir, 'out')
    os.makedirs(out)
    with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet):
        convert2panoptic(gt_root, out, useTrainId=False, setNames=[split])
    name = CS_NAME.format(split=split)
    with open(osp.join(out, name + '.json')) as f:
        converted = json.load(f)
    thing_ids = {c['id'] for c in converted['categories'] if c['isthing']}
    instances = []
    for annotation in converted['annotations']:
        png_name = annotation['file_name'].replace(CS_PNG_SUFFIX,
                                                   IMAGE_SUFFIX)
        png_path = osp.join(png_dir, png_name)
        os.replace(osp.join(out, name, annotation['file_name']), png_path)
        annotation['file_name'] = png_name
        instances.append(
            _thing_annotations(png_path, annotation['segments_info'],
                               thing_ids))
    return dict(
        categories=converted['categories'],
        images=converted['images'],
        annotations=converted['annotations'],
        instances=instances)


def _run(func, tasks: list, nproc: int) -> list:
    if nproc > 1 and len(tasks) > 1:
        return track_parallel_progress(func, tasks, nproc)
    return track_progress(func, tasks)


def _write_json(path: str, obj: dict) -> None:
    with open(path, 'w') as f:
        json.dump(obj, f)


def convert_split(frames: List[Frame], out_dir: str, split: str,
                  nproc: int, first_image_id: int) -> Dict[str, str]:
    """Convert the (checked) frames of one split; image ids start at
    ``first_image_id``.

    Returns:
        The paths written: ``panoptic_json``, ``panoptic_dir`` and
        ``instances_json``.
    """
    png_dir = osp.join(out_dir, CS_NAME.format(split=split))
    os.makedirs(png_dir, exist_ok=True)
    # Stale PNGs of an earlier run would sit unreferenced beside ours.
    for name in os.listdir(png_dir):
        if name.endswith(IMAGE_SUFFIX):
            os.remove(osp.join(png_dir, name))
    print(f'{split}: converting {len(frames)} images with cityscapesscripts '
          '(convert2panoptic)')
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.tmp_') as tmp:
        tasks = [(frames[i:i + GROUP_SIZE], split,
                  osp.join(tmp, str(i)), png_dir)
                 for i in range(0, len(frames), GROUP_SIZE)]
        groups = _run(convert_group, tasks, nproc)

    cs_categories = groups[0]['categories']
    categories = ([c for c in cs_categories if c['isthing']] +
                  [c for c in cs_categories if not c['isthing']])
    city_of = {frame.stem: frame.city for frame in frames}
    images, annotations, instances = [], [], []
    for group in groups:
        for image, annotation, things in zip(group['images'],
                                             group['annotations'],
                                             group['instances']):
            image_id = first_image_id + len(images)
            # The image's name from its id (the stem): convert2panoptic's
            # file_name keeps '_gtFine', which no image file has.
            stem = image['id']
            images.append(
                dict(
                    id=image_id,
                    file_name=f'{city_of[stem]}/{stem}{IMAGE_SUFFIX}',
                    height=image['height'],
                    width=image['width']))
            annotations.append(dict(annotation, image_id=image_id))
            for thing in things:
                instances.append(
                    dict(thing, id=len(instances) + 1, image_id=image_id))
    paths = dict(
        panoptic_json=osp.join(out_dir, CS_NAME.format(split=split) + '.json'),
        panoptic_dir=png_dir,
        instances_json=osp.join(out_dir, f'cityscapes_instances_{split}.json'))
    _write_json(
        paths['panoptic_json'],
        dict(images=images, annotations=annotations, categories=categories))
    _write_json(
        paths['instances_json'],
        dict(
            images=images,
            annotations=instances,
            categories=[c for c in categories if c['isthing']]))
    print(f'{split}: {len(images)} images, '
          f'{sum(len(a["segments_info"]) for a in annotations)} segments, '
          f'{len(instances)} thing annotations -> {paths["panoptic_json"]}')
    return paths


def convert(root: str,
            out_dir: str | None = None,
            splits: Sequence[str] = SPLITS,
            nproc: int = 1) -> Dict[str, Dict[str, str]]:
    """Convert ``splits`` of the Cityscapes tree at ``root`` (see the module
    docstring); image ids are unique across the splits.

    Every split is found and checked before anything is written.
    """
    if nproc < 1:
        raise ValueError(f'nproc must be >= 1, got {nproc!r}')
    frames = {split: collect_frames(root, split) for split in splits}
    for split, split_frames in frames.items():
        print(f'{split}: checking {len(split_frames)} instanceIds / '
              'labelIds pairs')
        _run(check_frame, split_frames, nproc)
    out_dir = out_dir or osp.join(root, 'annotations')
    os.makedirs(out_dir, exist_ok=True)
    written, first_id = {}, 1
    for split, split_frames in frames.items():
        written[split] = convert_split(split_frames, out_dir, split, nproc,
                                       first_id)
        first_id += len(split_frames)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Convert Cityscapes gtFine instanceIds / labelIds to '
        'COCO panoptic (+ COCO instances) for MMDetection.')
    parser.add_argument('cityscapes_root',
                        help='folder holding gtFine/ and leftImg8bit/')
    parser.add_argument('--out-dir',
                        help='output folder (default: '
                        'CITYSCAPES_ROOT/annotations)')
    parser.add_argument('--splits', nargs='+', default=list(SPLITS),
                        help='splits to convert (test has no labels)')
    parser.add_argument('--nproc', type=int, default=1,
                        help='worker processes')
    args = parser.parse_args()
    try:
        convert(args.cityscapes_root, args.out_dir, args.splits, args.nproc)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f'error: {err}\n')


if __name__ == '__main__':
    main()
