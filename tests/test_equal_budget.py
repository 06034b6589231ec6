"""The equal-budget comparison: its arguments, its tables from given rows,
and one whole run through tools/train.py and tools/test.py."""
import importlib
import json
import subprocess
import sys

import pytest

from conftest import REPO
from test_tools import generate_toy

TOOL = REPO / 'tools' / 'analysis_tools' / 'equal_budget.py'


@pytest.fixture
def tool(monkeypatch):
    # The tool imports its sibling benchmark_common, as when run as a script.
    monkeypatch.syspath_prepend(str(TOOL.parent))
    return importlib.import_module('equal_budget')


def test_help_lists_the_models_iterations_and_seeds(tool, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    # argparse may wrap a line at a model name's hyphen
    help_text = ' '.join(capsys.readouterr().out.split()).replace('- ', '-')
    for text in ('dr1mask-instance, condinst, dr1mask-panoptic, '
                 'panoptic-fpn, separate-branch', '--iters', '--seeds', 'one training',
                 '[300, 800]', '[0, 1, 2]'):
        assert text in help_text, text


@pytest.mark.parametrize('argv, message', [
    (['--models', 'maskformer'], "invalid choice: 'maskformer'"),
    (['--iters', '0', '300'], '--iters [0, 300] must be >= 1'),
    (['--seeds', '-1'], '>= 0'),
])
def test_bad_arguments_are_named(tool, capsys, argv, message):
    with pytest.raises(SystemExit):
        tool.parse_args(argv)
    assert message in capsys.readouterr().err


def test_schedule_is_stretched_to_the_last_evaluation_point(tool):
    options = tool.schedule_options(
        str(REPO / 'configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py'), 400,
        100)
    # the toy config steps the lr at 650 of 800
    assert 'param_scheduler.1.milestones=[325]' in options
    assert 'train_cfg.max_iters=400' in options
    assert 'default_hooks.checkpoint.interval=100' in options


def test_train_times_add_up_the_logged_iteration_times(tool, tmp_path):
    log = tmp_path / '20260101_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    log.write_text('\n'.join(
        json.dumps(r) for r in [
            dict(iter=10, time=2.0, loss=1.0), dict(iter=20, time=1.0),
            dict(coco_panoptic_PQ=3.0, step=20)
        ]))
    assert tool.train_times(str(tmp_path)) == {10: 20.0, 20: 30.0}
    # resumed from the checkpoint at 10 (the first run logged 20 but died
    # before saving it): the later log replaces the earlier from 10 on
    resumed = tmp_path / '20260101_010000' / 'vis_data' / 'scalars.json'
    resumed.parent.mkdir(parents=True)
    resumed.write_text('\n'.join(
        json.dumps(dict(iter=i, time=3.0)) for i in (20, 30)))
    assert tool.train_times(str(tmp_path)) == {10: 20.0, 20: 50.0, 30: 80.0}


def test_markdown_compares_pairs_at_equal_iterations_and_equal_time(tool):
    rows = []
    for seed, (pq, fpn_pq) in enumerate([(50.0, 60.0), (54.0, 62.0)]):
        rows += [
            dict(model='dr1mask-panoptic', seed=seed, iter=100,
                 train_time_s=100.0, threads=1, PQ=pq - 20),
            dict(model='dr1mask-panoptic', seed=seed, iter=300,
                 train_time_s=300.0, threads=1, PQ=pq),
            dict(model='panoptic-fpn', seed=seed, iter=100,
                 train_time_s=400.0, threads=1, PQ=fpn_pq - 30),
            dict(model='panoptic-fpn', seed=seed, iter=300,
                 train_time_s=1200.0, threads=1, PQ=fpn_pq),
        ]
    table = tool.markdown(rows)
    assert ('| dr1mask-panoptic | 300 | 0,1 | 300.0 [300.0-300.0] | '
            '52.0 [50.0-54.0] |') \
        in table
    assert '| equal iterations | 300 | 300 | 300 | 1200 | -9.0 |' in table
    # the budget is DR1Mask's whole run (300 s): Panoptic-FPN at 100
    # iterations (400 s) is the closest
    assert '| equal time (budget 300 s) | 300 | 100 | 300 | 400 | +21.0 |' \
        in table
    # the instance pair has no rows, so no comparison
    assert 'condinst' not in table


