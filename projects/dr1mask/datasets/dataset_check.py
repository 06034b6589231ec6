"""Check a COCO-panoptic dataset against what mmdet and DR1Mask assume.

mmdet's ``CocoPanopticDataset`` and ``LoadPanopticAnnotations`` trust their
input: a segment id that the PNG lacks becomes an empty mask, a category id
outside ``categories`` is a ``KeyError`` deep in dataset parsing, a class
count that disagrees with the data surfaces as an index error inside a loss.
:func:`check_panoptic_dataset` reads the whole dataset once and returns
every problem, one line each naming the image (and segment); the CLI
``tools/misc/check_panoptic_dataset.py`` prints them and
:class:`CheckPanopticDatasetHook` raises them before training starts.

What mmdet reads, and so what is checked:

* the image at ``IMG_DIR/<images[].file_name>``, decoded as
  ``LoadImageFromFile`` does (``mmcv.imfrombytes``, cv2, colour, EXIF
  orientation applied), and the PNG at
  ``SEG_DIR/<file_name.replace('.jpg', '.png')>`` (``parse_data_info``; a
  dataset class with a ``seg_map_name`` method, like the Cityscapes one,
  names it so instead),
  whose pixels hold segment ids ``R + 256 G + 256^2 B`` (panopticapi's
  ``rgb2id``, 0 is void);
* contiguous labels numbered in the order of ``categories`` (restricted to
  the config's ``metainfo.classes``); DR1Mask takes labels below the number
  of thing classes for things, so things must come first.
"""
import json
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.fileio import get
from mmengine.hooks import Hook
from panopticapi.utils import rgb2id

from mmdet.datasets import CocoPanopticDataset
from mmdet.registry import DATASETS, HOOKS

# Head arguments that count thing / stuff classes (mmdet's names).
THING_COUNT_KEYS = ('num_things_classes', )
STUFF_COUNT_KEYS = ('num_stuff_classes', )
# ``num_classes`` counts thing classes in these heads (and their nested
# ``roi_head.bbox_head`` / ``roi_head.mask_head``).
THING_HEADS = ('bbox_head', 'mask_head')


def class_counts(model_cfg: dict) -> Dict[str, Tuple[str, int]]:
    """Every class count in a model config, by its dotted path.

    Returns:
        ``{'model.bbox_head.num_classes': ('thing', 80),
        'model.panoptic_head.num_stuff_classes': ('stuff', 53), ...}``:
        thing counts are ``num_classes`` of a ``*bbox_head`` /
        ``*mask_head`` and any ``num_things_classes``; stuff counts are any
        ``num_stuff_classes``.
    """
    counts = {}

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            where = f'{path}.{key}'
            if isinstance(value, dict):
                walk(value, where)
            elif key in THING_COUNT_KEYS or (key == 'num_classes'
                                             and path.endswith(THING_HEADS)):
                counts[where] = ('thing', value)
            elif key in STUFF_COUNT_KEYS:
                counts[where] = ('stuff', value)

    walk(model_cfg, 'model')
    return counts


def _category_problems(categories: List[dict],
                       classes: Optional[Sequence[str]]) -> List[str]:
    """``isthing`` fields, the order of things and stuff, config classes."""
    problems = []
    for cat in categories:
        if 'isthing' not in cat:
            problems.append(f'category {cat["id"]} {cat.get("name")!r}: '
                            "no 'isthing' field")
        elif cat['isthing'] not in (0, 1):
            problems.append(f'category {cat["id"]} {cat.get("name")!r}: '
                            f'isthing must be 0 or 1, got {cat["isthing"]!r}')
    names = {cat.get('name') for cat in categories}
    if classes is not None:
        problems += [
            f'config metainfo class {name!r} is not a category name in the '
            'json (mmdet drops it, and every later label shifts)'
            for name in classes if name not in names
        ]
    used = [c for c in categories if classes is None or c['name'] in classes]
    # mmdet numbers labels in json order whatever the order of `classes`.
    first_stuff = next((c for c in used if c.get('isthing') == 0), None)
    if first_stuff is not None:
        problems += [
            f'category {c["id"]} {c["name"]!r} is a thing listed after the '
            f'stuff category {first_stuff["id"]} {first_stuff["name"]!r}: '
            'mmdet numbers labels in the order of categories and DR1Mask '
            'takes the first labels for things' for c in used
            if c.get('isthing') == 1 and used.index(c) > used.index(
                first_stuff)
        ]
    if classes is not None:
        isthing = {c['name']: c.get('isthing') for c in categories}
        listed = [n for n in classes if n in names]
        stuff = [n for n in listed if isthing[n] == 0]
        problems += [
            f'config metainfo: thing class {name!r} is listed after the '
            f'stuff class {stuff[0]!r} in classes' for name in listed
            if isthing[name] == 1 and stuff
            and listed.index(name) > listed.index(stuff[0])
        ]
        json_order = [c['name'] for c in used]
        if listed != json_order:
            problems.append(
                f'config metainfo classes {listed} are not in the order of '
                f'the json categories {json_order}: mmdet numbers labels in '
                'json order, so label k would not be classes[k]')
    return problems


