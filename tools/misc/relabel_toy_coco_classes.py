"""Relabel a few toy training images into COCO panoptic's 80 + 53 classes.

The toy set has 4 thing and 3 stuff classes; a model with the COCO panoptic
config's heads (80 thing and 53 stuff outputs) needs COCO's categories. This
writes, for the first ``--images`` training images of a toy set made by
``tools/misc/generate_toy_panoptic.py``:

    <out-dir>/panoptic.json    COCO panoptic: the 133 categories of mmdet's
                               CocoPanopticDataset, in its order, ids 1..133
    <out-dir>/instances.json   COCO instances: the 80 thing categories,
                               ids 1..80

Images and PNGs are not copied: the jsons name the toy set's own files (its
``train/`` and ``annotations/panoptic_train/``), and only the category ids
change, each toy class to the COCO class that looks most like it
(``TOY_TO_COCO``). Category ids are the classes' positions in mmdet's order,
not COCO's own (which skip numbers): mmdet and the panoptic metric map by
name and by these jsons, so any consistent ids serve.

Usage::

    python tools/misc/relabel_toy_coco_classes.py data/toy_panoptic \\
        --images 4 --out-dir data/toy_panoptic/coco_heads
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmdet.datasets import CocoPanopticDataset

# toy class -> COCO class
TOY_TO_COCO = {
    'disk': 'sports ball',
    'square': 'book',
    'triangle': 'kite',
    'ring': 'donut',
    'sky': 'sky-other-merged',
    'grass': 'grass-merged',
    'brick': 'wall-brick',
}


def coco_categories() -> List[dict]:
    """COCO panoptic's 133 categories in mmdet's order, things first, with
    ids 1..133."""
    meta = CocoPanopticDataset.METAINFO
    things = set(meta['thing_classes'])
    return [
        dict(id=i + 1, name=name, supercategory='thing'
             if name in things else 'stuff', isthing=int(name in things),
             color=list(meta['palette'][i]))
        for i, name in enumerate(meta['classes'])
    ]


def relabel(toy_root: str, out_dir: str, num_images: int) -> Dict[str, str]:
    """Write ``panoptic.json`` and ``instances.json`` for the first
    ``num_images`` toy training images (by id) into ``out_dir``.

    Returns:
        dict: ``panoptic`` and ``instances``, the paths written.

    Raises:
        ValueError: a toy json whose categories are not the toy set's (it
            names the file and the category), or fewer images than asked.
    """
    anns = osp.join(toy_root, 'annotations')
    with open(osp.join(anns, 'panoptic_train.json')) as f:
        panoptic = json.load(f)
    with open(osp.join(anns, 'instances_train.json')) as f:
        instances = json.load(f)
    categories = coco_categories()
    coco_id = {cat['name']: cat['id'] for cat in categories}
    new_id = {}
    for cat in panoptic['categories']:
        if cat['name'] not in TOY_TO_COCO:
            raise ValueError(
                f"{osp.join(anns, 'panoptic_train.json')}: category "
                f"{cat['name']!r} is not a toy class ({sorted(TOY_TO_COCO)}); "
                'generate the set with tools/misc/generate_toy_panoptic.py')
        new_id[cat['id']] = coco_id[TOY_TO_COCO[cat['name']]]
    images = sorted(panoptic['images'], key=lambda image: image['id'])
    if len(images) < num_images:
        raise ValueError(f"{osp.join(anns, 'panoptic_train.json')} has "
                         f'{len(images)} images, fewer than {num_images}')
    images = images[:num_images]
    kept = {image['id'] for image in images}

    def recategorised(segment: dict) -> dict:
        return dict(segment, category_id=new_id[segment['category_id']])

    panoptic_out = dict(
        panoptic,
        images=images,
        categories=categories,
        annotations=[
            dict(ann,
                 segments_info=[recategorised(s) for s in ann['segments_info']])
            for ann in panoptic['annotations'] if ann['image_id'] in kept
        ])
    instances_out = dict(
        instances,
        images=images,
        categories=[cat for cat in categories if cat['isthing']],
        annotations=[
            recategorised(ann) for ann in instances['annotations']
            if ann['image_id'] in kept
        ])
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(panoptic=osp.join(out_dir, 'panoptic.json'),
                 instances=osp.join(out_dir, 'instances.json'))
    for key, data in (('panoptic', panoptic_out),
                      ('instances', instances_out)):
        with open(paths[key], 'w') as f:
            json.dump(data, f)
    return paths


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('toy_root', help='the toy set, e.g. data/toy_panoptic')
    parser.add_argument('--images', type=int, default=4,
                        help='how many training images (the first by id)')
    parser.add_argument('--out-dir', required=True,
                        help='where the two jsons go')
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f'--images must be >= 1, got {args.images}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    for path in relabel(args.toy_root, args.out_dir, args.images).values():
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
