"""A checkpoint trained here carries its class names: mmdet's DetInferencer
runs on it as a new user would, and training keeps the best checkpoint and
draws panoptic predictions during validation."""
import json
import sys

import mmcv
import numpy as np
import pytest
from panopticapi.utils import rgb2id

from mmdet.apis import DetInferencer
from mmdet.evaluation.functional import INSTANCE_OFFSET

from conftest import CONFIGS, REPO
from test_tools import run, workspace  # noqa: F401  (module fixture)

PANOPTIC = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
INSTANCE = CONFIGS / 'dr1mask_r18_fpn_toy.py'
THINGS = ('disk', 'square', 'triangle', 'ring')
STUFF = ('sky', 'grass', 'brick')


@pytest.fixture(scope='module')
def trained(workspace):  # noqa: F811
    """Both toy configs trained for 2 iterations of batch 2 and validated
    once, DetVisualizationHook drawing every validation batch."""
    # Only the panoptic drawing: no instance scores above 1.1, every stuff
    # segment kept however small.
    draw = [
        'default_hooks.visualization.draw=True',
        'default_hooks.visualization.interval=1',
        'default_hooks.visualization.score_thr=1.1'
    ]
    extra = {PANOPTIC: ['model.test_cfg.panoptic.stuff_area_limit=0'], INSTANCE: []}
    work_dirs = {}
    for config in (PANOPTIC, INSTANCE):
        work_dir = workspace / 'work_dirs' / config.stem
        run([
            sys.executable, str(REPO / 'tools/train.py'), str(config),
            '--work-dir', str(work_dir), '--cfg-options',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'train_dataloader.batch_size=2',
            'default_hooks.checkpoint.interval=2',
            # CocoMetric reports nothing (no mAP to keep the best by) when
            # the barely trained model detects nothing.
            'model.test_cfg.score_thr=0.0', *draw, *extra[config]
        ], cwd=workspace)
        work_dirs[config] = work_dir
    return work_dirs


def infer(config, work_dir, image, out_dir):
    inferencer = DetInferencer(
        model=str(config), weights=str(work_dir / 'iter_2.pth'),
        device='cpu')
    inferencer(str(image), out_dir=str(out_dir), no_save_pred=False)
    return inferencer


def test_inferencer_on_a_panoptic_checkpoint(trained, workspace, tmp_path):
    image = sorted((workspace / 'data/toy_panoptic/val').glob('*.jpg'))[0]
    inferencer = infer(PANOPTIC, trained[PANOPTIC], image, tmp_path)

    meta = inferencer.model.dataset_meta
    assert tuple(meta['classes']) == THINGS + STUFF
    assert tuple(meta['thing_classes']) == THINGS
    assert tuple(meta['stuff_classes']) == STUFF
    assert inferencer.visualizer.dataset_meta['classes'] == meta['classes']

    name = image.stem
    assert (tmp_path / 'vis' / image.name).is_file()
    pred = json.loads((tmp_path / 'preds' / f'{name}.json').read_text())
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
    png = mmcv.imread(pred['panoptic_seg_path'], channel_order='rgb')
    h, w = mmcv.imread(str(image)).shape[:2]
    assert png.shape == (h, w, 3)
    # Void (label len(classes)) is written as panopticapi's 0, which needs
    # the checkpoint's 7 classes, not COCO's 133.
    ids = rgb2id(png)
    labels = ids[ids != 0] % INSTANCE_OFFSET
    assert labels.size and labels.max() < len(THINGS + STUFF)


def test_inferencer_on_an_instance_checkpoint(trained, workspace, tmp_path):
    image = sorted((workspace / 'data/toy_panoptic/val').glob('*.jpg'))[0]
    inferencer = infer(INSTANCE, trained[INSTANCE], image, tmp_path)

    assert tuple(inferencer.model.dataset_meta['classes']) == THINGS
    assert (tmp_path / 'vis' / image.name).is_file()
    pred = json.loads((tmp_path / 'preds' / f'{image.stem}.json').read_text())
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
    assert 'panoptic_seg_path' not in pred
    assert not list((tmp_path / 'preds').glob('*_panoptic_seg.png'))


def test_best_checkpoint_by_the_reported_metric(trained):
    assert (trained[PANOPTIC] / 'best_coco_panoptic_PQ_iter_2.pth').is_file()
    assert (trained[INSTANCE] / 'best_coco_segm_mAP_iter_2.pth').is_file()


def test_validation_draws_panoptic_predictions(trained, workspace):
    drawings = sorted(trained[PANOPTIC].glob('*/vis_data/vis_image/*.png'))
    # One drawing per validation batch: the 3 validation images.
    assert len(drawings) == 3
    val = json.loads(
        (workspace / 'data/toy_panoptic/annotations/panoptic_val.json'
         ).read_text())
    first = workspace / 'data/toy_panoptic/val' / val['images'][0][
        'file_name']
    image = mmcv.imread(str(first), channel_order='rgb').astype(np.int64)
    h, w = image.shape[:2]
    drawn = mmcv.imread(str(drawings[0]), channel_order='rgb')
    assert drawn.shape == (h, 2 * w, 3)  # ground truth | prediction
    # No instance is drawn (score_thr 1.1): what covers the prediction side
    # is the panoptic segmentation, stuff included.
    prediction = drawn[:, w:].astype(np.int64)
    assert np.abs(prediction - image).mean() > 10
