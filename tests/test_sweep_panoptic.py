"""The panoptic threshold sweep: its argument and config errors, one network
pass for the whole grid, its rows, and its PQ against tools/test.py's at the
same settings."""
import glob
import importlib
import json
import sys

import pytest
import torch

from conftest import CONFIGS, REPO, load_config
from mmdet.registry import MODELS
from projects.dr1mask.models.detectors import DR1Mask
from test_tools import generate_toy, run

TOOL = REPO / 'tools' / 'analysis_tools' / 'sweep_panoptic.py'
CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py')
INSTANCE_CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy.py')
NUM_VAL = 2  # the toy val images; the test dataloader's batch is 1
ROW_KEYS = {
    'score_thr', 'mask_overlap', 'stuff_area_limit', 'instance_score_thr',
    'PQ', 'PQ_th', 'PQ_st', 'default'
}


@pytest.fixture
def tool(monkeypatch):
    # The tool imports its sibling benchmark_common, as when run as a script.
    monkeypatch.syspath_prepend(str(TOOL.parent))
    return importlib.import_module('sweep_panoptic')


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A folder holding a toy set of 2 training and NUM_VAL val images in
    data/toy_panoptic, where the configs look for it."""
    root = tmp_path_factory.mktemp('sweep')
    generate_toy(root, num_train=2, num_val=NUM_VAL)
    return root


@pytest.fixture(scope='module')
def random_checkpoint(toy):
    """The toy panoptic model's initial weights: enough to count the
    network's passes, without a training."""
    torch.manual_seed(0)
    path = toy / 'random.pth'
    torch.save({'state_dict': MODELS.build(load_config(CONFIG).model)
                .state_dict()}, path)
    return path


@pytest.mark.parametrize('flags, message', [
    (['--score-thr', '0.3', '1.5'], '--score-thr 1.5 is outside [0, 1]'),
    (['--mask-overlap', '-0.1'], '--mask-overlap -0.1 is outside [0, 1]'),
    (['--instance-score-thr', '2'],
     '--instance-score-thr 2.0 is outside [0, 1]'),
    (['--stuff-area-limit', '0', '-1'], '--stuff-area-limit -1 is negative'),
    (['--stuff-area-limit', '12.5'], "invalid int value: '12.5'"),
])
def test_bad_grid_values_are_named(tool, capsys, flags, message):
    with pytest.raises(SystemExit):
        tool.parse_args([CONFIG, 'iter_2.pth', *flags])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('config, options, message', [
    (INSTANCE_CONFIG, [], 'dr1mask_r18_fpn_toy.py: model.panoptic_head is '
     'None, so the model predicts no panoptic segmentation'),
    (CONFIG, ['model.test_cfg.panoptic=None'],
     'dr1mask_r18_fpn_toy-panoptic.py: model.test_cfg.panoptic is missing'),
    (CONFIG, ['test_evaluator.0.type=CocoMetric'],
     'dr1mask_r18_fpn_toy-panoptic.py: test_evaluator has 0 '
     'CocoPanopticMetric entries'),
], ids=['instance-model', 'no-test_cfg.panoptic', 'no-panoptic-metric'])
def test_config_errors_are_named_before_the_checkpoint_is_read(
        tool, config, options, message):
    # the checkpoint does not exist: the error comes before it is read
    with pytest.raises(ValueError) as error:
        tool.main([config, 'missing.pth'] +
                  (['--cfg-options', *options] if options else []))
    assert message in str(error.value)


