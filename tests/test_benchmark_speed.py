"""The speed benchmark's quickest run: every model, every figure, the
detection count forced and checked, the throughput at two batch sizes, on a
tiny input."""
import importlib
import json

import pytest
import torch

from conftest import REPO

KEYS = {'model', 'input', 'detections', 'median_ms', 'params_m', 'gflops',
        'peak_mem_mb'}
THROUGHPUT_KEYS = {'model', 'input', 'detections', 'batch', 'median_ms',
                   'times_ms', 'images_per_s'}
MODELS = {'dr1mask_panoptic', 'dr1mask_instance', 'panoptic_fpn', 'condinst',
          'fcos', 'mask2former'}


@pytest.fixture
def tool(monkeypatch):
    # The tool imports its sibling benchmark_common, as when run as a script.
    monkeypatch.syspath_prepend(str(REPO / 'tools' / 'analysis_tools'))
    return importlib.import_module('benchmark_speed')


def test_quickest_run_writes_every_row(tool, tmp_path, capsys):
    out, table = tmp_path / 'speed.json', tmp_path / 'speed.md'
    threads = torch.get_num_threads()
    try:
        # One thread: steady on a busy machine (see the tool's docstring).
        tool.main([
            '--quick', '--sizes', '64x64', '--detections', '5', '--rounds',
            '1', '--threads', '1', '--batch-sizes', '1', '2', '--out',
            str(out), '--markdown', str(table)
        ])
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())
    throughput = [row for row in rows if 'batch' in row]
    rows = [row for row in rows if 'batch' not in row]
    # Every whole model at both batch sizes, each call of a batch checked
    # for 5 detections per image; images / s from the batch's median.
    assert sorted((row['model'], row['batch']) for row in throughput) == \
        sorted((m, b) for m in MODELS for b in (1, 2))
    for row in throughput:
        assert set(row) == THROUGHPUT_KEYS, row
        assert row['input'] == [64, 64] and row['detections'] == 5
        assert len(row['times_ms']) == 1 and row['median_ms'] > 0
        assert row['images_per_s'] == pytest.approx(
            row['batch'] * 1e3 / row['median_ms'])
    models = {row['model'] for row in rows}
    stages = {f'{m}/{s}' for m in tool.STAGED for s in tool.STAGES
              if s != 'panoptic_layer' or m == 'dr1mask_panoptic'}
    assert models == MODELS | stages
    by_model = {row['model']: row for row in rows}
    for row in rows:
        assert KEYS <= set(row), row
        assert row['input'] == [64, 64] and row['detections'] == 5
        assert row['median_ms'] > 0, row
    for model in MODELS:
        for key in ('params_m', 'gflops', 'peak_mem_mb'):
            assert by_model[model][key] > 0, (key, model)
    # The stages are predict's own calls: together they hold all of its
    # parameters and FLOPs, and the panoptic layer is what the panoptic
    # model adds.
    for model in tool.STAGED:
        stages = [row for name, row in by_model.items()
                  if name.startswith(f'{model}/')]
        for key in ('params_m', 'gflops'):
            assert sum(row[key] for row in stages) == pytest.approx(
                by_model[model][key], rel=1e-6), (model, key)
    assert by_model['dr1mask_panoptic/panoptic_layer']['gflops'] > 0
    printed = capsys.readouterr().out
    assert printed == table.read_text()
    for title in ('pan / Panoptic-FPN', 'inst / CondInst', 'pan / inst',
                  'pan / FCOS', 'pan / Mask2Former', 'DR1Mask pan by stage',
                  'Mask2Former img/s'):
        assert title in printed


def test_models_get_the_same_random_weights_on_every_build(tool):
    """Random weights decide which detections are kept, so every run must
    time the same ones."""
    from mmdet.utils import register_all_modules
    register_all_modules()
    first, second = (tool.build_model('dr1mask_instance', torch.device('cpu'))
                     for _ in range(2))
    torch.rand(1)  # whatever the global generator did in between
    third = tool.build_model('dr1mask_instance', torch.device('cpu'))
    for model in (second, third):
        for (name, a), b in zip(first.state_dict().items(),
                                model.state_dict().values()):
            assert torch.equal(a, b), name


