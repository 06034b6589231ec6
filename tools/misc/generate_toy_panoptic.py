"""Generate a small synthetic panoptic dataset in the exact COCO format.

The data lets DR1Mask train and be evaluated end to end on a CPU, without
COCO. mmdet reads it unchanged: ``CocoPanopticDataset`` +
``LoadPanopticAnnotations`` and ``CocoPanopticMetric`` (panoptic), and
``CocoDataset`` + ``LoadAnnotations`` and ``CocoMetric`` (mask AP).

Layout under ``out_dir`` (``<id>``: the image id as 12 digits, as in COCO)::

    train/<id>.jpg, val/<id>.jpg                    RGB, JPEG quality 90
    annotations/panoptic_train.json, annotations/panoptic_val.json
    annotations/panoptic_train/<id>.png, annotations/panoptic_val/<id>.png
    annotations/instances_train.json, annotations/instances_val.json

Panoptic json: ``images`` [{id, file_name, height, width}], ``annotations``
[{image_id, file_name, segments_info [{id, category_id, iscrowd, bbox,
area}]}] and ``categories`` [{id, name, supercategory, isthing, color}],
things first (ids ``1..num_things``), then stuff. The PNG stores each
pixel's segment id as ``R + 256 * G + 256 ** 2 * B``; 0 is void. As in COCO
a segment id is its category colour (stuff) or a jittered category colour
(things): the PNGs are viewable, and code that assumes small ids breaks here
as it would on COCO. ``area`` is the segment's pixel count in the PNG,
``bbox`` its pixel extent ``[x, y, w, h]`` with ``w = x_max - x_min + 1``.

Instances json: the same images and, for every thing segment of the
panoptic json (crowd ones too, ``iscrowd=1``), an annotation whose
compressed RLE ``segmentation`` holds exactly that segment's pixels, so mask
AP and PQ score against the same ground truth. RLE, not polygons, because
occluded shapes and rings have holes; ``LoadAnnotations`` reads RLE with its
default ``poly2mask=True``. Annotation ids start at 1: pycocotools' matcher
takes id 0 for "unmatched".

What an image holds, so the toy set exercises what real data has:

* stuff: 1 to 3 bands (mostly 2) of distinct stuff classes, split along a
  random direction with a wavy boundary. Each stuff class has a texture,
  never a flat colour: sky (gradient, clouds), grass (noisy blades), brick
  (offset bricks, mortar).
* things: up to ``max_instances`` shapes; each class has its own shape *and*
  look (disk: shaded orange sphere, square: purple checkerboard, triangle:
  striped teal, ring: speckled yellow annulus with a hole), jittered per
  instance in colour, size, rotation and pattern. Radii are log-uniform from
  2 px to 0.6 of the short side; some centres lie outside the image, so shapes
  are cut by the border, and some sit on an earlier shape, so they overlap.
  Later shapes occlude earlier ones; the PNG keeps only visible pixels.
* crowd (``crowd_prob`` of the images): a cluster of small shapes of one
  thing class forming one ``iscrowd=1`` segment, drawn before the instances.
* void (``void_prob`` of the images): a thin border on some sides or an
  elliptic blob gets id 0 (the image pixels stay, like unlabelled pixels in
  COCO). A segment that occlusion or void leaves with fewer than
  ``MIN_VISIBLE_AREA`` pixels is dropped and its remnant becomes void.

Every class appears in every split, val in particular (PQ and mask AP then
cover every class): image ``i`` of a split of ``n`` images must show a
non-crowd instance of thing ``t`` for each ``t % n == i``, and a segment of
stuff ``k`` for each ``k % n == i``; an image that misses one (occluded
away) is redrawn from the same generator. Every image has some stuff.

Determinism: image ``i`` of split ``s`` draws from
``numpy.random.default_rng([seed, s, i])``, so a seed gives byte-identical
jsons and PNGs (JPEGs too, for a given libjpeg), and a split's content does
not depend on the other split's size. Image ids run from 1 through train,
then val, so they are unique across splits.

Re-running into the same ``out_dir`` overwrites cleanly: the jsons are
rewritten and every file named like ours (12 digits + ``.jpg``/``.png``) in
the four image folders is deleted first, so no stale image survives a
smaller run; other files there are left alone.

Usage::

    python tools/misc/generate_toy_panoptic.py data/toy_panoptic \\
        --num-train 400 --num-val 50
"""

