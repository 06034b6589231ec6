"""The stack fixes in projects/dr1mask/compat.py, one by one."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

import projects.dr1mask  # noqa: F401  applies the fixes


@pytest.fixture
def runner_like_checkpoint(tmp_path):
    """A checkpoint pickling what the runner's do: numpy and mmengine
    objects beside the tensors."""
    path = tmp_path / 'ckpt.pth'
    torch.save(
        dict(
            state_dict=dict(w=torch.ones(2)),
            meta=dict(iter=np.int64(2), seed=np.array([1, 2])),
            message_hub=dict(log_scalars=dict(loss=HistoryBuffer([1.0], [1])))),
        path)
    return path


def test_mmengine_loads_the_runners_checkpoints(runner_like_checkpoint):
    checkpoint = _load_checkpoint(str(runner_like_checkpoint))
    assert checkpoint['meta']['iter'] == 2
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))


def test_other_torch_loads_keep_the_safe_default(runner_like_checkpoint):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(runner_like_checkpoint)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        _load_checkpoint(str(tmp_path / 'nothing.pth'))
