"""Checkpoints load with torch's weights_only unpickler, and importing the
package changes no library's behaviour."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

import projects.dr1mask.engine.safe_checkpoints  # noqa: F401  the allowlist


def test_importing_the_package_changes_no_library_behaviour():
    """`import projects.dr1mask` registers modules and nothing else: the
    checkpoint loaders, torch's allowlist and mmengine's distributed set-up
    are the same objects before and after."""
    script = '''
import torch
from mmengine.dist import utils
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.runner.checkpoint import CheckpointLoader

def state():
    return (dict(CheckpointLoader._schemes), torch.load,
            list(torch.serialization.get_safe_globals()),
            utils._init_dist_pytorch, utils.init_dist,
            MMDistributedDataParallel.__init__)

before = state()
import projects.dr1mask
from mmdet.registry import MODELS
assert MODELS.get('DR1Mask') is projects.dr1mask.DR1Mask
after = state()
assert len(before) == len(after)
for a, b in zip(before, after):
    assert a == b, (a, b)
print('unchanged')
'''
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'unchanged'


def test_runner_like_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(
        dict(
            state_dict=dict(w=torch.ones(2)),
            meta=dict(iter=np.int64(2), seed=np.array([1, 2]),
                      loss=np.float64(0.5)),
            message_hub=dict(
                log_scalars=dict(loss=HistoryBuffer([1.0], [1])))), path)
    checkpoint = _load_checkpoint(str(path))
    assert checkpoint['meta']['iter'] == 2
    assert checkpoint['message_hub']['log_scalars']['loss'].mean() == 1.0
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))


class _CreatesAFile:
    """Unpickling this runs a shell command: what a crafted checkpoint
    would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f'touch {self.target}', )


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / 'created_by_the_checkpoint'
    path = tmp_path / 'crafted.pth'
    torch.save(dict(state_dict={}, meta=_CreatesAFile(str(target))), path)
    with pytest.raises(pickle.UnpicklingError, match=r'posix\.system'):
        _load_checkpoint(str(path))
    assert not target.exists()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        _load_checkpoint(str(tmp_path / 'nothing.pth'))


def test_getattr_is_answered_only_for_the_history_buffer(tmp_path):
    """A pickle may look up HistoryBuffer's statistics, and nothing else
    through getattr (here: a function's globals, a way to reach modules)."""
    path = tmp_path / 'crafted.pth'

    class _ReachesGlobals:

        def __reduce__(self):
            return getattr, (HistoryBuffer.__init__, '__globals__')

    torch.save(dict(meta=_ReachesGlobals()), path)
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        _load_checkpoint(str(path))


def test_empty_arrays_and_history_buffers_load(tmp_path):
    """What the runner writes before anything is logged: an empty
    HistoryBuffer (two empty arrays) and an empty array in the meta. Pickle
    protocol 2 writes their data, b'', as the call bytes()."""
    path = tmp_path / 'ckpt.pth'
    torch.save(
        dict(meta=dict(empty=np.array([], np.float64)),
             message_hub=dict(log_scalars=dict(loss=HistoryBuffer()))), path)
    checkpoint = _load_checkpoint(str(path))
    assert checkpoint['meta']['empty'].shape == (0, )
    assert checkpoint['meta']['empty'].dtype == np.float64
    assert len(checkpoint['message_hub']['log_scalars']['loss'].data[0]) == 0


def test_bytes_is_answered_only_for_the_empty_bytes(tmp_path):
    """bytes(n) would allocate n bytes of a crafted pickle's choosing."""
    path = tmp_path / 'crafted.pth'

    class _AllocatesMemory:

        def __reduce__(self):
            return bytes, (10**12, )

    torch.save(dict(meta=_AllocatesMemory()), path)
    with pytest.raises(pickle.UnpicklingError, match=r'refused bytes\('):
        _load_checkpoint(str(path))