import argparse
import colorsys
import inspect
import json
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

THING_CLASSES = ('disk', 'square', 'triangle', 'ring')
STUFF_CLASSES = ('sky', 'grass', 'brick')
# RGB base colour of each default class; segment ids are made from them too.
THING_COLORS = ((230, 90, 30), (130, 60, 190), (20, 170, 170), (235, 210, 40))
STUFF_COLORS = ((120, 175, 230), (70, 140, 45), (165, 75, 50))
# Extra thing classes reuse these shapes, told apart by colour and pattern.
SHAPES = ('disk', 'square', 'triangle', 'ring')

MIN_VISIBLE_AREA = 4
JPEG_QUALITY = 90
SPLITS = ('train', 'val')
MAX_ATTEMPTS = 50
VOID_ID = 0
_OUR_FILE = re.compile(r'^\d{12}\.(jpg|png)$')
Names = tuple[str, ...]


@dataclass(frozen=True)
class _Options:
    """Per-image generation settings shared by both splits."""

    num_things: int
    num_stuff: int
    min_size: int
    max_size: int
    max_instances: int
    crowd_prob: float
    void_prob: float


@dataclass
class _Canvas:
    """An image being drawn: RGB pixels, panoptic ids, segments so far."""

    image: np.ndarray  # (H, W, 3) float32
    ids: np.ndarray  # (H, W) int64, 0 = void
    yy: np.ndarray
    xx: np.ndarray
    segments: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, height: int, width: int) -> '_Canvas':
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        return cls(
            np.zeros((height, width, 3), np.float32),
            np.zeros((height, width), np.int64), yy, xx)

    def new_segment(self,
                    rng: np.random.Generator,
                    category_id: int,
                    color: tuple[int, int, int],
                    isthing: bool,
                    iscrowd: int = 0) -> int:
        """Register a segment; return an unused id near the category colour."""
        used = {s['id'] for s in self.segments}
        # As panopticapi's IdGenerator: stuff keeps its category colour.
        jitter = 30 if isthing else 0
        for _ in range(1000):
            offset = rng.integers(-jitter, jitter + 1, 3)
            r, g, b = np.clip(np.asarray(color) + offset, 0, 255).tolist()
            seg_id = r + 256 * g + 256**2 * b
            if seg_id != VOID_ID and seg_id not in used:
                break
            jitter = 30
        else:
            raise RuntimeError(f'no free segment id near colour {color}')
        self.segments.append(
            dict(id=seg_id, category_id=category_id, iscrowd=iscrowd))
        return seg_id

    def paint(self, mask: np.ndarray, texture: np.ndarray,
              seg_id: int) -> None:
        self.image[mask] = texture[mask]
        self.ids[mask] = seg_id


def class_names(num_things: int = len(THING_CLASSES),
                num_stuff: int = len(STUFF_CLASSES)) -> tuple[Names, Names]:
    """Thing and stuff names: the defaults first, then ``thing_k``/``stuff_k``.

    ``k`` counts from 0 within things (stuff), so it equals the position.
    """
    things = THING_CLASSES[:num_things] + tuple(
        f'thing_{k}' for k in range(len(THING_CLASSES), num_things))
    stuff = STUFF_CLASSES[:num_stuff] + tuple(
        f'stuff_{k}' for k in range(len(STUFF_CLASSES), num_stuff))
    return things, stuff


def _extra_color(index: int) -> tuple[int, int, int]:
    # Golden-ratio hue steps keep generated class colours far apart.
    r, g, b = colorsys.hsv_to_rgb((0.13 + index * 0.618034) % 1.0, 0.65, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)


def _categories(num_things: int, num_stuff: int) -> list[dict]:
    things, stuff = class_names(num_things, num_stuff)
    cats = []
    for k, name in enumerate(things):
        color = THING_COLORS[k] if k < len(THING_COLORS) else _extra_color(k)
        cats.append(
            dict(
                id=k + 1,
                name=name,
                supercategory='thing',
                isthing=1,
                color=list(color)))
    for k, name in enumerate(stuff):
        color = STUFF_COLORS[k] if k < len(STUFF_COLORS) else _extra_color(
            num_things + k)
        cats.append(
            dict(
                id=num_things + k + 1,
                name=name,
                supercategory='stuff',
                isthing=0,
                color=list(color)))
    return cats


