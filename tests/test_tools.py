"""The user-facing tools, run as users run them: train, save, test, resume,
and distributed training on the CPU, from a working directory that is not
the repository."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import CONFIGS, REPO

CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py')
INSTANCE_CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy.py')
# Two iterations of batch 2 on tiny images, evaluation at the end.
SHORT = [
    'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=2', 'train_cfg.val_interval=100'
]


def run(args, cwd, env=None, timeout=600, returncode=0):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == returncode, output[-5000:]
    return output


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder holding data/toy_panoptic, as the configs expect."""
    root = tmp_path_factory.mktemp('workspace')
    run([
        sys.executable,
        str(REPO / 'tools/misc/generate_toy_panoptic.py'),
        'data/toy_panoptic', '--num-train', '6', '--num-val', '3',
        '--min-size', '64', '--max-size', '96'
    ], cwd=root)
    return root


def train(workspace, work_dir, max_iters, *extra, config=CONFIG, **kwargs):
    return run([
        sys.executable, str(REPO / 'tools/train.py'), config, '--work-dir',
        str(work_dir), *extra, '--cfg-options',
        f'train_cfg.max_iters={max_iters}', *SHORT
    ], cwd=workspace, **kwargs)


def test_train_save_test_resume(workspace):
    work_dir = workspace / 'work_dirs' / 'toy'
    train(workspace, work_dir, 2)
    first = work_dir / 'iter_2.pth'
    before = torch.load(first, weights_only=False)

    output = run([
        sys.executable, str(REPO / 'tools/test.py'), CONFIG,
        str(first), '--work-dir', str(workspace / 'work_dirs' / 'test'),
        '--cfg-options', 'model.test_cfg.score_thr=0.0'
    ], cwd=workspace)
    assert re.search(r'\|\s*All\s*\|', output), 'no PQ table'
    assert 'coco/segm_mAP:' in output and 'coco_panoptic/PQ:' in output

    output = train(workspace, work_dir, 4, '--resume')
    assert 'Auto resumed from the latest checkpoint' in output
    assert 'Iter(train) [3/4]' in output
    assert 'Iter(train) [1/4]' not in output
    after = torch.load(work_dir / 'iter_4.pth', weights_only=False)
    assert before['meta']['iter'] == 2 and after['meta']['iter'] == 4
    assert [s['last_step'] for s in after['param_schedulers']] == [4, 4]
    momentum = [
        s['momentum_buffer']
        for s in after['optimizer']['state'].values()
    ]
    assert momentum and all(m is not None for m in momentum)


def test_non_finite_loss_stops_training_naming_the_term(workspace):
    """An infinite panoptic loss weight: the run stops after iteration 1
    with the term named, before that state is logged or saved."""
    work_dir = workspace / 'work_dirs' / 'diverged'
    output = train(workspace, work_dir, 2, '--cfg-options',
                   'model.panoptic_head.loss_weight=inf', returncode=1)
    assert ('FloatingPointError: Non-finite loss at iteration 1: '
            'loss = inf on rank 0; loss_panoptic = inf on rank 0\n') in output
    assert 'Iter(train) [1/2]' not in output
    assert not list(work_dir.glob('*.pth'))


def test_instance_model_reports_box_and_mask_ap(workspace):
    work_dir = workspace / 'work_dirs' / 'toy_instance'
    train(workspace, work_dir, 2, config=INSTANCE_CONFIG)
    output = run([
        sys.executable, str(REPO / 'tools/test.py'), INSTANCE_CONFIG,
        str(work_dir / 'iter_2.pth'), '--cfg-options',
        'model.test_cfg.score_thr=0.0'
    ], cwd=workspace)
    assert 'coco/bbox_mAP:' in output and 'coco/segm_mAP:' in output


def test_dist_train_two_cpu_ranks(workspace):
    """Two gloo ranks train to the end: DDP all-reduces every step's
    gradients across both, so rank 0 saving iteration 2 means rank 1 took
    part in both steps."""
    env = dict(os.environ, PORT='29517')
    # Each rank's distributed set-up then announces itself once.
    env.pop('MKL_NUM_THREADS', None)
    output = run([
        'bash', str(REPO / 'tools/dist_train.sh'), CONFIG, '2', '--work-dir',
        str(workspace / 'work_dirs' / 'dist'), '--cfg-options',
        'train_cfg.max_iters=2', *SHORT
    ], cwd=workspace, env=env)
    assert 'Distributed training: True' in output
    assert output.count('Setting MKL_NUM_THREADS environment variable') == 2
    assert (workspace / 'work_dirs' / 'dist' / 'iter_2.pth').is_file()