def _count_problems(model_cfg: dict, categories: List[dict],
                    classes: Optional[Sequence[str]]) -> List[str]:
    """Class counts in the model's heads against the dataset's."""
    used = [c for c in categories if classes is None or c['name'] in classes]
    names = dict(
        thing=[c['name'] for c in used if c.get('isthing') == 1],
        stuff=[c['name'] for c in used if c.get('isthing') == 0])
    return [
        f'config {path} = {value}, but the dataset has {len(names[kind])} '
        f'{kind} classes {names[kind]}'
        for path, (kind, value) in class_counts(model_cfg).items()
        if value != len(names[kind])
    ]


def _read(path: str, channel_order: str = 'bgr') -> np.ndarray:
    """Decode an image as mmdet's loaders do; raise OSError if it can't."""
    if not osp.isfile(path):
        raise OSError('is missing')
    try:
        image = mmcv.imfrombytes(
            get(path), flag='color', channel_order=channel_order)
    except Exception as err:  # cv2 raises its own error types
        raise OSError(f'cannot be decoded ({err})') from err
    if image is None:
        raise OSError('cannot be decoded')
    return image


def coco_seg_map_name(img_file_name: str) -> str:
    """The PNG name ``CocoPanopticDataset`` reads for an image."""
    return img_file_name.replace('.jpg', '.png')


def _image_problems(image: dict, ann: Optional[dict], seg_dir: str,
                    img_dir: str,
                    seg_map_name: Callable[[str], str]) -> List[str]:
    """Everything wrong with one image's files: presence, decoding, sizes,
    the segments of its PNG against its json segments."""
    name = f'image {image.get("file_name")!r} (id {image.get("id")})'
    problems = []
    try:
        shape = _read(osp.join(img_dir, image['file_name'])).shape[:2]
    except OSError as err:
        shape = None
        problems.append(f'{name}: image file '
                        f'{osp.join(img_dir, image["file_name"])} {err}')
    if ann is None:
        return problems + [f'{name}: no entry in annotations']
    derived = seg_map_name(image['file_name'])
    png_name = ann.get('file_name', derived)
    if derived != png_name:
        hint = ("(the image name with '.jpg' replaced by '.png'), but the "
                f'json names {png_name!r}; name the image <stem>.jpg'
                if seg_map_name is coco_seg_map_name else
                f'but the json names {png_name!r}')
        problems.append(f'{name}: mmdet reads its PNG as '
                        f'{osp.join(seg_dir, derived)} {hint}')
    png_path = osp.join(seg_dir, png_name)
    try:
        ids = rgb2id(_read(png_path, channel_order='rgb'))
    except OSError as err:
        return problems + [f'{name}: PNG {png_path} {err}']

    sizes = dict(json=(image.get('height'), image.get('width')),
                 PNG=ids.shape)
    if shape is not None:
        sizes['image'] = shape
    if len(set(sizes.values())) > 1:
        problems.append(f'{name}: sizes (height, width) disagree: ' +
                        ', '.join(f'{k} {h}x{w}'
                                  for k, (h, w) in sizes.items()))

    in_png, areas = np.unique(ids, return_counts=True)
    in_png_areas = dict(zip(in_png.tolist(), areas.tolist()))
    in_png_areas.pop(0, None)  # void
    seen = set()
    for seg in ann.get('segments_info', []):
        where = f'{name}, segment {seg.get("id")}'
        if seg.get('id') in seen:
            problems.append(f'{where}: listed twice in segments_info')
        seen.add(seg.get('id'))
        if seg.get('id') not in in_png_areas:
            problems.append(f'{where}: in the json but not in the PNG '
                            f'{png_path}')
    problems += [
        f'{name}, segment {seg_id}: in the PNG {png_path} ({area} px) but '
        'not in the json segments_info'
        for seg_id, area in in_png_areas.items() if seg_id not in seen
    ]
    return problems


