"""Every config under configs/ builds and runs a forward: none can rot."""
import pytest
import torch

from conftest import CONFIGS, build_model, load_config, make_sample, preprocess

# Every config folder: configs/dr1mask and configs/baselines (not _base_).
CONFIG_PATHS = sorted(CONFIGS.parent.glob('*/*.py'))
CONFIG_NAMES = [p.name for p in CONFIG_PATHS]


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
    assert cfg.custom_imports.imports == ['projects.dr1mask']
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
