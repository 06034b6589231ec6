"""tools/slurm_train.sh and tools/slurm_test.sh hand srun mmdet's options
and run our tools/train.py / tools/test.py; a stub ``srun`` on PATH records
what it is given instead of starting a job."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

STUB = """#!/usr/bin/env bash
printf '%s\\0' "$@" > "$SRUN_RECORD"
"""


def launch(tmp_path: Path, script: str, args: list, **env_vars) -> list:
    """Run ``tools/<script> args`` with the stub srun; returns srun's
    arguments."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / 'srun'
    stub.write_text(STUB)
    stub.chmod(0o755)
    record = tmp_path / 'srun_args'
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS')
    }
    env.update(
        PATH=f'{bin_dir}:{env["PATH"]}', SRUN_RECORD=str(record),
        PYTHON='python3', **env_vars)
    subprocess.run(['bash', str(REPO / 'tools' / script), *args],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    return record.read_text().split('\0')[:-1]


@pytest.mark.parametrize('script, positional, tool', [
    ('slurm_train.sh', ['configs/x.py', 'work_dirs/x'], 'train.py'),
    ('slurm_test.sh', ['configs/x.py', 'x.pth'], 'test.py'),
])
def test_slurm_scripts_pass_mmdet_options(tmp_path, script, positional,
                                          tool):
    args = launch(
        tmp_path, script,
        ['gpu-part', 'my job', *positional, '--cfg-options', 'a=1'],
        GPUS='16', GPUS_PER_NODE='4', CPUS_PER_TASK='3',
        SRUN_ARGS='--qos=high --time=1:00:00')
    tool_args = ([positional[0], f'--work-dir={positional[1]}']
                 if tool == 'train.py' else positional)
    assert args == [
        '-p', 'gpu-part', '--job-name=my job', '--gres=gpu:4',
        '--ntasks=16', '--ntasks-per-node=4', '--cpus-per-task=3',
        '--kill-on-bad-exit=1', '--qos=high', '--time=1:00:00', 'python3',
        '-u', args[12], *tool_args, '--launcher=slurm', '--cfg-options', 'a=1'
    ]
    # Our tool (mmdet's script after the stack fixes), found from any
    # working directory.
    assert Path(args[12]).resolve() == REPO / 'tools' / tool


def test_slurm_defaults_are_mmdets(tmp_path):
    args = launch(tmp_path, 'slurm_train.sh',
                     ['part', 'job', 'configs/x.py', 'work_dirs/x'])
    assert args[2:8] == [
        '--job-name=job', '--gres=gpu:8', '--ntasks=8',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1'
    ]
    assert args[8:10] == ['python3', '-u']
