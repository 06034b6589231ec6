"""Cityscapes panoptic end to end on a generated Cityscapes tree: the
converter against the label images, its errors, the dataset and the
config's evaluators with a ground-truth oracle, and a model trained and
tested with the user's tools."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label, labels
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData, PixelData
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_utils

from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import DATASETS

from conftest import CONFIGS, REPO
from test_tools import run
from projects.dr1mask.datasets.cityscapes_panoptic import CityscapesPanopticDataset

CONFIG = CONFIGS / 'dr1mask_r50_fpn_cityscapes-panoptic.py'
# pycocotools 2.0.11's RLE decode trips a numpy 2 copy-keyword deprecation.
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')


def _load(path: Path, name: str):
    # tools/ is not a package: load the scripts by path.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generator = _load(REPO / 'tools/misc/generate_toy_cityscapes.py',
                  'generate_toy_cityscapes')
converter = _load(REPO / 'tools/dataset_converters/cityscapes_panoptic.py',
                  'cityscapes_panoptic_converter')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """data/cityscapes: 3 train and 2 val images, converted by the CLI."""
    root = tmp_path_factory.mktemp('workspace')
    run([
        sys.executable, str(REPO / 'tools/misc/generate_toy_cityscapes.py'),
        'data/cityscapes', '--num-train', '3', '--num-val', '2'
    ], cwd=root)
    run([
        sys.executable,
        str(REPO / 'tools/dataset_converters/cityscapes_panoptic.py'),
        'data/cityscapes', '--nproc', '2'
    ], cwd=root)
    return root


def _json(workspace, name):
    return json.loads(
        (workspace / 'data/cityscapes/annotations' / name).read_text())


def _gt_images(workspace, split, image):
    city, name = image['file_name'].split('/')
    stem = name[:-len('_leftImg8bit.png')]
    gt_dir = workspace / 'data/cityscapes/gtFine' / split / city
    return (np.asarray(Image.open(gt_dir / f'{stem}_gtFine_instanceIds.png'),
                       np.int64),
            np.asarray(Image.open(gt_dir / f'{stem}_gtFine_labelIds.png')))


def test_generated_tree_has_crowd_and_ignored_regions(tmp_path):
    stems = generator.generate_toy_cityscapes(tmp_path, 1, 1, seed=5)
    gt = tmp_path / 'gtFine/val/frankfurt' / stems['val'][0]
    instance_ids = np.asarray(
        Image.open(f'{gt}_gtFine_instanceIds.png'), np.int64)
    label_ids = np.asarray(Image.open(f'{gt}_gtFine_labelIds.png'))
    assert instance_ids.shape == label_ids.shape == (128, 256)
    assert (np.where(instance_ids >= 1000, instance_ids // 1000,
                     instance_ids) == label_ids).all()
    values = set(np.unique(instance_ids).tolist())
    things = {lb.id for lb in labels if lb.hasInstances}
    assert values & things, 'no crowd region'
    assert 29000 in values, 'no ignored (caravan) instance'
    assert {1, 4} <= values, 'no ignored stuff (ego vehicle, static)'
    # The same seed writes the same files.
    again = generator.generate_toy_cityscapes(tmp_path / 'again', 1, 1, seed=5)
    assert again == stems
    written = [*(tmp_path / 'leftImg8bit').rglob('*.png'),
               *(tmp_path / 'gtFine').rglob('*.png')]
    assert len(written) == 6
    for path in written:
        twin = tmp_path / 'again' / path.relative_to(tmp_path)
        assert path.read_bytes() == twin.read_bytes()


def test_conversion_matches_the_label_images(workspace):
    """Every non-ignored instanceIds value is one segment of its Cityscapes
    label id (crowd: a thing class without an instance id), every ignored
    label is void, and the instances json holds exactly the thing
    segments' pixels."""
    first_id = 1
    for split in ('train', 'val'):
        pan = _json(workspace, f'cityscapes_panoptic_{split}.json')
        inst = _json(workspace, f'cityscapes_instances_{split}.json')
        cats = pan['categories']
        assert [c['name'] for c in cats] == list(
            CityscapesPanopticDataset.METAINFO['classes'])
        assert [c['isthing'] for c in cats] == [1] * 8 + [0] * 11
        assert inst['categories'] == cats[:8]
        ids = [image['id'] for image in pan['images']]
        assert ids == list(range(first_id, first_id + len(ids)))
        first_id += len(ids)
        by_image = {a['image_id']: a for a in pan['annotations']}
        masks = {}
        for a in inst['annotations']:
            masks.setdefault(a['image_id'], []).append(a)
        for image in pan['images']:
            assert (workspace / 'data/cityscapes/leftImg8bit' / split /
                    image['file_name']).is_file()
            instance_ids, _ = _gt_images(workspace, split, image)
            annotation = by_image[image['id']]
            assert annotation['file_name'] == image['file_name'].split('/')[1]
            png = rgb2id(
                np.asarray(
                    Image.open(workspace / 'data/cityscapes/annotations' /
                               f'cityscapes_panoptic_{split}' /
                               annotation['file_name']).convert('RGB')))
            label_of = np.where(instance_ids >= 1000, instance_ids // 1000,
                                instance_ids)
            ignored = np.vectorize(lambda i: id2label[i].ignoreInEval)(
                label_of)
            assert (png[ignored] == 0).all()
            assert (png[~ignored] == instance_ids[~ignored]).all()
            segments = {s['id']: s for s in annotation['segments_info']}
            assert set(segments) == set(np.unique(instance_ids[~ignored]))
            for seg_id, s in segments.items():
                label = id2label[seg_id // 1000 if seg_id >= 1000 else seg_id]
                ys, xs = np.nonzero(png == seg_id)
                assert s['category_id'] == label.id
                assert s['iscrowd'] == int(label.hasInstances
                                           and seg_id < 1000)
                assert s['area'] == len(ys)
                assert s['bbox'] == [
                    xs.min(), ys.min(),
                    xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1
                ]
            things = [s for s in segments.values() if s['category_id'] >= 24]
            assert any(s['iscrowd'] for s in things)
            assert len(masks[image['id']]) == len(things)
            for a in masks[image['id']]:
                rle = dict(a['segmentation'], counts=a['segmentation']
                           ['counts'].encode())
                decoded = mask_utils.decode(rle).astype(bool)
                seg_id = next(s['id'] for s in things
                              if s['bbox'] == a['bbox']
                              and s['category_id'] == a['category_id'])
                assert (decoded == (png == seg_id)).all()
                assert a['iscrowd'] == segments[seg_id]['iscrowd']


def test_groups_and_processes_do_not_change_the_output(workspace, tmp_path,
                                                       monkeypatch):
    """One image per convert2panoptic call, 2 processes: the same files as
    the fixture's one call."""
    monkeypatch.setattr(converter, 'GROUP_SIZE', 1)
    converter.convert(
        str(workspace / 'data/cityscapes'), str(tmp_path), nproc=2)
    ours = workspace / 'data/cityscapes/annotations'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in ours.iterdir())
    for path in tmp_path.rglob('*'):
        if path.is_file():
            assert path.read_bytes() == (
                ours / path.relative_to(tmp_path)).read_bytes(), path


