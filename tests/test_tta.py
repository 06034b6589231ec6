"""Test-time augmentation (DR1MaskTTAModel): one view is the plain
prediction, a flipped view comes back in the original frame, views merge in
it, and the configs' `--tta` settings build and run."""
import copy
import functools
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from mmdet.registry import DATASETS, MODELS
from mmdet.structures.bbox import bbox_flip

from conftest import (CONFIGS, REPO, build_model, load_config, make_sample,
                      seeded_weights, small_model_cfg)
from projects.dr1mask import DR1MaskTTAModel
from test_generate_toy_panoptic import gen

# One config per test pipeline: the COCO instance and panoptic bases, their
# test-dev variants, Cityscapes and the two toy configs; the others inherit
# one of these.
PIPELINE_CONFIGS = [
    'dr1mask_r50_fpn_1x_coco.py', 'dr1mask_r50_fpn_ms-3x_coco_test-dev.py',
    'dr1mask_r50_fpn_1x_coco-panoptic.py',
    'dr1mask_r101_fpn_ms-3x_coco-panoptic_test-dev.py',
    'dr1mask_r50_fpn_cityscapes-panoptic.py',
    'dr1mask_r18_fpn_toy-panoptic.py', 'dr1mask_r18_fpn_toy.py'
]
MODELS_UNDER_TEST = {
    'panoptic': dict(panoptic=True, attention='vector'),
    'instance': dict(panoptic=False, attention='factored')
}
SPEC = dict(img_hw=(70, 90), boxes=[[4, 4, 40, 30], [20, 10, 60, 62]],
            labels=[0, 1])


@functools.lru_cache
def seeded_model(name):
    """The small seeded model, built once (it is only used for inference)."""
    cfg = small_model_cfg(**MODELS_UNDER_TEST[name])
    cfg.test_cfg.max_per_img = 20
    model = build_model(cfg).eval()
    seeded_weights(model)
    return model


def flipped(sample):
    """The sample's metainfo as RandomFlip(prob=1.) leaves it."""
    sample = sample.clone()
    sample.set_metainfo(dict(flip=True, flip_direction='horizontal'))
    return sample


def predict(model, image, sample):
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0]


def predict_tta(model, images, samples):
    """The TTA model's prediction from the views (``images``, ``samples``)
    of one image."""
    with torch.no_grad():
        return DR1MaskTTAModel(module=model).test_step(
            dict(inputs=[[image] for image in images],
                 data_samples=[[sample] for sample in samples]))[0]


@pytest.mark.parametrize('scale', [1.0, 0.5])
@pytest.mark.parametrize('name', list(MODELS_UNDER_TEST))
def test_one_view_is_the_plain_prediction(name, scale):
    model = seeded_model(name)
    image, sample = make_sample(**SPEC, scale=scale)

    plain = predict(model, image, sample.clone())
    merged = predict_tta(model, [image], [sample.clone()])

    for key in ('bboxes', 'scores', 'labels', 'masks'):
        assert torch.equal(merged.pred_instances[key],
                           plain.pred_instances[key]), key
    assert len(plain.pred_instances) > 0
    assert plain.pred_instances.masks.any()
    assert merged.metainfo == plain.metainfo
    if name == 'panoptic':
        ids = plain.pred_panoptic_seg.sem_seg
        assert torch.equal(merged.pred_panoptic_seg.sem_seg, ids)
        assert (ids >= 1000).any()  # things take part


@pytest.mark.parametrize('scale', [1.0, 0.5])
@pytest.mark.parametrize('name', list(MODELS_UNDER_TEST))
def test_a_flipped_view_comes_back_in_the_original_frame(name, scale):
    """The only view is the image flipped: the merge returns the plain
    prediction of the flipped image, flipped back (boxes, masks, ids)."""
    model = seeded_model(name)
    image, sample = make_sample(**SPEC, scale=scale)
    ori_shape = sample.ori_shape
    mirror = image.flip(-1)

    plain = predict(model, mirror, sample.clone())
    merged = predict_tta(model, [mirror], [flipped(sample)])

    expected = plain.pred_instances
    got = merged.pred_instances
    torch.testing.assert_close(
        got.bboxes, bbox_flip(expected.bboxes, ori_shape, 'horizontal'))
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.labels, expected.labels)
    assert expected.masks.any()
    # Pasting at the mirrored box samples the mirrored probabilities at the
    # mirrored points: equal up to rounding at the threshold.
    differ = (got.masks != expected.masks.flip(-1)).float().mean()
    assert differ < 1e-3
    if name == 'panoptic':
        assert torch.equal(merged.pred_panoptic_seg.sem_seg,
                           plain.pred_panoptic_seg.sem_seg.flip(-1))


