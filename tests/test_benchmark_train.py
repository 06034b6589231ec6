"""The training benchmark: its synthetic batch, and its quickest run from
the command line (one process per model, the JSON rows as documented)."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

TOOLS = REPO / 'tools' / 'analysis_tools'
KEYS = {'model', 'input', 'batch', 'median_s', 'times_s', 'warmup_s',
        'peak_mem_mb', 'peak_rss_mb', 'things', 'stuff', 'threads'}


@pytest.fixture
def tool(monkeypatch):
    # The tool imports its sibling benchmark_common, as when run as a script.
    monkeypatch.syspath_prepend(str(TOOLS))
    return importlib.import_module('benchmark_train')


def test_synthetic_batch_is_consistent_and_reproducible(tool):
    size = (120, 160)
    images = tool.synthetic_batch(size, 2, 20, (5, 10), seed=3)
    again = tool.synthetic_batch(size, 2, 20, (5, 10), seed=3)
    for image, same in zip(images, again):
        for key, value in image.items():
            assert np.array_equal(value, same[key]), key
    for image in images:
        masks, sem_seg = image['masks'].astype(bool), image['sem_seg']
        n = len(masks)
        assert image['image'].shape == (3, *size)
        # occlusion may hide a few of the 20; a drawn thing covers at least
        # MIN_VISIBLE pixels, and visible parts do not overlap
        assert 10 <= n <= 20 and masks.sum((1, 2)).min() >= tool.MIN_VISIBLE
        assert masks.sum(0).max() == 1
        assert 5 <= image['stuff'] <= 10
        stuff = sem_seg[~masks.any(0)]
        assert stuff.min() >= tool.NUM_THINGS
        assert stuff.max() < tool.NUM_THINGS + tool.NUM_STUFF
        assert len(np.unique(stuff)) <= image['stuff']
        # each mask's pixels carry its class in gt_sem_seg
        for mask, label in zip(masks, image['labels']):
            assert (sem_seg[mask] == label).all()
        # boxes are the masks' pixel extents, x2 / y2 exclusive
        ys, xs = np.nonzero(masks[0])
        np.testing.assert_array_equal(
            image['bboxes'][0], [xs.min(), ys.min(), xs.max() + 1,
                                 ys.max() + 1])
        # sizes vary: radii are log-uniform from 8 px to 1/4 of the side
        areas = masks.sum((1, 2))
        assert areas.max() >= 4 * areas.min()


def test_bad_arguments_are_named(tool):
    with pytest.raises(SystemExit):
        tool.parse_args(['--stuff', '6', '60'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--sizes', '64x'])


def test_quickest_run_writes_a_row_per_model(tmp_path):
    """One command, as documented; two models (one panoptic, one instance)
    keep it short."""
    out, table = tmp_path / 'train.json', tmp_path / 'train.md'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([
        sys.executable,
        str(TOOLS / 'benchmark_train.py'), '--sizes', '64x96', '--batch',
        '1', '--rounds', '2', '--things', '4', '--stuff', '2', '3',
        '--threads', '1', '--models', 'dr1mask_panoptic', 'condinst',
        '--stages', '--out', str(out), '--markdown', str(table)
    ], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert [row['model'] for row in rows] == ['dr1mask_panoptic', 'condinst']
    for row in rows:
        assert set(row) == KEYS | {'stages'}, row
        stages = {s['stage']: s for s in row.pop('stages')}
        assert {'backbone.forward', 'neck.forward'} <= set(stages)
        # the backbone saves its activations; the optimizer step nothing
        assert stages['backbone.forward']['saved_mib'] > 0
        assert stages['optimizer step']['saved_mib'] == 0
        assert row['input'] == [64, 96] and row['batch'] == 1
        assert row['threads'] == 1
        assert len(row['times_s']) == 2 and all(t > 0 for t in row['times_s'])
        assert row['median_s'] == pytest.approx(np.median(row['times_s']))
        # gradients and momentum of ~33 M parameters alone are > 200 MiB
        assert 200 < row['peak_mem_mb'] < row['peak_rss_mb']
        assert 0 < row['things'] <= 4 and 2 <= row['stuff'] <= 3
    # both models trained on the same batch
    assert rows[0]['things'] == rows[1]['things']
    assert rows[0]['stuff'] == rows[1]['stuff']
    assert result.stdout == table.read_text()
    assert 'pan / Panoptic-FPN time (<= 1.00) | n/a' in result.stdout
    assert '| saved for backward (MiB) |' in result.stdout


class _Cube(torch.autograd.Function):
    """A custom autograd function: its node has no forward op of its own
    number."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return 3 * grad * x**2


class _Part(torch.nn.Module):

    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.linear(x).relu()

    def loss(self, x):
        return _Cube.apply(self(x)).mean()


def test_stage_times_give_each_stage_its_forward_and_backward(tool):
    """A heavy first part and a light second one whose loss calls its own
    forward: each stage gets its own forward (nested ranges subtracted) and
    the backward of the nodes it created, the custom function's included.
    The ratios use each stage's fastest of three iterations on one thread,
    so that another process on the cores cannot decide them (with two, a tiny
    op waits for the descheduled second thread)."""
    from torch.profiler import profile, record_function
    model = torch.nn.Module()
    model.first, model.second = _Part(512), _Part(8)
    tool.instrument(model)
    x = torch.randn(4096, 512)
    runs, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            with profile() as prof, \
                    record_function(tool.STAGE + tool.ITERATION):
                loss = model.second.loss(model.first(x)[:, :8])
                with record_function(tool.STAGE + tool.BACKWARD):
                    loss.backward()
                with record_function(tool.STAGE + tool.OPTIMIZER):
                    pass
            rows = {r['stage']: r for r in tool.stage_times(prof.events())}
            assert list(rows) == [
                'first.forward', 'second.loss', 'second.forward', tool.OUTSIDE,
                tool.ACCUMULATE, tool.ENGINE, tool.OPTIMIZER
            ]
            assert all(r['forward_ms'] >= 0 and r['backward_ms'] >= 0
                       for r in rows.values())
            runs.append(rows)
    finally:
        torch.set_num_threads(threads)

    def fastest(stage, column):
        return min(rows[stage][column] for rows in runs)

    # the 512-wide product and its gradients are the first part's
    assert (fastest('first.forward', 'forward_ms') >
            5 * fastest('second.forward', 'forward_ms'))
    assert (fastest('first.forward', 'backward_ms') >
            5 * fastest('second.forward', 'backward_ms') > 0)
    # the loss' own ops (the cube, the mean) and their nodes
    assert fastest('second.loss', 'forward_ms') > 0
    assert fastest('second.loss', 'backward_ms') > 0
    assert fastest(tool.ACCUMULATE, 'backward_ms') > 0  # 4 parameters


def test_saved_bytes_count_each_stages_activations_once(tool):
    """The first part saves its input for the product and its ReLU output
    (2 x 4096 x 512 floats); the second part's product saves a view of the
    latter, counted already, and its own ReLU output; the cube saves that
    again; the weights are not counted."""
    model = torch.nn.Module()
    model.first, model.second = _Part(512), _Part(8)
    tool.instrument(model)
    saved = tool.SavedBytes(model)
    with saved.hooks():
        model.second.loss(model.first(torch.randn(4096, 512))[:, :8])
    assert saved.mib == {
        'first.forward': 2 * 4096 * 512 * 4 / 2**20,
        'second.forward': 4096 * 8 * 4 / 2**20
    }
    assert tool.RUNNING == []
