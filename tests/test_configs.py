"""Every config under configs/ builds and runs a forward, and builds the
model its name says: none can rot or drift from its name."""
import re

import pytest
import torch

from conftest import CONFIGS, build_model, load_config, make_sample, preprocess

# Every config folder: configs/dr1mask and configs/baselines (not _base_).
# A test-dev config is its model's config with other test data: its model
# is built as that config's.
TEST_DEV_PATHS = sorted(CONFIGS.glob('*_test-dev.py'))
CONFIG_PATHS = sorted(set(CONFIGS.parent.glob('*/*.py')) - set(TEST_DEV_PATHS))
CONFIG_NAMES = [p.name for p in CONFIG_PATHS]
DR1MASK_PATHS = sorted(CONFIGS.glob('*.py'))


def test_the_paper_configs_exist():
    for name in [
            'dr1mask_r50_fpn_1x_coco.py', 'dr1mask_r50_fpn_ms-3x_coco.py',
            'dr1mask_r101_fpn_ms-3x_coco.py',
            'dr1mask_r101-dcn_fpn_ms-3x_coco.py',
            'dr1mask_r50_fpn_1x_coco-panoptic.py',
            'dr1mask_r50_fpn_ms-3x_coco-panoptic.py',
            'dr1mask_r101_fpn_ms-3x_coco-panoptic.py',
            'dr1mask_r101-dcn_fpn_ms-3x_coco-panoptic.py'
    ]:
        assert name in CONFIG_NAMES


@pytest.mark.parametrize('path', CONFIG_PATHS, ids=CONFIG_NAMES)
def test_config_builds_and_predicts(path):
    cfg = load_config(path)
    model = build_model(cfg.model).eval()
    image, sample = make_sample((60, 84), [[8, 8, 40, 40]], [0])
    data = preprocess(model, [image], [sample], training=False)
    with torch.no_grad():
        result = model.predict(data['inputs'], data['data_samples'])[0]
    assert 'pred_instances' in result or 'pred_panoptic_seg' in result
    if 'pred_instances' in result:
        assert tuple(result.pred_instances.masks.shape[-2:]) == (60, 84)
    if 'pred_panoptic_seg' in result:
        assert tuple(result.pred_panoptic_seg.sem_seg.shape) == (1, 60, 84)


def claimed(name: str) -> dict:
    """What a DR1Mask config's name says about its model."""
    name = name.replace('_test-dev', '')
    panoptic = name.endswith('-panoptic.py')
    factors = re.search(r'_(no-ab|a-only|b-only)_', name)
    width = re.search(r'_basis-(\d+)_', name)
    pad = re.search(r'_pad-(\d+)_', name)
    attention = re.search(r'_attn-(vector|full|factored)_', name)
    context = re.search(r'_context-(fpn|cls-tower)_', name)
    stuff_lr = re.search(r'_stuff-lr(\d+)_', name)
    # 64 for panoptic results (Table 6) and the COCO heads on toy images,
    # 32 for instances, the toy model and every ablation (1x panoptic runs:
    # Tables 2, 5, 7)
    default_width = 64 if panoptic and (
        '_ms-3x_' in name or 'cityscapes' in name
        or '_coco-heads_' in name) else 32
    return dict(
        panoptic=panoptic,
        # the panoptic layer needs vector embeddings (Table 7)
        attention=attention.group(1) if attention else
        ('vector' if panoptic else 'factored'),
        use_a=not factors or factors.group(1) == 'a-only',
        use_b=not factors or factors.group(1) == 'b-only',
        channels=int(width.group(1)) if width else default_width,
        pad_size_divisor=int(pad.group(1)) if pad else 4,
        # Table 5: padding to 32 or 128 goes with plain upsampling
        aligned=not pad,
        context_source=context.group(1).replace('-', '_')
        if context else 'box_tower',
        # the stuff columns' learning rate multiplier
        stuff_lr_mult=float(stuff_lr.group(1)) if stuff_lr else 1.0)


@pytest.mark.parametrize('path', DR1MASK_PATHS,
                         ids=[p.name for p in DR1MASK_PATHS])
def test_config_builds_the_model_its_name_claims(path):
    cfg = load_config(path)
    assert cfg.custom_imports.imports == [
        'projects.dr1mask', 'projects.dr1mask.engine.safe_checkpoints'
    ]
    model = cfg.model
    claims = claimed(path.name)
    assert ('panoptic_head' in model
            and model.panoptic_head is not None) == claims['panoptic']
    assert model.mask_head.attention == claims['attention']
    assert model.basis.get('use_a', True) == claims['use_a']
    assert model.basis.get('use_b', True) == claims['use_b']
    assert model.basis.channels == claims['channels']
    assert model.data_preprocessor.pad_size_divisor \
        == claims['pad_size_divisor']
    assert model.basis.get('aligned', True) == claims['aligned']
    assert model.bbox_head.get('context_source', 'box_tower') \
        == claims['context_source']
    custom_keys = cfg.optim_wrapper.get('paramwise_cfg',
                                        {}).get('custom_keys', {})
    assert custom_keys.get('panoptic_head', {}).get('lr_mult', 1.0) \
        == claims['stuff_lr_mult']
    backbone = re.match(r'dr1mask_([A-Za-z0-9.-]+?)(-dcn)?_fpn', path.name)
    depth = re.fullmatch(r'r(\d+)', backbone.group(1))
    if depth:
        assert model.backbone.type == 'ResNet'
        assert model.backbone.depth == int(depth.group(1))
    assert ('dcn' in model.backbone) == bool(backbone.group(2))


@pytest.mark.parametrize('path', TEST_DEV_PATHS,
                         ids=[p.name for p in TEST_DEV_PATHS])
def test_test_dev_configs_write_the_submission_of_their_model(path):
    """Tables 8 and 9: the model of the config named without `_test-dev`,
    tested on test2017 with the metric writing the submission files."""
    cfg = load_config(path)
    model_config = load_config(path.name.replace('_test-dev', ''))
    assert cfg.model == model_config.model
    dataset = cfg.test_dataloader.dataset
    assert dataset.ann_file.endswith('image_info_test-dev2017.json')
    assert dataset.data_prefix == dict(img='test2017/')
    assert dataset.test_mode
    if 'panoptic' in path.name:
        # test-dev has no panoptic PNGs to load
        assert not [step for step in dataset.pipeline
                    if 'Annotations' in step.type]
    evaluator = cfg.test_evaluator
    assert evaluator.format_only and evaluator.outfile_prefix
    assert evaluator.ann_file.endswith('image_info_test-dev2017.json')
    assert evaluator.type == ('CocoPanopticMetric' if 'panoptic' in path.name
                              else 'CocoMetric')


def test_stuff_lr_configs_speed_up_the_stuff_columns_alone():
    """The optimizer mmengine builds from a `_stuff-lr10_` config gives the
    stuff columns 10 x the learning rate and every other parameter the
    base one."""
    from mmengine.optim import build_optim_wrapper
    cfg = load_config('dr1mask_r18_fpn_stuff-lr10_coco-heads_toy-panoptic.py')
    model = build_model(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    base = cfg.optim_wrapper.optimizer.lr
    fast = set()
    for group in optimizer.param_groups:
        for param in group['params']:
            if group['lr'] != base:
                assert group['lr'] == pytest.approx(10 * base)
                fast.add(names[id(param)])
    assert fast == {'panoptic_head.stuff_conv.weight',
                    'panoptic_head.stuff_conv.bias'}
