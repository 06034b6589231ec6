"""The training benchmark: its synthetic batch, and its quickest run from
the command line (one process per model, the JSON rows as documented)."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
        '--out', str(out), '--markdown', str(table)
    ], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert [row['model'] for row in rows] == ['dr1mask_panoptic', 'condinst']
    for row in rows:
        assert set(row) == KEYS, row
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