def metainfo_classes(dataset_cfg: dict) -> Optional[Sequence[str]]:
    """A dataset config's ``metainfo.classes``; None if it sets none."""
    metainfo = dataset_cfg.get('metainfo') or {}
    return metainfo.get('classes')


def panoptic_datasets(dataset_cfg: dict) -> Iterator[dict]:
    """The configs of ``CocoPanopticDataset`` (or a subclass, e.g. the
    Cityscapes one) in a dataset config, through wrappers (``dataset=``,
    ``datasets=``)."""
    if 'dataset' in dataset_cfg:
        yield from panoptic_datasets(dataset_cfg['dataset'])
    for inner in dataset_cfg.get('datasets', []):
        yield from panoptic_datasets(inner)
    dataset_type = dataset_class(dataset_cfg)
    if isinstance(dataset_type, type) \
            and issubclass(dataset_type, CocoPanopticDataset):
        yield dataset_cfg


def dataset_class(dataset_cfg: dict) -> Optional[type]:
    """The class a dataset config builds (its ``type``, a name or a
    class)."""
    dataset_type = dataset_cfg.get('type')
    return DATASETS.get(dataset_type) if isinstance(dataset_type, str) \
        else dataset_type


def seg_map_namer(dataset_cfg: dict) -> Callable[[str], str]:
    """How the dataset of ``dataset_cfg`` names an image's PNG."""
    return getattr(dataset_class(dataset_cfg), 'seg_map_name',
                   coco_seg_map_name)


def check_panoptic_dataset(ann_file: str,
                           seg_dir: str,
                           img_dir: str,
                           classes: Optional[Sequence[str]] = None,
                           model_cfg: Optional[dict] = None,
                           nproc: int = 1,
                           seg_map_name: Callable[[str], str] = (
                               coco_seg_map_name)) -> List[str]:
    """Every problem of a COCO-panoptic dataset, one line each.

    Args:
        ann_file: The panoptic json (``images``, ``annotations``,
            ``categories``).
        seg_dir: Folder of the panoptic PNGs.
        img_dir: Folder of the images.
        classes: The config's ``metainfo.classes``: the categories (by name)
            that the dataset uses, in label order. None: all categories.
        model_cfg: A model config whose class counts (:func:`class_counts`)
            must match the dataset's thing / stuff classes.
        nproc: Images decoded in parallel (threads; decoding releases the
            GIL).
        seg_map_name: The PNG name the dataset class reads for an image's
            ``file_name`` (:func:`seg_map_namer`).

    Returns:
        One message per problem, naming the image and segment where there
        is one; empty for a dataset mmdet and DR1Mask read as intended.
    """
    data, problems = _load_annotations(ann_file, classes, model_cfg)
    if data is None:
        return problems
    anns = {ann.get('image_id'): ann for ann in data['annotations']}
    with ThreadPoolExecutor(max(nproc, 1)) as pool:
        for found in pool.map(
                lambda image: _image_problems(image, anns.get(image['id']),
                                              seg_dir, img_dir, seg_map_name),
                {image['id']: image for image in data['images']}.values()):
            problems += found
    return problems


def check_panoptic_annotations(ann_file: str,
                               classes: Optional[Sequence[str]] = None,
                               model_cfg: Optional[dict] = None) -> List[str]:
    """The problems of :func:`check_panoptic_dataset` that the json alone
    shows (categories, ``isthing``, class order and counts, the category and
    image of each segment): the ones on which mmdet's
    ``CocoPanopticDataset`` fails while it is built, with a bare
    ``KeyError``. Reads no image, so it runs before the dataset is built."""
    return _load_annotations(ann_file, classes, model_cfg)[1]