def test_network_runs_once_for_the_whole_grid(tool, toy, random_checkpoint,
                                              monkeypatch, capsys):
    calls = []
    forward = DR1Mask._forward

    def counted(model, *args, **kwargs):
        calls.append(1)
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(DR1Mask, '_forward', counted)
    monkeypatch.chdir(toy)
    out = toy / 'sweep' / 'rows.json'
    returned = tool.main([
        CONFIG,
        str(random_checkpoint), '--score-thr', '0.3', '0.5',
        '--mask-overlap', '0.5', '0.7', '--stuff-area-limit', '512',
        '--out',
        str(out)
    ])
    # one pass per batch, none per setting
    assert len(calls) == NUM_VAL
    rows = json.loads(out.read_text())
    assert rows == returned
    assert [(r['score_thr'], r['mask_overlap']) for r in rows] == [
        (0.3, 0.5), (0.3, 0.7), (0.5, 0.5), (0.5, 0.7)
    ]
    assert all(set(row) == ROW_KEYS for row in rows)
    # the config's own: panoptic score_thr 0.3, mask_overlap 0.5, the dense
    # head's score_thr 0.05
    assert [r['default'] for r in rows] == [True, False, False, False]
    assert all(r['stuff_area_limit'] == 512 and r['instance_score_thr'] ==
               0.05 for r in rows)
    printed = capsys.readouterr().out
    assert ('2 score_thr x 2 mask_overlap x 1 stuff_area_limit x 1 '
            'instance_score_thr = 4 settings\n') in printed
    assert '| score_thr | mask_overlap | stuff_area_limit | ' \
        'instance_score_thr | PQ | PQ_th | PQ_st | default |' in printed
    assert ('config: score_thr=0.3, mask_overlap=0.5, stuff_area_limit=512, '
            'instance_score_thr=0.05: PQ ') in printed
    assert '\nbest: ' in printed


def test_default_grid_is_around_the_config_and_adds_its_own(tool):
    """Without flags: the default values and the config's own on each axis;
    with flags leaving the config's setting out, it is evaluated too."""
    test_cfg = load_config(CONFIG).model.test_cfg
    settings, own = tool.grid(tool.parse_args([CONFIG, 'c.pth']), test_cfg)
    assert own == (0.3, 0.5, 512, 0.05)
    assert len(settings) == 4 * 3 * 5 * 1
    assert sorted({s.stuff_area_limit for s in settings}) == \
        [0, 128, 256, 512, 1024]
    settings, own = tool.grid(
        tool.parse_args([CONFIG, 'c.pth', '--score-thr', '0.1', '0.1']),
        test_cfg)
    assert len(settings) == 3 * 5 + 1 and settings[-1] == own


@pytest.mark.slow
def test_sweep_gives_tools_test_pq_at_the_same_settings(tool, toy,
                                                       monkeypatch):
    """A checkpoint trained 40 iterations (no warm-up): PQ, PQ_th and PQ_st
    of the config's own setting and of panoptic score_thr 0 (where the
    detections below the config's 0.3 become thing segments) are those of
    tools/test.py with the same test_cfg."""
    work_dir = toy / 'work_dirs' / 'trained'
    run([
        sys.executable,
        str(REPO / 'tools/train.py'), CONFIG, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_iters=40',
        'train_dataloader.batch_size=2', 'param_scheduler.0.start_factor=1.0',
        'randomness.seed=0', 'train_cfg.val_begin=100',
        'default_hooks.checkpoint.interval=40'
    ], cwd=toy)
    checkpoint = str(work_dir / 'iter_40.pth')

    def tools_test(name, *options):
        test_dir = toy / 'work_dirs' / name
        run([
            sys.executable,
            str(REPO / 'tools/test.py'), CONFIG, checkpoint, '--work-dir',
            str(test_dir), *(['--cfg-options', *options] if options else [])
        ], cwd=toy)
        # the metrics, as mmengine's logger hook dumps them
        dump = sorted(glob.glob(str(test_dir / '*' / '*.json')))[-1]
        with open(dump) as f:
            metrics = json.load(f)
        return {
            key: metrics[f'coco_panoptic/{key}']
            for key in ('PQ', 'PQ_th', 'PQ_st')
        }

    monkeypatch.chdir(toy)
    rows = tool.main([
        CONFIG, checkpoint, '--score-thr', '0.0', '0.3', '--mask-overlap',
        '0.5', '--stuff-area-limit', '512'
    ])
    swept = {
        row['score_thr']: {k: row[k]
                           for k in ('PQ', 'PQ_th', 'PQ_st')}
        for row in rows
    }
    assert [row['default'] for row in rows] == [False, True]
    assert swept[0.3] == pytest.approx(tools_test('default'), abs=1e-9)
    assert swept[0.0] == pytest.approx(
        tools_test('low', 'model.test_cfg.panoptic.score_thr=0.0'),
        abs=1e-9)
    # the model has learnt some stuff, and the detections below 0.3 change
    # the panoptic maps: the comparison sees the threshold at work
    assert swept[0.3]['PQ_st'] > 0
    assert swept[0.0] != swept[0.3]