@pytest.mark.slow
def test_instance_pair_end_to_end(tmp_path):
    generate_toy(tmp_path, num_train=4, num_val=2)
    out, md = tmp_path / 'eb.json', tmp_path / 'eb.md'
    result = subprocess.run([
        sys.executable, str(TOOL), '--models', 'dr1mask-instance',
        'condinst', '--iters', '2', '4', '--seeds', '0', '--work-dir',
        'eb', '--out', str(out), '--markdown', str(md), '--cfg-options',
        'train_dataloader.batch_size=2'
    ], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    rows = json.loads(out.read_text())
    assert [(r['model'], r['iter']) for r in rows] == [
        ('dr1mask-instance', 2), ('dr1mask-instance', 4), ('condinst', 2),
        ('condinst', 4)
    ]
    for row in rows:
        metrics = {'bbox_AP', 'segm_AP', 'bbox_AP_s', 'bbox_AP_m',
                   'bbox_AP_l'}
        assert set(row) == {'model', 'seed', 'iter', 'train_time_s',
                            'threads'} | metrics
        assert row['seed'] == 0 and row['threads'] == 1
        # COCO's -1: no object of that size in the 2 val images
        assert all(-100 <= row[key] <= 100 for key in metrics)
    # time grows with the iterations of one run
    assert 0 < rows[0]['train_time_s'] < rows[1]['train_time_s']
    table = md.read_text()
    assert ('| model | iter | seeds | train time (s) | bbox_AP | segm_AP | '
            'bbox_AP_s | bbox_AP_m | bbox_AP_l |') in table
    assert 'dr1mask-instance minus condinst' in table
    assert '| equal iterations | 4 | 4 |' in table
    assert (tmp_path / 'eb' / 'condinst' / 'seed_0' / 'iter_2.pth').is_file()


def test_coco_heads_selects_the_coco_panoptic_pair(tool, capsys):
    args = tool.parse_args(['--coco-heads'])
    assert args.models == ['dr1mask-panoptic', 'panoptic-fpn',
                           'separate-branch']
    for model in args.models:
        train_config, evaluations = tool.COCO_HEADS_MODELS[model]
        assert '_coco-heads_' in train_config
        assert (REPO / train_config).is_file()
        assert all((REPO / c).is_file() for c in evaluations)
    with pytest.raises(SystemExit):
        tool.parse_args(['--coco-heads', '--models', 'condinst'])
    assert "--models ['condinst'] have no --coco-heads variant" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_separate_branch_trains_and_reports_panoptic_and_instance_rows(
        tmp_path):
    """The same-detector baseline trains two iterations through
    tools/train.py and its checkpoint gives the panoptic and the instance
    metrics through tools/test.py, as rows of the tool's JSON."""
    generate_toy(tmp_path, num_train=4, num_val=2)
    out = tmp_path / 'eb.json'
    result = subprocess.run([
        sys.executable, str(TOOL), '--models', 'separate-branch', '--iters',
        '2', '--seeds', '0', '--work-dir', 'eb', '--out', str(out),
        '--cfg-options', 'train_dataloader.batch_size=2'
    ], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    [row] = json.loads(out.read_text())
    assert (row['model'], row['seed'], row['iter']) == ('separate-branch', 0,
                                                        2)
    assert set(row) == {
        'model', 'seed', 'iter', 'train_time_s', 'threads', 'PQ', 'PQ_th',
        'PQ_st', 'bbox_AP', 'segm_AP', 'bbox_AP_s', 'bbox_AP_m', 'bbox_AP_l'
    }
    assert 0 <= row['PQ'] <= 100 and row['train_time_s'] > 0