def _load_annotations(
        ann_file: str, classes: Optional[Sequence[str]],
        model_cfg: Optional[dict]) -> Tuple[Optional[dict], List[str]]:
    """The json and its problems (:func:`check_panoptic_annotations`); None
    for a json that cannot be read or lacks a top-level field."""
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        return None, [f'{ann_file}: cannot be read as json ({err})']
    missing = [k for k in ('images', 'annotations', 'categories')
               if k not in data]
    if missing:
        return None, [f'{ann_file}: no {missing} field']
    categories = data['categories']
    problems = _category_problems(categories, classes)
    if model_cfg is not None:
        problems += _count_problems(model_cfg, categories, classes)
    by_id = {cat['id']: cat for cat in categories}
    images = {image['id']: image for image in data['images']}
    for ann in data['annotations']:
        image = images.get(ann.get('image_id'))
        if image is None:
            problems.append(f'annotation {ann.get("file_name")!r}: image_id '
                            f'{ann.get("image_id")!r} is not in images')
            continue
        name = f'image {image.get("file_name")!r} (id {image.get("id")})'
        problems += _segment_category_problems(name, ann, by_id, classes)
    return data, problems


def _segment_category_problems(name: str, ann: dict,
                               categories: Dict[int, dict],
                               classes: Optional[Sequence[str]]) -> List[str]:
    """Segments of one image whose category mmdet cannot map to a label."""
    problems = []
    for seg in ann.get('segments_info', []):
        where = f'{name}, segment {seg.get("id")}'
        cat = categories.get(seg.get('category_id'))
        if cat is None:
            problems.append(f'{where}: category_id {seg.get("category_id")!r}'
                            ' is not in categories')
        elif classes is not None and cat.get('name') not in classes:
            problems.append(
                f'{where}: category {cat["id"]} {cat.get("name")!r} is not '
                'among the config metainfo classes')
    return problems


def check_dataset_config(dataset_cfg: dict,
                         model_cfg: Optional[dict] = None,
                         nproc: int = 1,
                         images: bool = True) -> List[str]:
    """:func:`check_panoptic_dataset` (or, without ``images``,
    :func:`check_panoptic_annotations`) on each ``CocoPanopticDataset`` of a
    dataset config, its paths joined to ``data_root`` as mmdet's
    ``BaseDataset`` joins them; each message starts with the json's path."""
    problems = []
    for cfg in panoptic_datasets(dataset_cfg):
        root = cfg.get('data_root') or ''
        prefix = cfg.get('data_prefix') or {}
        if not prefix.get('seg'):
            continue  # no annotation is loaded (test-dev: image info only)
        ann_file = osp.join(root, cfg['ann_file'])
        if images:
            found = check_panoptic_dataset(
                ann_file, osp.join(root, prefix.get('seg', '')),
                osp.join(root, prefix.get('img', '')),
                metainfo_classes(cfg), model_cfg, nproc, seg_map_namer(cfg))
        else:
            found = check_panoptic_annotations(ann_file,
                                               metainfo_classes(cfg),
                                               model_cfg)
        problems += [f'{ann_file}: {problem}' for problem in found]
    return problems


def check_config_datasets(
    cfg: Config,
    nproc: int = 1,
    loaders: Sequence[str] = ('train_dataloader', 'val_dataloader'),
    images: bool = True,
) -> List[str]:
    """The problems of the panoptic datasets of ``cfg``'s ``loaders``
    (:func:`check_dataset_config`)."""
    problems = []
    for loader in loaders:
        if cfg.get(loader):
            problems += check_dataset_config(cfg[loader]['dataset'],
                                             cfg.model, nproc, images)
    return problems


def raise_dataset_problems(problems: List[str]) -> None:
    """Raise one error listing ``problems``, if there are any."""
    if problems:
        raise ValueError(
            f'the dataset has {len(problems)} problem(s) '
            '(tools/misc/check_panoptic_dataset.py lists the same):\n' +
            '\n'.join(problems))


@HOOKS.register_module()
class CheckPanopticDatasetHook(Hook):
    """Fail before the first iteration if the train or val panoptic dataset
    has any problem :func:`check_panoptic_dataset` finds.

    The main process checks (the others would read the same files) and
    broadcasts the result, so every rank raises the same error.

    Args:
        nproc: Images decoded in parallel.
    """

    priority = 'VERY_HIGH'

    def __init__(self, nproc: int = 4) -> None:
        self.nproc = nproc

    def before_train(self, runner) -> None:
        problems = [None]
        if is_main_process():
            problems = [check_config_datasets(runner.cfg, self.nproc)]
        broadcast_object_list(problems)
        raise_dataset_problems(problems[0])
