"""The toy panoptic generator: format, consistency, determinism, mmdet.

The mmdet checks (dataset, transforms, metrics) are skipped while mmcv is
missing; the format checks need only numpy, PIL and pycocotools.
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
# pycocotools 2.0.11's RLE decode trips a numpy 2 copy-keyword deprecation.
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')


def _load_generator():
    # tools/misc is not a package: load the script as a module by its path.
    path = ROOT / 'tools' / 'misc' / 'generate_toy_panoptic.py'
    spec = importlib.util.spec_from_file_location('generate_toy_panoptic',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
SMALL = dict(
    num_train=6,
    num_val=5,
    seed=3,
    min_size=48,
    max_size=112,
    crowd_prob=0.5,
    void_prob=0.5)
NUM_CLASSES = len(gen.THING_CLASSES) + len(gen.STUFF_CLASSES)


@pytest.fixture(scope='module')
def generated(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp('toy')
    return root, gen.generate_toy_panoptic(root, **SMALL)


@pytest.fixture(scope='module')
def dataset(generated) -> Path:
    return generated[0]


def _json(root: Path, name: str) -> dict:
    return json.loads((root / 'annotations' / name).read_text())


def _id_map(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert('RGB')).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


def _panoptic_pairs(root: Path, split: str):
    data = _json(root, f'panoptic_{split}.json')
    images = {im['id']: im for im in data['images']}
    for ann in data['annotations']:
        ids = _id_map(root / 'annotations' / f'panoptic_{split}' /
                      ann['file_name'])
        yield images[ann['image_id']], ann, ids


def test_layout_and_returned_paths(generated):
    dataset, paths = generated
    assert paths == {
        'train_images': str(dataset / 'train'),
        'val_images': str(dataset / 'val'),
        'panoptic_train_json':
        str(dataset / 'annotations/panoptic_train.json'),
        'panoptic_val_json': str(dataset / 'annotations/panoptic_val.json'),
        'panoptic_train_dir': str(dataset / 'annotations/panoptic_train'),
        'panoptic_val_dir': str(dataset / 'annotations/panoptic_val'),
        'instances_train_json':
        str(dataset / 'annotations/instances_train.json'),
        'instances_val_json': str(dataset / 'annotations/instances_val.json')
    }
    train = _json(dataset, 'panoptic_train.json')
    val = _json(dataset, 'panoptic_val.json')
    assert [im['id'] for im in train['images']] == list(range(1, 7))
    assert [im['id'] for im in val['images']] == list(range(7, 12))
    for split, data in (('train', train), ('val', val)):
        for im, ann in zip(data['images'], data['annotations']):
            assert im['file_name'] == f'{im["id"]:012d}.jpg'
            assert ann['file_name'] == im['file_name'].replace('.jpg', '.png')
            assert ann['image_id'] == im['id']
            with Image.open(dataset / split / im['file_name']) as img:
                assert img.format == 'JPEG' and img.mode == 'RGB'
                assert img.size == (im['width'], im['height'])


def test_png_ids_areas_and_boxes_match_json(dataset: Path):
    for split in ('train', 'val'):
        for im, ann, ids in _panoptic_pairs(dataset, split):
            assert ids.shape == (im['height'], im['width'])
            found, counts = np.unique(ids, return_counts=True)
            area = dict(zip(found.tolist(), counts.tolist()))
            area.pop(0, None)  # void
            segs = ann['segments_info']
            assert len({s['id'] for s in segs}) == len(segs)
            assert {s['id'] for s in segs} == set(area)
            for seg in segs:
                assert seg['area'] == area[seg['id']] >= gen.MIN_VISIBLE_AREA
                ys, xs = np.nonzero(ids == seg['id'])
                assert seg['bbox'] == [
                    xs.min(),
                    ys.min(),
                    xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1
                ]


def test_categories_things_first_with_isthing(dataset: Path):
    cats = _json(dataset, 'panoptic_val.json')['categories']
    assert [c['id'] for c in cats] == list(range(1, NUM_CLASSES + 1))
    assert [c['name']
            for c in cats] == list(gen.THING_CLASSES + gen.STUFF_CLASSES)
    assert [c['isthing'] for c in cats] == [1] * 4 + [0] * 3
    assert gen.THING_CLASSES == ('disk', 'square', 'triangle', 'ring')
    assert gen.STUFF_CLASSES == ('sky', 'grass', 'brick')
    inst_cats = _json(dataset, 'instances_val.json')['categories']
    assert inst_cats == cats[:4]


def test_instances_json_agrees_with_panoptic(dataset: Path):
    for split in ('train', 'val'):
        inst = _json(dataset, f'instances_{split}.json')
        assert inst['images'] == _json(dataset,
                                       f'panoptic_{split}.json')['images']
        assert [a['id'] for a in inst['annotations']
                ] == list(range(1,
                                len(inst['annotations']) + 1))
        by_image: dict[int, list[dict]] = {}
        for a in inst['annotations']:
            by_image.setdefault(a['image_id'], []).append(a)
        for im, ann, ids in _panoptic_pairs(dataset, split):
            things = [s for s in ann['segments_info'] if s['category_id'] <= 4]
            anns = by_image.get(im['id'], [])
            assert len(anns) == len(things)
            for a in anns:
                mask = mask_utils.decode(a['segmentation']).astype(bool)
                seg_ids = np.unique(ids[mask])
                assert len(
                    seg_ids) == 1  # exactly one panoptic segment's pixels...
                seg = next(s for s in things if s['id'] == seg_ids[0])
                assert mask.sum() == (
                    ids == seg['id']).sum() == a['area']  # ...all of them
                assert (a['category_id'], a['iscrowd'],
                        a['bbox']) == (seg['category_id'], seg['iscrowd'],
                                       seg['bbox'])


def test_every_category_in_every_split_and_stuff_in_every_image(dataset: Path):
    for split in ('train', 'val'):
        data = _json(dataset, f'panoptic_{split}.json')
        present = {
            s['category_id']
            for a in data['annotations']
            for s in a['segments_info'] if not s['iscrowd']
        }
        assert present == set(range(1, NUM_CLASSES + 1))
        for a in data['annotations']:
            assert any(s['category_id'] > 4 for s in a['segments_info'])


def test_crowd_void_overlap_and_sizes_are_exercised(dataset: Path):
    crowd = void = border = 0
    sizes = set()
    for split in ('train', 'val'):
        for im, ann, ids in _panoptic_pairs(dataset, split):
            sizes.add((im['height'], im['width']))
            crowd += any(s['iscrowd'] for s in ann['segments_info'])
            void += (ids == 0).any()
            border += any(s['category_id'] <= 4 and not s['iscrowd'] and (
                s['bbox'][0] == 0 or s['bbox'][1] == 0)
                          for s in ann['segments_info'])
    assert crowd and void and border
    assert len(sizes) > 5
    assert len({round(h / w, 1) for h, w in sizes}) > 3


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    args = dict(num_train=3, num_val=2, min_size=48, max_size=80)
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        gen.generate_toy_panoptic(tmp_path / name, seed=seed, **args)
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    assert a == b
    assert a.keys() == c.keys()
    assert a['annotations/panoptic_train.json'] != c[
        'annotations/panoptic_train.json']


def test_rerun_overwrites_cleanly(tmp_path: Path):
    args = dict(min_size=48, max_size=64)
    gen.generate_toy_panoptic(tmp_path, num_train=4, num_val=2, **args)
    keep = tmp_path / 'train' / 'notes.txt'
    keep.write_text('not ours')
    gen.generate_toy_panoptic(tmp_path, num_train=2, num_val=1, **args)
    assert sorted(p.name for p in (tmp_path / 'train').iterdir()) == [
        '000000000001.jpg', '000000000002.jpg', 'notes.txt'
    ]
    assert len(list(
        (tmp_path / 'annotations' / 'panoptic_val').iterdir())) == 1
    assert len(_json(tmp_path, 'panoptic_val.json')['images']) == 1
    assert keep.read_text() == 'not ours'


def test_more_classes_than_defaults(tmp_path: Path):
    things, stuff = gen.class_names(6, 4)
    assert things == gen.THING_CLASSES + ('thing_4', 'thing_5')
    assert stuff == gen.STUFF_CLASSES + ('stuff_3', )
    assert gen.class_names(2, 1) == (('disk', 'square'), ('sky', ))
    gen.generate_toy_panoptic(
        tmp_path,
        num_train=2,
        num_val=3,
        num_things=6,
        num_stuff=4,
        min_size=64,
        max_size=96)
    data = _json(tmp_path, 'panoptic_val.json')
    assert [c['name'] for c in data['categories']] == list(things + stuff)
    present = {
        s['category_id']
        for a in data['annotations']
        for s in a['segments_info'] if not s['iscrowd']
    }
    assert present == set(range(1, 11))
    colors = [tuple(c['color']) for c in data['categories']]
    assert len(set(colors)) == len(colors)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'num_train must be >= 1, got 0'),
    (dict(num_val=-1), 'num_val must be >= 1, got -1'),
    (dict(seed=-5), 'seed must be >= 0, got -5'),
    (dict(min_size=8), 'min_size must be >= 16'),
    (dict(min_size=100,
          max_size=50), r'max_size must be >= min_size \(100\), got 50'),
    (dict(num_things=0), 'num_things must be >= 1, got 0'),
    (dict(num_stuff=0), 'num_stuff must be >= 1'),
    (dict(max_instances=-1), 'max_instances must be >= 0, got -1'),
    (dict(crowd_prob=1.5), r'crowd_prob must be in \[0, 1\], got 1.5'),
    (dict(void_prob=-0.1), r'void_prob must be in \[0, 1\], got -0.1'),
])
def test_bad_arguments_name_argument_and_value(tmp_path: Path, kwargs,
                                               message):
    with pytest.raises(ValueError, match=message):
        gen.generate_toy_panoptic(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written


def test_out_dir_that_is_a_file(tmp_path: Path):
    path = tmp_path / 'file'
    path.write_text('')
    with pytest.raises(ValueError, match='out_dir must be a directory'):
        gen.generate_toy_panoptic(path, num_train=1, num_val=1)


def test_cli(tmp_path: Path, capsys):
    gen.main([
        str(tmp_path), '--num-train', '2', '--num-val', '2', '--min-size',
        '48', '--max-size', '64', '--seed', '7'
    ])
    out = capsys.readouterr().out
    assert 'train: 2 images' in out and 'val: 2 images' in out
    assert 'disk' in out
    assert len(list((tmp_path / 'val').glob('*.jpg'))) == 2
    with pytest.raises(SystemExit, match='num_val must be >= 1, got 0'):
        gen.main([str(tmp_path), '--num-val', '0'])


# ---- mmdet reads it (needs mmcv) ------------------------------------------


def _metainfo() -> dict:
    return dict(
        classes=gen.THING_CLASSES + gen.STUFF_CLASSES,
        thing_classes=gen.THING_CLASSES,
        stuff_classes=gen.STUFF_CLASSES)


def test_mmdet_panoptic_dataset_and_transforms(dataset: Path):
    pytest.importorskip('mmcv')
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoPanopticDataset(
        data_root=str(dataset),
        ann_file='annotations/panoptic_train.json',
        metainfo=_metainfo(),
        data_prefix=dict(img='train/', seg='annotations/panoptic_train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadPanopticAnnotations', backend_args=None),
            dict(type='PackDetInputs')
        ])
    assert 0 < len(ds) <= SMALL['num_train']
    seen_labels, seen_sem = set(), set()
    for index in range(len(ds)):
        sample = ds[index]['data_samples']
        inst = sample.gt_instances
        h, w = sample.ori_shape
        masks = inst.masks.to_ndarray()
        assert masks.shape == (len(
            inst.labels), h, w) and masks.any(axis=(1, 2)).all()
        sem = sample.gt_sem_seg.sem_seg.numpy()[0]
        assert sem.shape == (h, w)
        seen_labels |= set(inst.labels.tolist())
        seen_sem |= set(np.unique(sem).tolist())
        for mask, label in zip(masks, inst.labels.tolist()):
            assert (sem[mask.astype(bool)] == label).all()
    assert seen_labels == {0, 1, 2, 3}
    assert seen_sem == set(range(NUM_CLASSES)) | {255}


def test_mmdet_instance_dataset_reads_rle(dataset: Path):
    pytest.importorskip('mmcv')
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(
        data_root=str(dataset),
        ann_file='annotations/instances_val.json',
        metainfo=dict(classes=gen.THING_CLASSES),
        data_prefix=dict(img='val/'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs')
        ])
    inst = _json(dataset, 'instances_val.json')
    sample = ds[0]['data_samples']
    anns = [
        a for a in inst['annotations']
        if a['image_id'] == sample.img_id and not a['iscrowd']
    ]
    areas = sample.gt_instances.masks.to_ndarray().sum(axis=(1, 2)).tolist()
    assert sorted(areas) == sorted(a['area'] for a in anns)


def _perfect_predictions(dataset: Path) -> list[dict]:
    """Ground truth turned into mmdet's prediction format for the val split."""
    import torch
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    samples = []
    for im, ann, ids in _panoptic_pairs(dataset, 'val'):
        # Void and crowd pixels are predicted as VOID (label num_classes).
        pan = np.full(ids.shape, NUM_CLASSES, np.int64)
        boxes, labels, masks = [], [], []
        for k, seg in enumerate(ann['segments_info'], start=1):
            label, mask = seg['category_id'] - 1, ids == seg['id']
            if label >= len(gen.THING_CLASSES):
                pan[mask] = label
            elif not seg['iscrowd']:
                pan[mask] = label + k * INSTANCE_OFFSET
                x, y, w, h = seg['bbox']
                boxes.append([x, y, x + w, y + h])
                labels.append(label)
                masks.append(mask)
        instances = dict(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.ones(len(labels)),
            labels=torch.tensor(labels, dtype=torch.int64),
            masks=torch.from_numpy(
                np.array(masks, bool).reshape(-1, *ids.shape)))
        samples.append(
            dict(
                img_id=im['id'],
                img_path=str(dataset / 'val' / im['file_name']),
                ori_shape=ids.shape,
                pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pan)[None]),
                pred_instances=instances))
    return samples


def test_mmdet_metrics_score_ground_truth_perfectly(dataset: Path):
    pytest.importorskip('mmcv')
    from mmdet.evaluation import CocoMetric, CocoPanopticMetric
    samples = _perfect_predictions(dataset)
    pq = CocoPanopticMetric(
        ann_file=str(dataset / 'annotations/panoptic_val.json'),
        seg_prefix=str(dataset / 'annotations/panoptic_val'),
        nproc=1)
    pq.dataset_meta = _metainfo()
    pq.process({}, samples)
    result = pq.evaluate(len(samples))
    assert result['coco_panoptic/PQ'] == pytest.approx(100.0)
    assert result['coco_panoptic/PQ_st'] == pytest.approx(100.0)
    ap = CocoMetric(
        ann_file=str(dataset / 'annotations/instances_val.json'),
        metric=['bbox', 'segm'])
    ap.dataset_meta = dict(classes=gen.THING_CLASSES)
    ap.process({}, samples)
    result = ap.evaluate(len(samples))
    assert result['coco/segm_mAP'] == pytest.approx(1.0)
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)