def _broken_copy(workspace, tmp_path):
    root = tmp_path / 'cityscapes'
    for folder in ('gtFine', 'leftImg8bit'):
        shutil.copytree(workspace / 'data/cityscapes' / folder, root / folder)
    gt = sorted((root / 'gtFine/val').rglob('*_labelIds.png'))[0]
    return root, gt


def test_disagreeing_label_images_stop_before_writing(workspace, tmp_path):
    root, label_png = _broken_copy(workspace, tmp_path)
    label_ids = np.asarray(Image.open(label_png)).copy()
    label_ids[3, 5] = 7 if label_ids[3, 5] != 7 else 8
    Image.fromarray(label_ids).save(label_png)
    with pytest.raises(ValueError, match=r'instanceIds.*1 pixels disagree.*'
                       r'labelIds.*\(y=3, x=5\)'):
        converter.convert(str(root), nproc=1)
    assert not (root / 'annotations').exists()


def test_unknown_label_id_and_missing_image_are_named(workspace, tmp_path):
    root, label_png = _broken_copy(workspace, tmp_path)
    instance_png = Path(str(label_png).replace('labelIds', 'instanceIds'))
    instance_ids = np.asarray(Image.open(instance_png), np.int64).copy()
    instance_ids[0, 0] = 40001
    Image.fromarray(instance_ids.astype(np.uint16)).save(instance_png)
    with pytest.raises(ValueError, match='instance id 40001, whose label id '
                       '40 is not a Cityscapes label id'):
        converter.convert(str(root), nproc=1)
    image = sorted((root / 'leftImg8bit/train').rglob('*.png'))[0]
    image.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(image))):
        converter.convert(str(root), nproc=1)


