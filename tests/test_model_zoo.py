"""Model-zoo conventions: model-index.yml and configs/dr1mask/metafile.yml in
mmdet's format, one entry per config, results only where measured, and the
COCO configs keeping their best checkpoint by the metric mmdet reports."""
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

from mmdet.registry import VISUALIZERS

from conftest import CONFIGS, REPO

# A test-dev config is another config's model on other test data.
CONFIG_PATHS = sorted(set(CONFIGS.glob('*.py')) -
                      set(CONFIGS.glob('*_test-dev.py')))
# Metric names per task, as mmdet's metafiles write them.
TASK_METRICS = {
    'Panoptic Segmentation': 'PQ',
    'Object Detection': 'box AP',
    'Instance Segmentation': 'mask AP',
}


@lru_cache
def load_config(path: Path) -> Config:
    # Each load reads mmdet's metafiles to resolve `mmdet::`: once per file.
    return Config.fromfile(str(path))


@lru_cache
def load_models() -> list:
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    models = []
    for metafile in index['Import']:
        meta = yaml.safe_load((REPO / metafile).read_text())
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['In Collection'] in collections, model['Name']
        models += meta['Models']
    return models


def test_one_model_entry_per_config():
    configs = [model['Config'] for model in load_models()]
    assert sorted(configs) == sorted(
        str(path.relative_to(REPO)) for path in CONFIG_PATHS)
    for model in load_models():
        assert model['Name'] == Path(model['Config']).stem


def test_collection_names_the_paper():
    meta = yaml.safe_load((CONFIGS / 'metafile.yml').read_text())
    (collection, ) = meta['Collections']
    assert collection['Paper']['URL'] == 'https://arxiv.org/abs/2011.09796'
    assert {'Training Data', 'Training Techniques', 'Training Resources',
            'Architecture'} <= set(collection['Metadata'])
    assert (REPO / collection['README']).is_file()


@pytest.mark.parametrize('path', CONFIG_PATHS, ids=lambda p: p.name)
def test_results_cover_the_configs_tasks(path):
    (model, ) = [
        m for m in load_models()
        if m['Config'] == str(path.relative_to(REPO))
    ]
    cfg = load_config(path)
    tasks = ['Object Detection', 'Instance Segmentation']
    if cfg.model.get('panoptic_head'):
        tasks.insert(0, 'Panoptic Segmentation')
    assert [result['Task'] for result in model['Results']] == tasks
    for result in model['Results']:
        assert set(result) <= {'Task', 'Dataset', 'Metrics'}
        # A result without numbers is one not measured here.
        if 'Metrics' in result:
            assert list(result['Metrics']) == [TASK_METRICS[result['Task']]]
    measured = any('Metrics' in result for result in model['Results'])
    assert measured == (path.name == 'dr1mask_r18_fpn_toy-panoptic.py')
    assert 'Weights' not in model, 'no checkpoint is published'


def test_toy_numbers_are_the_readmes():
    """The toy entry carries the quickstart's measured numbers (README, results)."""
    (toy, ) = [
        m for m in load_models() if m['Name'] == 'dr1mask_r18_fpn_toy-panoptic'
    ]
    metrics = {
        key: value
        for result in toy['Results'] for key, value in result['Metrics'].items()
    }
    readme = (REPO / 'README.md').read_text()
    header, row = re.search(
        r'^(\| Backbone \| Lr schd .*)\n\|[-| ]+\n(\| R-18 .*)$', readme,
        re.M).groups()
    measured = dict(
        zip([c.strip() for c in header.strip('|').split('|')],
            [c.strip() for c in row.strip('|').split('|')]))
    assert float(measured['PQ']) == metrics['PQ']
    assert float(measured['box AP']) == metrics['box AP']
    assert float(measured['mask AP']) == metrics['mask AP']


@pytest.mark.parametrize('path', CONFIG_PATHS, ids=lambda p: p.name)
def test_best_checkpoint_by_the_task_metric(path):
    """Panoptic configs keep the best PQ, instance ones the best mask AP, by
    the keys mmdet's metrics report (checked against a real validation in
    tests/test_inferencer.py)."""
    cfg = load_config(path)
    checkpoint = cfg.default_hooks.checkpoint
    if cfg.model.get('panoptic_head'):
        assert checkpoint.save_best == 'coco_panoptic/PQ'
    else:
        assert checkpoint.save_best == 'coco/segm_mAP'
    assert checkpoint.rule == 'greater'


def test_readmes_tensorboard_option_selects_the_backend():
    option = 'visualizer.vis_backends.0.type=TensorboardVisBackend'
    assert option in (REPO / 'README.md').read_text()
    cfg = load_config(CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py').copy()
    key, value = option.split('=')
    cfg.merge_from_dict({key: value})
    visualizer = VISUALIZERS.build(
        dict(cfg.visualizer, name='tensorboard_option', save_dir='unused'))
    # The backend imports tensorboard only when it first writes.
    assert type(visualizer.get_backend('TensorboardVisBackend')).__name__ \
        == 'TensorboardVisBackend'
