"""The COCO-heads memorisation check: the toy images relabelled into COCO's
classes, and the two configs that are the COCO panoptic models with only
the backbone and data changed."""
import json
from pathlib import Path

import mmdet
import pytest
from mmengine.config import Config

from conftest import CONFIGS, REPO
from test_tools import generate_toy

from mmdet.datasets import CocoPanopticDataset
from projects.dr1mask.datasets.dataset_check import check_panoptic_annotations

MMDET_CONFIGS = Path(mmdet.__file__).parent / '.mim' / 'configs'
RELABEL = REPO / 'tools' / 'misc' / 'relabel_toy_coco_classes.py'


@pytest.fixture
def relabel(monkeypatch):
    monkeypatch.syspath_prepend(str(RELABEL.parent))
    import relabel_toy_coco_classes
    return relabel_toy_coco_classes


def test_relabelled_jsons_keep_every_segment_under_its_coco_class(
        tmp_path, relabel):
    generate_toy(tmp_path, num_train=5, num_val=1)
    toy = tmp_path / 'data' / 'toy_panoptic'
    paths = relabel.relabel(str(toy), str(toy / 'coco_heads'), 3)
    panoptic = json.loads(open(paths['panoptic']).read())
    instances = json.loads(open(paths['instances']).read())
    classes = CocoPanopticDataset.METAINFO['classes']
    # mmdet's dataset would build from it: COCO's 133 categories in order
    assert check_panoptic_annotations(paths['panoptic'], classes) == []
    assert [c['name'] for c in panoptic['categories']] == list(classes)
    assert [c['name'] for c in instances['categories']] == list(
        CocoPanopticDataset.METAINFO['thing_classes'])
    toy_panoptic = json.loads(
        (toy / 'annotations' / 'panoptic_train.json').read_text())
    toy_name = {c['id']: c['name'] for c in toy_panoptic['categories']}
    name = {c['id']: c['name'] for c in panoptic['categories']}
    assert [i['id'] for i in panoptic['images']] == [1, 2, 3]
    for old, new in zip(toy_panoptic['annotations'][:3],
                        panoptic['annotations']):
        # the same segments of the same PNG, only their category renamed
        assert new['file_name'] == old['file_name']
        assert [s['id'] for s in new['segments_info']] == \
            [s['id'] for s in old['segments_info']]
        for s_old, s_new in zip(old['segments_info'], new['segments_info']):
            assert name[s_new['category_id']] == \
                relabel.TOY_TO_COCO[toy_name[s_old['category_id']]]
    toy_instances = json.loads(
        (toy / 'annotations' / 'instances_train.json').read_text())
    assert len(instances['annotations']) == sum(
        a['image_id'] <= 3 for a in toy_instances['annotations'])


def test_relabel_names_the_file_when_it_is_not_a_toy_set(tmp_path, relabel):
    generate_toy(tmp_path, num_train=2, num_val=1)
    toy = tmp_path / 'data' / 'toy_panoptic'
    with pytest.raises(ValueError, match='has 2 images, fewer than 3'):
        relabel.relabel(str(toy), str(tmp_path / 'out'), 3)
    ann = toy / 'annotations' / 'panoptic_train.json'
    data = json.loads(ann.read_text())
    data['categories'][0]['name'] = 'person'
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError,
                       match=r"panoptic_train.json: category 'person'"):
        relabel.relabel(str(toy), str(tmp_path / 'out'), 1)


def _without_backbone(model: dict) -> dict:
    """The model config but its backbone and the FPN's input widths, the
    parts the memorisation configs swap for ResNet-18 from scratch."""
    model = Config(dict(model=model)).model.to_dict()
    model.pop('backbone')
    model['neck'].pop('in_channels')
    # the registry scope that a base config from another package adds
    model.pop('_scope_', None)
    return model


def test_dr1mask_coco_heads_config_is_the_coco_panoptic_model():
    cfg = Config.fromfile(
        str(CONFIGS / 'dr1mask_r18_fpn_coco-heads_toy-panoptic.py'))
    coco = Config.fromfile(
        str(CONFIGS / 'dr1mask_r50_fpn_ms-3x_coco-panoptic.py'))
    assert _without_backbone(cfg.model) == _without_backbone(coco.model)
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.init_cfg is None


def test_panoptic_fpn_coco_heads_config_is_mmdets_coco_model():
    cfg = Config.fromfile(str(
        REPO / 'configs/baselines/panoptic-fpn_r18_fpn_coco-heads_toy-panoptic.py'))
    mmdet = Config.fromfile(
        str(MMDET_CONFIGS / 'panoptic_fpn/panoptic-fpn_r50_fpn_ms-3x_coco.py'))
    assert _without_backbone(cfg.model) == _without_backbone(mmdet.model)
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.init_cfg is None
    # the same data, optimizer and schedule as DR1Mask's
    dr1mask = Config.fromfile(
        str(CONFIGS / 'dr1mask_r18_fpn_coco-heads_toy-panoptic.py'))
    for key in ('train_dataloader', 'optim_wrapper', 'param_scheduler',
                'train_cfg'):
        assert cfg[key] == dr1mask[key], key
