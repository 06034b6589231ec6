"""The speed benchmark's quickest run: every model, every figure, the
detection count forced and checked, on a tiny input."""
import importlib
import json

import pytest
import torch

from conftest import REPO

KEYS = {'model', 'input', 'detections', 'median_ms', 'params_m', 'gflops',
        'peak_mem_mb'}
MODELS = {'dr1mask_panoptic', 'dr1mask_instance', 'panoptic_fpn', 'condinst',
          'fcos'}


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
            '1', '--threads', '1', '--out', str(out), '--markdown',
            str(table)
        ])
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())
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
                  'pan / FCOS', 'DR1Mask pan by stage'):
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