def test_a_flip_it_cannot_undo_is_refused():
    model = seeded_model('instance')
    image, sample = make_sample(**SPEC)
    sample.set_metainfo(dict(flip=True, flip_direction='vertical'))
    with pytest.raises(ValueError, match="flip_direction='vertical'"):
        predict_tta(model, [image.flip(-2)], [sample])


def test_views_merge_by_box_in_the_original_frame():
    """Plain and flipped views: the kept detections are the best of both
    views' detections, mapped into the original frame, with no duplicate
    left (NMS at test_cfg.nms)."""
    model = seeded_model('panoptic')
    image, sample = make_sample(**SPEC)
    mirror = image.flip(-1)

    views = [
        predict(model, image, sample.clone()).pred_instances,
        predict(model, mirror, sample.clone()).pred_instances
    ]
    views[1].bboxes = bbox_flip(views[1].bboxes, (70, 90), 'horizontal')
    candidates = InstanceData.cat(views)
    merged = predict_tta(model, [image, mirror],
                         [sample.clone(), flipped(sample)]).pred_instances

    # every kept row is one of the candidates
    rows = torch.cat([merged.bboxes, merged.scores[:, None]], 1)
    pool = torch.cat([candidates.bboxes, candidates.scores[:, None]], 1)
    assert (distance(rows, pool).amin(1) < 1e-4).all()
    # both views contribute, and the best candidate is kept first
    from_mirror = distance(rows, pool[len(views[0]):]).amin(1) < 1e-4
    assert from_mirror.any() and (~from_mirror).any()
    assert merged.scores[0] == candidates.scores.max()
    assert (merged.scores[:-1] >= merged.scores[1:]).all()
    assert len(merged) < len(candidates)
    # no two kept boxes of one class overlap beyond the NMS threshold
    iou = box_iou(merged.bboxes)
    same_class = merged.labels[:, None] == merged.labels[None]
    assert not (iou.triu(1)[same_class.triu(1)] > 0.6).any()


def test_no_detection_in_any_view():
    """Nothing detected: no instance, and the panoptic map is stuff."""
    model = copy.deepcopy(seeded_model('panoptic'))
    model.bbox_head.test_cfg.score_thr = 1.1  # above every score
    image, sample = make_sample(**SPEC)

    merged = predict_tta(model, [image, image.flip(-1)],
                         [sample.clone(), flipped(sample)])

    assert len(merged.pred_instances) == 0
    assert merged.pred_instances.masks.shape == (0, 70, 90)
    assert (merged.pred_panoptic_seg.sem_seg < 1000).all()


def distance(rows, pool):
    """(n, m) the largest absolute difference of each pair of rows."""
    return (rows[:, None] - pool[None]).abs().amax(-1)


def box_iou(boxes):
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    return inter / (area[:, None] + area[None] - inter)


@pytest.mark.parametrize('name', list(MODELS_UNDER_TEST))
def test_an_embedding_from_a_flipped_view_reads_mirrored_crops(name):
    """A basis that mirrors with the image (width 4 * 11 + 1: location j is
    pixel 4 * j from either side) gives an embedding of the flipped view the
    same mask from both views: in the other view its crops are mirrored
    before its attention (position-sensitive when factored) blends them."""
    model = seeded_model(name)
    head = model.mask_head
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(head.basis_channels, 10, 12, generator=gen)
    boxes = torch.tensor([[5., 6., 30., 33.], [12., 3., 40., 20.]])
    meta = dict(img_shape=(40, 45), ori_shape=(40, 45),
                scale_factor=(1., 1.))
    meta_flipped = dict(meta, flip=True, flip_direction='horizontal')
    kept = InstanceData(
        bboxes=boxes,
        embeddings=torch.randn(2, head.embedding_channels, generator=gen),
        view=torch.tensor([1, 1]),
        view_flipped=torch.tensor([True, True]),
        view_bboxes=bbox_flip(boxes, (40, 45), 'horizontal'))
    tta = DR1MaskTTAModel(module=model)

    with torch.no_grad():
        in_plain_view = tta._mask_probs(basis, kept, 0, meta)
        in_own_view = tta._mask_probs(basis.flip(-1), kept, 1, meta_flipped)
        unmirrored = head(basis[None], torch.cat([torch.zeros(2, 1), boxes],
                                                 1), kept.embeddings).sigmoid()

    torch.testing.assert_close(in_plain_view, in_own_view, atol=1e-5,
                               rtol=1e-4)
    if head.attention == 'factored':
        # the test has teeth: the crops read unmirrored give other masks
        assert (unmirrored - in_own_view).abs().max() > 1e-2