def _smooth_noise(rng: np.random.Generator, height: int, width: int,
                  cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, upsampled."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def _stripes(u: np.ndarray, v: np.ndarray, angle: float,
             period: float) -> np.ndarray:
    return np.sin(2 * np.pi * (u * math.cos(angle) + v * math.sin(angle)) /
                  period) > 0


def _stuff_texture(k: int, canvas: _Canvas, color: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Full-image texture of stuff class ``k`` (index among stuff classes)."""
    yy, xx = canvas.yy, canvas.xx
    height, width = yy.shape
    if k == 0:  # sky: vertical gradient with soft clouds
        gradient = 0.8 + 0.35 * yy / height
        noise = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))
        cloud = np.clip((noise - 0.55) * 3, 0, 1)[..., None]
        return color * gradient[..., None] * (1 - cloud) + 245 * cloud
    if k == 1:  # grass: thin vertical blades bent by smooth noise, plus grain
        bend = 6 * _smooth_noise(rng, height, width, 4)
        blades = np.sin(2 * np.pi * xx / rng.uniform(2.5, 4.5) + bend)
        return (color * (0.8 + 0.25 * blades)[..., None] +
                rng.normal(0, 14, (height, width, 1)))
    if k == 2:  # brick wall: offset rows, per-brick shade, grey mortar
        brick_h = rng.uniform(5, 10)
        brick_w = brick_h * rng.uniform(1.8, 2.6)
        row = np.floor(yy / brick_h).astype(np.int64)
        x = xx + (row % 2) * brick_w / 2
        col = np.floor(x / brick_w).astype(np.int64)
        shade = rng.uniform(0.75, 1.15, (64, 64))[row % 64, col % 64]
        mortar = ((yy % brick_h) < 1.2) | ((x % brick_w) < 1.2)
        return np.where(mortar[..., None], np.float32([175, 170, 160]),
                        color * shade[..., None])
    # generated stuff classes: two-tone stripes at a per-class angle, grain
    light = _stripes(xx, yy, 0.5 + 1.1 * k,
                     5 + 3 * (k % 3) + rng.uniform(-1, 1))
    return (np.where(light[..., None], 0.6 * color + 90, color) +
            rng.normal(0, 10, (height, width, 1)))


def _thing_texture(label: int, u: np.ndarray, v: np.ndarray, radius: float,
                   color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture of thing class ``label`` in the shape's rotated frame (u, v)."""
    if label == 0:  # disk: a lit sphere, so shading, not only outline, tells
        d2 = ((u + 0.35 * radius)**2 +
              (v + 0.35 * radius)**2) / (1.8 * radius)**2
        return color * (1.15 - 0.6 * np.clip(d2, 0, 1))[..., None]
    if label == 1:  # square: checkerboard
        cell = max(1.5, radius * rng.uniform(0.35, 0.6))
        odd = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1
        return np.where(odd[..., None], 0.35 * color + 165, color)
    if label == 2:  # triangle: dark stripes
        dark = _stripes(u, v, 0.0, rng.uniform(3, 6))
        return np.where(dark[..., None], 0.35 * color, color)
    if label == 3:  # ring: dark speckles
        dots = rng.random(u.shape) < 0.18
        return np.where(dots[..., None], 0.25 * color, color)
    light = _stripes(u, v, 0.9 * label, 3 + label % 4)
    return np.where(light[..., None], 0.5 * color + 127, color)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, radius: float,
                rng: np.random.Generator) -> np.ndarray:
    """Pixels inside ``shape`` of half-extent ``radius`` centred at 0."""
    if shape == 'disk':
        aspect = rng.uniform(0.8, 1.25)
        return (u / (radius * aspect))**2 + (v / radius)**2 <= 1
    if shape == 'square':
        return np.maximum(np.abs(u), np.abs(v)) <= radius
    if shape == 'triangle':  # equilateral, circumradius radius: 3 half planes
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        inside = [
            u * math.cos(a) + v * math.sin(a) <= radius / 2 for a in angles
        ]
        return inside[0] & inside[1] & inside[2]
    dist = np.hypot(u, v)
    return (dist <= radius) & (dist >= radius * rng.uniform(0.45, 0.65))