def test_mask2former_keeps_exactly_the_forced_count(tool):
    """Its panoptic output keeps the queries above the calibrated
    ``object_mask_thr``, its instance output the top ``max_per_image``: both
    are N, on every image of a batch, and the threshold is what keeps them
    (a threshold a little higher or lower keeps another count)."""
    from mmdet.utils import register_all_modules
    register_all_modules()
    entry = tool.Entry('mask2former',
                       tool.build_model('mask2former', torch.device('cpu')))
    fusion = entry.model.panoptic_fusion_head
    with torch.no_grad():
        for n, batch in ((3, 1), (7, 2)):
            entry.prepare((64, 64), n, batch)
            outputs = entry(tool.direct, n)
            assert entry.kept() == [n] * 2 * batch
            assert [len(o.pred_instances) for o in outputs] == [n] * batch
            assert all((o.pred_instances.labels == 0).all() for o in outputs)
        threshold = fusion.test_cfg.object_mask_thr
        for shift in (-0.01, 0.01):
            fusion.test_cfg.object_mask_thr = threshold + shift
            with pytest.raises(RuntimeError, match='kept'):
                entry(tool.direct, 7)


def test_trained_checkpoint_is_timed_with_and_without_its_panoptic_layer(
        tool, tmp_path, capsys):
    """--checkpoint: the checkpoint's weights in both rows (the instance row
    is the same model without its panoptic layer), on the given image, the
    detections only counted; a config without a panoptic layer and an
    unreadable image are named."""
    import cv2
    import numpy as np
    from mmengine.config import Config
    from mmdet.registry import MODELS as REGISTRY
    from mmdet.utils import register_all_modules
    register_all_modules()
    config = str(REPO / tool.QUICKSTART_CONFIG)
    model = REGISTRY.build(Config.fromfile(config).model)
    torch.nn.init.constant_(model.panoptic_head.stuff_conv.bias, 0.5)
    checkpoint = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(
        0, 256, (40, 60, 3), dtype=np.uint8))
    out = tmp_path / 'trained.json'
    threads = torch.get_num_threads()
    try:
        tool.main(['--checkpoint', str(checkpoint), '--image', str(image),
                   '--sizes', '64x96', '--detections', '3', '--rounds', '1',
                   '--threads', '1', '--out', str(out)])
    finally:
        torch.set_num_threads(threads)
    rows = {row['model']: row for row in json.loads(out.read_text())}
    assert {'dr1mask_panoptic', 'dr1mask_instance',
            'dr1mask_panoptic/panoptic_layer'} <= set(rows)
    assert 'dr1mask_instance/panoptic_layer' not in rows
    assert rows['dr1mask_panoptic']['input'] == [64, 96]
    printed = capsys.readouterr().out
    assert f'the weights of {checkpoint}' in printed
    assert 'pan / inst' in printed
    loaded = tool.trained_models(config, str(checkpoint), torch.device('cpu'))
    torch.testing.assert_close(
        loaded['dr1mask_panoptic'].panoptic_head.stuff_conv.bias,
        torch.full((3, ), 0.5))
    assert loaded['dr1mask_instance'].panoptic_head is None
    instance_config = str(REPO / 'configs/dr1mask/dr1mask_r18_fpn_toy.py')
    with pytest.raises(SystemExit, match='no model.panoptic_head'):
        tool.trained_models(instance_config, str(checkpoint),
                            torch.device('cpu'))
    # An image OpenCV cannot read is named before any weights are loaded.
    not_an_image = tmp_path / 'notes.txt'
    not_an_image.write_text('not an image')
    with pytest.raises(SystemExit, match=f'--image {not_an_image}: not an'):
        tool.main(['--checkpoint', str(tmp_path / 'missing.pth'), '--image',
                   str(not_an_image), '--rounds', '1'])