@pytest.mark.parametrize('path', PIPELINE_CONFIGS)
def test_tta_pipeline_is_the_test_pipeline_with_views(path):
    """`--tta` reads `tta_model` and `tta_pipeline`: every config has both,
    the first view is the test pipeline's (the reference of the panoptic
    mask NMS), annotations load as in the test pipeline and the views say
    whether they are flipped."""
    cfg = load_config(path)
    assert cfg.tta_model.type == 'DR1MaskTTAModel'
    test = cfg.test_dataloader.dataset.pipeline
    load, tta = cfg.tta_pipeline
    assert load == test[0] and tta.type == 'TestTimeAug'
    resizes, flips, *loads, [pack] = tta.transforms
    assert resizes[0] == test[1] and test[1].type == 'Resize'
    assert len(resizes) > 1
    assert flips == [dict(type='RandomFlip', prob=0.),
                     dict(type='RandomFlip', prob=1.)]
    assert loads == [[step] for step in test[2:-1]]
    assert pack.meta_keys == test[-1].meta_keys + ('flip', 'flip_direction')


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    """A toy set of two 64-96 px images where the toy configs look for it."""
    root = tmp_path_factory.mktemp('tta')
    gen.generate_toy_panoptic(
        root / 'data' / 'toy_panoptic', num_train=1, num_val=2, min_size=64,
        max_size=96)
    return root


@pytest.mark.parametrize('name', ['dr1mask_r18_fpn_toy-panoptic.py',
                                  'dr1mask_r18_fpn_toy.py'])
def test_tta_config_transformation_runs(name, toy_root, monkeypatch):
    """mmdet's test.py with --tta: `cfg.model` wrapped in `cfg.tta_model`,
    the test pipeline replaced by `cfg.tta_pipeline`; a batch of the toy
    set goes through it."""
    monkeypatch.chdir(toy_root)
    cfg = load_config(name)
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    model = MODELS.build(cfg.model).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)

    batch = pseudo_collate([dataset[0], dataset[1]])
    assert len(batch['inputs']) == 4  # views
    with torch.no_grad():
        results = model.test_step(batch)

    for result, info in zip(results, dataset):
        shape = info['data_samples'][0].ori_shape
        assert result.pred_instances.masks.shape[1:] == shape
        assert 'basis' not in result
        if 'panoptic' in name:
            assert result.pred_panoptic_seg.sem_seg.shape[1:] == shape


@pytest.mark.slow
def test_test_py_with_tta_evaluates(toy_root, tmp_path):
    """tools/test.py CONFIG CKPT --tta, as users run it, scores the merged
    predictions: PQ, box and mask AP."""
    config = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
    model = build_model(load_config(config).model)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/test.py'), str(config),
         str(checkpoint), '--tta', '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', 'model.test_cfg.score_thr=0.0'],
        cwd=toy_root, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert 'coco_panoptic/PQ:' in output and 'coco/segm_mAP:' in output
    assert re.search(r'panoptic_semantic/mIoU: \d', output)


def test_the_separate_branch_baseline_is_refused_with_a_reason():
    from mmdet.registry import MODELS
    cfg = load_config(
        REPO / 'configs/baselines/separate-branch_r18_fpn_toy-panoptic.py')
    with pytest.raises(ValueError, match='test it without --tta'):
        MODELS.build(dict(cfg.tta_model, module=cfg.model))