def _oracle_sample(data_sample, num_classes):
    """The ground truth as a prediction: the panoptic map (crowd regions
    as their class, void as void) and the non-crowd instances, score 1."""
    sem_seg = data_sample.gt_sem_seg.sem_seg[0].long()
    pan = torch.where(sem_seg == 255, num_classes, sem_seg)
    masks = data_sample.gt_instances.masks.to_tensor(torch.bool, 'cpu')
    for k, mask in enumerate(masks):
        pan[mask] += (k + 1) * INSTANCE_OFFSET
    data_sample.pred_panoptic_seg = PixelData(sem_seg=pan[None])
    data_sample.pred_instances = InstanceData(
        bboxes=data_sample.gt_instances.bboxes.tensor,
        labels=data_sample.gt_instances.labels,
        scores=torch.ones(len(masks)),
        masks=masks)
    return data_sample


def test_ground_truth_oracle_scores_100_on_every_metric(workspace,
                                                        monkeypatch):
    """Through the config's dataset, test pipeline and evaluators: PQ,
    mask AP and mIoU are all perfect."""
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(str(CONFIG))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(dataset) == 2
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    num_classes = len(dataset.metainfo['classes'])
    for index in range(len(dataset)):
        data_sample = dataset[index]['data_samples']
        assert data_sample.gt_sem_seg.sem_seg.shape[-2:] == (128, 256)
        evaluator.process([_oracle_sample(data_sample, num_classes)])
    results = evaluator.evaluate(len(dataset))
    for key in ('PQ', 'PQ_th', 'PQ_st'):
        assert results[f'coco_panoptic/{key}'] == 100.0
    assert results['coco/segm_mAP'] == 1.0
    assert results['coco/bbox_mAP'] == 1.0
    for key in ('mIoU', 'mIoU_th', 'mIoU_st'):
        assert results[f'panoptic_semantic/{key}'] == 100.0


def test_dataset_refuses_categories_in_cityscapesscripts_order(
        workspace, tmp_path):
    pan = _json(workspace, 'cityscapes_panoptic_val.json')
    pan['categories'] = pan['categories'][8:] + pan['categories'][:8]
    ann_file = tmp_path / 'stuff_first.json'
    ann_file.write_text(json.dumps(pan))
    with pytest.raises(ValueError, match='things first'):
        CityscapesPanopticDataset(
            ann_file=str(ann_file), data_prefix=dict(img='', seg=''),
            pipeline=[], test_mode=True)


# The Cityscapes config with a tiny model (ResNet-18, thin heads) and
# image sizes for 128 x 256 images.
TINY = """
_base_ = '{config}'
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=1),
    basis=dict(in_channels=64, channels=16),
    semantic_head=dict(in_channels=64, feat_channels=32),
    test_cfg=dict(score_thr=0.0))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadPanopticAnnotations'),
        dict(type='RandomChoiceResize', scales=[(512, 96), (512, 128)],
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(64, 128), crop_type='absolute',
             recompute_bbox=True, allow_negative_crop=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(256, 128), keep_ratio=True),
        dict(type='LoadPanopticAnnotations'),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_begin=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""


@pytest.mark.slow
def test_train_and_test_report_pq_mask_ap_and_miou(workspace):
    config = workspace / 'tiny_cityscapes.py'
    config.write_text(TINY.format(config=CONFIG))
    work_dir = workspace / 'work_dirs' / 'cityscapes'
    run([
        sys.executable, str(REPO / 'tools/train.py'), str(config),
        '--work-dir', str(work_dir)
    ], cwd=workspace)
    output = run([
        sys.executable, str(REPO / 'tools/test.py'), str(config),
        str(work_dir / 'iter_2.pth'), '--work-dir', str(work_dir)
    ], cwd=workspace)
    assert re.search(r'\|\s*All\s*\|', output), 'no PQ table'
    for key in ('coco_panoptic/PQ:', 'coco_panoptic/PQ_th:',
                'coco_panoptic/PQ_st:', 'coco/segm_mAP:',
                'panoptic_semantic/mIoU:'):
        assert key in output, key
    assert 'Per-class IoU of the panoptic map' in output
    assert 'traffic light' in output


def test_converted_set_passes_the_dataset_checker(workspace):
    data = workspace / 'data' / 'cityscapes'
    result = subprocess.run([
        sys.executable,
        str(REPO / 'tools/misc/check_panoptic_dataset.py'),
        str(data / 'annotations/cityscapes_panoptic_val.json'),
        str(data / 'annotations/cityscapes_panoptic_val'),
        str(data / 'leftImg8bit/val'), '--config', str(CONFIG)
    ], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '0 problem(s)' in result.stderr
