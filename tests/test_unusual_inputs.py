"""Unusual but valid input: image formats and sizes through the model and
demo/image_demo.py, images without things, without stuff or with only
crowd through training and tools/test.py. Outputs have the size of the
image as decoded."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.structures import DetDataSample

from conftest import (CONFIGS, NUM_STUFF, NUM_THINGS, REPO, build_model,
                      load_config, make_sample, preprocess, small_model_cfg)

CONFIG = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'


def tiny_model() -> torch.nn.Module:
    """The small test model with an 8-channel ResNet-18 and at most 10
    detections: one forward of a 4000 x 3000 image takes seconds, not
    minutes, on one CPU thread."""
    cfg = small_model_cfg()
    cfg.test_cfg.max_per_img = 10
    cfg.backbone.base_channels = 8
    cfg.neck.in_channels = [8, 16, 32, 64]
    return build_model(cfg).eval()


@pytest.mark.parametrize('height,width', [(1, 1), (5, 7), (20, 3000),
                                          (3000, 20), (4000, 3000)])
def test_predict_at_any_size_returns_the_original_size(height, width):
    """Smaller than the largest stride (128) down to 1 x 1, extreme aspect
    ratios, 12 megapixels: every detection's mask and the panoptic map
    cover exactly the image. Below 5 px no FCOS location (the first sits at
    half the stride, 4 px) lies in the image: no detection, and the map is
    all stuff."""
    model = tiny_model()
    image = torch.randint(0, 255, (3, height, width), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(
        img_shape=(height, width), ori_shape=(height, width),
        scale_factor=(1.0, 1.0), img_id=0))
    data = preprocess(model, [image], [sample], training=False)
    with torch.no_grad():
        result, = model.predict(data['inputs'], data['data_samples'])
    masks = result.pred_instances.masks
    assert masks.shape[1:] == (height, width)
    # score_thr 0: from 5 px up, masks are really pasted
    assert (len(masks) > 0) == (min(height, width) >= 5)
    panoptic = result.pred_panoptic_seg.sem_seg
    assert panoptic.shape == (1, height, width)
    labels = panoptic % INSTANCE_OFFSET
    assert (labels <= NUM_THINGS + NUM_STUFF).all()  # the last is void
    assert (labels < NUM_THINGS + NUM_STUFF).any()


def test_a_training_step_on_a_batch_where_one_image_has_no_instance():
    model = build_model(small_model_cfg())
    images, samples = zip(
        make_sample((64, 76), [[8, 8, 40, 48]], [1]),
        make_sample((60, 72), [], [], stuff_label=NUM_THINGS + 1))
    data = preprocess(model, list(images), list(samples), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    for name, value in losses.items():
        assert torch.isfinite(value), name
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before,
                                                      model.parameters())]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(changed) > len(changed) // 2


def keep_only(data: Path, split: str, image_index: int, keep) -> None:
    """Void every segment of one image that ``keep(segment, isthing)``
    rejects: in the PNG, the panoptic json and the instances json."""
    pan_file = data / f'annotations/panoptic_{split}.json'
    inst_file = data / f'annotations/instances_{split}.json'
    pan, inst = json.loads(pan_file.read_text()), json.loads(
        inst_file.read_text())
    isthing = {c['id']: c['isthing'] for c in pan['categories']}
    ann = pan['annotations'][image_index]
    png = data / f'annotations/panoptic_{split}' / ann['file_name']
    rgb = np.asarray(Image.open(png)).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    dropped = [s for s in ann['segments_info']
               if not keep(s, isthing[s['category_id']])]
    assert dropped, 'the image must change'
    ids[np.isin(ids, [s['id'] for s in dropped])] = 0
    Image.fromarray(
        np.stack([ids % 256, ids // 256 % 256, ids // 256**2],
                 -1).astype(np.uint8)).save(png)
    ann['segments_info'] = [s for s in ann['segments_info']
                            if s not in dropped]
    gone = {(s['category_id'], tuple(s['bbox'])) for s in dropped}
    inst['annotations'] = [
        a for a in inst['annotations']
        if a['image_id'] != ann['image_id']
        or (a['category_id'], tuple(a['bbox'])) not in gone
    ]
    pan_file.write_text(json.dumps(pan))
    inst_file.write_text(json.dumps(inst))


NO_THING = lambda s, thing: not thing  # noqa: E731
NO_STUFF = lambda s, thing: thing  # noqa: E731
ONLY_CROWD = lambda s, thing: s['iscrowd']  # noqa: E731


@pytest.fixture(scope='module')
def unusual_set(tmp_path_factory) -> Path:
    """A toy set whose images have, in both splits: no thing, no stuff, only
    crowd, and everything (every image has a crowd segment)."""
    root = tmp_path_factory.mktemp('unusual')
    subprocess.run([
        sys.executable, str(REPO / 'tools/misc/generate_toy_panoptic.py'),
        'data/toy_panoptic', '--num-train', '4', '--num-val', '4',
        '--min-size', '48', '--max-size', '64', '--crowd-prob', '1'
    ], cwd=root, check=True, capture_output=True)
    data = root / 'data/toy_panoptic'
    for split in ('train', 'val'):
        for index, keep in enumerate((NO_THING, NO_STUFF, ONLY_CROWD)):
            keep_only(data, split, index, keep)
    return root


def test_unusual_set_passes_the_dataset_check(unusual_set):
    from projects.dr1mask.datasets.dataset_check import check_dataset_config
    cfg = load_config(CONFIG.name)
    data_root = str(unusual_set / 'data/toy_panoptic')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
        assert check_dataset_config(loader.dataset, cfg.model) == []


@pytest.mark.slow
def test_train_and_test_on_images_without_things_stuff_or_only_crowd(
        unusual_set):
    """Training keeps the images without instances (filter_empty_gt off)
    and reads them in order, so both batches of 2 put an image without
    instance (no thing; only crowd) next to one with; every step's loss is
    finite; tools/test.py evaluates PQ and mask AP on the same kinds of
    images."""
    work_dir = unusual_set / 'work_dir'
    train = subprocess.run([
        sys.executable, str(REPO / 'tools/train.py'), str(CONFIG),
        '--work-dir', str(work_dir), '--cfg-options',
        'train_cfg.max_iters=3', 'train_dataloader.batch_size=2',
        'train_dataloader.dataset.filter_cfg.filter_empty_gt=False',
        'train_dataloader.sampler.shuffle=False',
        'default_hooks.logger.interval=1', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=3'
    ], cwd=unusual_set, capture_output=True, text=True)
    output = train.stdout + train.stderr
    assert train.returncode == 0, output[-5000:]
    assert 'Iter(train) [3/3]' in output
    assert 'loss: nan' not in output and 'loss: inf' not in output

    test = subprocess.run([
        sys.executable, str(REPO / 'tools/test.py'), str(CONFIG),
        str(work_dir / 'iter_3.pth'), '--work-dir',
        str(unusual_set / 'test'), '--cfg-options',
        'model.test_cfg.score_thr=0.0'
    ], cwd=unusual_set, capture_output=True, text=True)
    output = test.stdout + test.stderr
    assert test.returncode == 0, output[-5000:]
    assert 'coco_panoptic/PQ:' in output and 'coco/segm_mAP:' in output