def _draw_shape(canvas: _Canvas, rng: np.random.Generator, label: int,
                seg_id: int, color: np.ndarray, center: tuple[float, float],
                radius: float) -> None:
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = canvas.xx - center[0], canvas.yy - center[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    mask = _shape_mask(SHAPES[label % len(SHAPES)], u, v, radius, rng)
    # Per-instance colour jitter: same class look, not the same pixels.
    jittered = color * rng.uniform(0.85, 1.15, 3)
    canvas.paint(mask, _thing_texture(label, u, v, radius, jittered, rng),
                 seg_id)


def _draw_stuff(canvas: _Canvas, rng: np.random.Generator, cats: list[dict],
                opts: _Options, forced: list[int]) -> None:
    """Cover the image with bands of distinct stuff classes."""
    count = max(
        len(forced),
        min(opts.num_stuff, int(rng.choice([1, 2, 3], p=[0.2, 0.6, 0.2]))))
    others = [
        k for k in rng.permutation(opts.num_stuff).tolist() if k not in forced
    ]
    chosen = rng.permutation(forced + others[:count - len(forced)]).tolist()
    # Half the images get sky-over-ground like bands, the others any direction.
    if rng.random() < 0.5:
        theta = np.pi / 2 + rng.normal(0, 0.2)
    else:
        theta = rng.uniform(0, np.pi)
    height, width = canvas.ids.shape
    t = canvas.xx * math.cos(theta) + canvas.yy * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    s = -canvas.xx * math.sin(theta) + canvas.yy * math.cos(theta)
    amplitude = rng.uniform(0, 0.08)
    period = rng.uniform(0.3, 1.0) * max(height, width)
    wobble = amplitude * np.sin(2 * np.pi * s / period + rng.uniform(0, 6.3))
    cuts = np.sort(rng.uniform(0.15, 0.85, count - 1))
    band = np.searchsorted(cuts, t + wobble)
    for index, k in enumerate(chosen):
        cat = cats[opts.num_things + k]
        seg_id = canvas.new_segment(
            rng, cat['id'], cat['color'], isthing=False)
        texture = _stuff_texture(k, canvas, np.float32(cat['color']), rng)
        canvas.paint(band == index, texture, seg_id)


def _draw_crowd(canvas: _Canvas, rng: np.random.Generator, cats: list[dict],
                opts: _Options) -> None:
    """A cluster of small same-class shapes forming one iscrowd=1 segment."""
    label = int(rng.integers(opts.num_things))
    cat = cats[label]
    seg_id = canvas.new_segment(
        rng, cat['id'], cat['color'], isthing=True, iscrowd=1)
    height, width = canvas.ids.shape
    spread = rng.uniform(0.1, 0.25) * min(height, width)
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    for _ in range(int(rng.integers(6, 16))):
        center = (cx + rng.normal(0, spread / 2),
                  cy + rng.normal(0, spread / 2))
        _draw_shape(canvas, rng, label, seg_id, np.float32(cat['color']),
                    center, rng.uniform(1.5, 4.0))


def _draw_things(canvas: _Canvas, rng: np.random.Generator, cats: list[dict],
                 opts: _Options, forced: list[int]) -> None:
    # At least one when allowed: filter_empty_gt drops thing-less images.
    drawn = rng.integers(min(1, opts.max_instances), opts.max_instances + 1)
    count = max(len(forced), int(drawn))
    extra = rng.integers(0, opts.num_things, count - len(forced)).tolist()
    height, width = canvas.ids.shape
    log_r = (math.log(2.0), math.log(0.6 * min(height, width)))
    centers: list[tuple[float, float, float]] = []
    for label in rng.permutation(forced + extra).tolist():
        radius = math.exp(rng.uniform(*log_r))
        if centers and rng.random() < 0.4:  # on top of an earlier one: overlap
            px, py, pr = centers[int(rng.integers(len(centers)))]
            cx, cy = px + rng.normal(0, pr), py + rng.normal(0, pr)
        else:  # a margin outside the image lets shapes be cut by the border
            fx, fy = rng.uniform(-0.1, 1.1, 2)
            cx, cy = fx * width, fy * height
        centers.append((cx, cy, radius))
        cat = cats[label]
        seg_id = canvas.new_segment(rng, cat['id'], cat['color'], isthing=True)
        _draw_shape(canvas, rng, label, seg_id, np.float32(cat['color']),
                    (cx, cy), radius)


def _apply_void(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Unlabel a thin border on some sides, or an elliptic blob."""
    height, width = canvas.ids.shape
    if rng.random() < 0.5:
        w = int(rng.integers(1, 4))
        sides = rng.random(4) < 0.5
        sides[int(rng.integers(4))] = True
        for side, (rows, cols) in zip(sides, [(slice(0, w), slice(None)),
                                              (slice(-w, None), slice(None)),
                                              (slice(None), slice(0, w)),
                                              (slice(None), slice(-w, None))]):
            if side:
                canvas.ids[rows, cols] = VOID_ID
        return
    ry, rx = rng.uniform(0.05, 0.2, 2) * min(height, width)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    canvas.ids[((canvas.yy - cy) / ry)**2 +
               ((canvas.xx - cx) / rx)**2 <= 1] = VOID_ID


def _bbox(mask: np.ndarray) -> list[int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    return [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1]


def _segments_info(canvas: _Canvas) -> list[dict]:
    """Measure the visible segments; tiny remnants become void."""
    infos = []
    for seg in canvas.segments:
        mask = canvas.ids == seg['id']
        area = int(mask.sum())
        if area < MIN_VISIBLE_AREA:
            canvas.ids[mask] = VOID_ID
            continue
        infos.append(dict(seg, bbox=_bbox(mask), area=area))
    return infos


def _has_forced(infos: list[dict], cats: list[dict], forced_things: list[int],
                forced_stuff: list[int], num_things: int) -> bool:
    present = {s['category_id'] for s in infos if not s['iscrowd']}
    wanted = {cats[t]['id'] for t in forced_things}
    wanted |= {cats[num_things + k]['id'] for k in forced_stuff}
    has_stuff = any(s['category_id'] > num_things for s in infos)
    return has_stuff and wanted <= present


def _render(
        rng: np.random.Generator, cats: list[dict], opts: _Options,
        forced_things: list[int],
        forced_stuff: list[int]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draw one image; redraw until its forced classes and stuff show."""
    for _ in range(MAX_ATTEMPTS):
        sides = rng.integers(opts.min_size, opts.max_size + 1, 2)
        height, width = sides.tolist()
        canvas = _Canvas.empty(height, width)
        _draw_stuff(canvas, rng, cats, opts, forced_stuff)
        if rng.random() < opts.crowd_prob:
            _draw_crowd(canvas, rng, cats, opts)
        _draw_things(canvas, rng, cats, opts, forced_things)
        if rng.random() < opts.void_prob:
            _apply_void(canvas, rng)
        infos = _segments_info(canvas)
        if _has_forced(infos, cats, forced_things, forced_stuff,
                       opts.num_things):
            noisy = canvas.image + rng.normal(0, 3, canvas.image.shape)
            image = np.clip(noisy, 0, 255).round().astype(np.uint8)
            return image, canvas.ids, infos
    raise RuntimeError(
        f'could not make classes {forced_things} (things) / {forced_stuff} '
        f'(stuff) visible in one image after {MAX_ATTEMPTS} tries: use more '
        'images per split or larger images')


def _id_png(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2],
                    axis=-1).astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(
        size=[int(s) for s in rle['size']],
        counts=rle['counts'].decode('ascii'))


def _instance_annotations(ids: np.ndarray, infos: list[dict], image_id: int,
                          cats: list[dict], first_ann_id: int) -> list[dict]:
    isthing = {c['id']: c['isthing'] for c in cats}
    return [
        dict(
            id=first_ann_id + n,
            image_id=image_id,
            category_id=s['category_id'],
            segmentation=_rle(ids == s['id']),
            area=s['area'],
            bbox=s['bbox'],
            iscrowd=s['iscrowd'])
        for n, s in enumerate(x for x in infos if isthing[x['category_id']])
    ]


def _forced(count: int, index: int, num_images: int) -> list[int]:
    return [c for c in range(count) if c % num_images == index]


def _clear_old_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and _OUR_FILE.match(path.name):
            path.unlink()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, separators=(',', ':')) + '\n')


