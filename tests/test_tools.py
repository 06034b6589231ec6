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
from projects.dr1mask.safe_checkpoints import mmengine_checkpoint_globals

CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py')
INSTANCE_CONFIG = str(CONFIGS / 'dr1mask_r18_fpn_toy.py')
# Two iterations of batch 2 on tiny images, evaluation at the end.
SHORT = [
    'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=2', 'train_cfg.val_interval=100'
]


def run(args, cwd, env=None, timeout=600):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
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


def train(workspace, work_dir, max_iters, *extra, config=CONFIG):
    return run([
        sys.executable, str(REPO / 'tools/train.py'), config, '--work-dir',
        str(work_dir), *extra, '--cfg-options',
        f'train_cfg.max_iters={max_iters}', *SHORT
    ], cwd=workspace)


def test_train_save_test_resume(workspace):
    work_dir = workspace / 'work_dirs' / 'toy'
    train(workspace, work_dir, 2)
    first = work_dir / 'iter_2.pth'
    # torch's safe loading reads it: the allowlist covers what it pickles
    allowed = {
        g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
        for g in mmengine_checkpoint_globals()
    }
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(
        first)) <= allowed
    before = torch.load(first)

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
    after = torch.load(work_dir / 'iter_4.pth')
    assert before['meta']['iter'] == 2 and after['meta']['iter'] == 4
    assert [s['last_step'] for s in after['param_schedulers']] == [4, 4]
    momentum = [
        s['momentum_buffer']
        for s in after['optimizer']['state'].values()
    ]
    assert momentum and all(m is not None for m in momentum)


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


def test_mmdets_own_scripts_run_our_configs(workspace):
    """mmdet's tools/train.py and tools/test.py, run as they are (from the
    mmdet install, not through ours), train and test a DR1Mask config: the
    installed package and the config's imports are all they need."""
    import mmdet
    mmdet_tools = os.path.join(os.path.dirname(mmdet.__file__), '.mim',
                               'tools')
    work_dir = workspace / 'work_dirs' / 'mmdet_tools'
    run([
        sys.executable,
        os.path.join(mmdet_tools, 'train.py'), CONFIG, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_iters=2', *SHORT
    ], cwd=workspace)
    output = run([
        sys.executable,
        os.path.join(mmdet_tools, 'test.py'), CONFIG,
        str(work_dir / 'iter_2.pth'), '--cfg-options',
        'model.test_cfg.score_thr=0.0'
    ], cwd=workspace)
    assert 'coco_panoptic/PQ:' in output


def test_gpu_check_is_wired():
    """tools/gpu_check.sh --dry-run: every GPU check is listed and what they
    need loads (the checks themselves need a GPU)."""
    result = subprocess.run(['bash', str(REPO / 'tools/gpu_check.sh'),
                             '--dry-run'], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r'PASS wiring: \d+ GPU tests collected', lines[0])
    for check in ('cuda_ops', 'cuda_tests', 'toy_data', 'train_amp',
                  'dist_train'):
        assert any(line.startswith(f'DRY {check}: ') for line in lines), check