def _generate_split(out: Path, split_index: int, num_images: int,
                    first_image_id: int, seed: int, cats: list[dict],
                    opts: _Options, info: dict) -> dict[str, str]:
    split = SPLITS[split_index]
    img_dir, png_dir = out / split, out / 'annotations' / f'panoptic_{split}'
    for folder in (img_dir, png_dir):
        _clear_old_files(folder)
    images, pan_anns, inst_anns = [], [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_index, index])
        image, ids, infos = _render(
            rng, cats, opts, _forced(opts.num_things, index, num_images),
            _forced(opts.num_stuff, index, num_images))
        image_id = first_image_id + index
        name = f'{image_id:012d}'
        Image.fromarray(image).save(
            img_dir / f'{name}.jpg', quality=JPEG_QUALITY)
        Image.fromarray(_id_png(ids)).save(png_dir / f'{name}.png')
        images.append(
            dict(
                id=image_id,
                file_name=f'{name}.jpg',
                height=image.shape[0],
                width=image.shape[1]))
        pan_anns.append(
            dict(
                image_id=image_id,
                file_name=f'{name}.png',
                segments_info=infos))
        inst_anns += _instance_annotations(ids, infos, image_id, cats,
                                           len(inst_anns) + 1)
    info = dict(info, split=split)
    pan_json = out / 'annotations' / f'panoptic_{split}.json'
    inst_json = out / 'annotations' / f'instances_{split}.json'
    _write_json(
        pan_json,
        dict(
            info=info,
            licenses=[],
            images=images,
            annotations=pan_anns,
            categories=cats))
    _write_json(
        inst_json,
        dict(
            info=info,
            licenses=[],
            images=images,
            annotations=inst_anns,
            categories=[c for c in cats if c['isthing']]))
    return {
        f'{split}_images': str(img_dir),
        f'panoptic_{split}_json': str(pan_json),
        f'panoptic_{split}_dir': str(png_dir),
        f'instances_{split}_json': str(inst_json)
    }


def _check_args(num_train: int, num_val: int, seed: int, min_size: int,
                max_size: int, num_things: int, num_stuff: int,
                max_instances: int, crowd_prob: float,
                void_prob: float) -> None:
    """Raise ValueError naming the first bad argument and its value."""
    sizes_ok = max_size >= min_size
    checks = [
        ('num_train', num_train, num_train >= 1, '>= 1'),
        ('num_val', num_val, num_val >= 1, '>= 1'),
        ('seed', seed, seed >= 0, '>= 0'),
        ('min_size', min_size, min_size >= 16, '>= 16 (room for shapes)'),
        ('max_size', max_size, sizes_ok, f'>= min_size ({min_size})'),
        ('num_things', num_things, num_things >= 1, '>= 1'),
        ('num_stuff', num_stuff, num_stuff >= 1, '>= 1 (images need stuff)'),
        ('max_instances', max_instances, max_instances >= 0, '>= 0'),
        ('crowd_prob', crowd_prob, 0 <= crowd_prob <= 1, 'in [0, 1]'),
        ('void_prob', void_prob, 0 <= void_prob <= 1, 'in [0, 1]'),
    ]
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f'{name} must be {rule}, got {value!r}')


def generate_toy_panoptic(out_dir: str | Path,
                          num_train: int = 400,
                          num_val: int = 50,
                          seed: int = 0,
                          min_size: int = 96,
                          max_size: int = 224,
                          num_things: int = len(THING_CLASSES),
                          num_stuff: int = len(STUFF_CLASSES),
                          max_instances: int = 8,
                          crowd_prob: float = 0.15,
                          void_prob: float = 0.3,
                          verbose: bool = False) -> dict[str, str]:
    """Write the toy panoptic dataset under ``out_dir`` (see module docstring).

    Args:
        out_dir: Dataset root; created if missing, our files in it replaced.
        num_train, num_val: Number of images per split (>= 1).
        seed: Seed (>= 0); the same seed gives identical files.
        min_size, max_size: Range of each image side in pixels (drawn
            independently, so aspect ratios vary).
        num_things, num_stuff: Number of thing / stuff classes (names from
            ``class_names``).
        max_instances: Most non-crowd instances drawn in an image (before
            occlusion; forced classes may add to it).
        crowd_prob: Probability that an image gets a crowd segment.
        void_prob: Probability that an image gets a void border or blob.
        verbose: Print a summary of what was written.

    Returns:
        Paths written: ``{split}_images``, ``panoptic_{split}_json``,
        ``panoptic_{split}_dir`` and ``instances_{split}_json``, both splits.
    """
    _check_args(num_train, num_val, seed, min_size, max_size, num_things,
                num_stuff, max_instances, crowd_prob, void_prob)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f'out_dir must be a directory, got file {str(out)!r}')
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    opts = _Options(num_things, num_stuff, min_size, max_size, max_instances,
                    crowd_prob, void_prob)
    cats = _categories(num_things, num_stuff)
    info = dict(
        description='DR1Mask toy panoptic dataset, made by '
        'tools/misc/generate_toy_panoptic.py',
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        **vars(opts))
    paths = {}
    for split_index, (num, first_id) in enumerate([(num_train, 1),
                                                   (num_val, num_train + 1)]):
        paths.update(
            _generate_split(out, split_index, num, first_id, seed, cats, opts,
                            info))
    if verbose:
        print(summary(paths))
    return paths


def summary(paths: dict[str, str]) -> str:
    """Per split: image sides, segments per class, crowd and void images."""
    lines = []
    for split in SPLITS:
        data = json.loads(Path(paths[f'panoptic_{split}_json']).read_text())
        names = {c['id']: c['name'] for c in data['categories']}
        segs = [s for a in data['annotations'] for s in a['segments_info']]
        sides = [
            side for im in data['images']
            for side in (im['height'], im['width'])
        ]
        crowd = sum(
            any(s['iscrowd'] for s in a['segments_info'])
            for a in data['annotations'])
        # Segments tile all but void: an area sum short of H * W means void.
        void = sum(
            sum(s['area']
                for s in a['segments_info']) < im['height'] * im['width']
            for a, im in zip(data['annotations'], data['images']))
        counts = Counter(s['category_id'] for s in segs if not s['iscrowd'])
        per_class = ', '.join(f'{names[c]} {counts[c]}' for c in names)
        lines.append(
            f'{split}: {len(data["images"])} images, sides {min(sides)}..'
            f'{max(sides)} px, {len(segs)} segments ({per_class}; not crowd), '
            f'{crowd} images with crowd, {void} with void')
    lines.append(f'written under {Path(paths["train_images"]).parent}')
    return '\n'.join(lines)


_HELP = dict(
    num_train='training images',
    num_val='validation images (each class is in val at least once)',
    seed='random seed; the same seed gives byte-identical files',
    min_size='smallest image side in pixels',
    max_size='largest image side in pixels',
    num_things='thing classes (beyond the defaults: thing_<k>)',
    num_stuff='stuff classes (beyond the defaults: stuff_<k>)',
    max_instances='most thing instances drawn per image',
    crowd_prob='fraction of images with a crowd segment',
    void_prob='fraction of images with a void border or blob')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a synthetic COCO-panoptic dataset for '
        'DR1Mask tests and CPU training.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        'out_dir', nargs='?', default='data/toy_panoptic', help='dataset root')
    # Defaults and types come from the function, so the two cannot drift.
    params = inspect.signature(generate_toy_panoptic).parameters
    for name, text in _HELP.items():
        default = params[name].default
        parser.add_argument(
            '--' + name.replace('_', '-'),
            type=type(default),
            default=default,
            help=text)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    kwargs = {k: v for k, v in vars(args).items() if k != 'out_dir'}
    try:
        generate_toy_panoptic(args.out_dir, verbose=True, **kwargs)
    except ValueError as err:
        sys.exit(f'error: {err}')
    print(f'done in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
