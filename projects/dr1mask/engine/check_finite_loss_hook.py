"""Stop training at the first non-finite loss term, naming it.

mmdet's ``CheckInvalidLossHook`` asserts on the total loss only, every 50
iterations by default; by then the weights are already non-finite and the
message does not say which term diverged. This hook checks every logged
term after every iteration, on every rank together, so that all ranks stop
at the same step instead of one rank leaving the others waiting in the next
gradient all-reduce.
"""
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_rank
from mmengine.hooks import Hook
from mmengine.runner import Runner
from torch import Tensor

from mmdet.registry import HOOKS


def _non_finite_terms(names: Sequence[str], values: Tensor,
                     bad_ranks: Tensor) -> str:
    """One line per term that is not finite on some rank.

    Args:
        names (Sequence[str]): the T log variable names.
        values (Tensor): (T,) this rank's values.
        bad_ranks (Tensor): (T,) on how many ranks each term is not finite.
    """
    return '; '.join(
        f'{name} = {value:g} on rank {get_rank()}' if not torch.isfinite(value)
        else f'{name} is not finite on another rank'
        for name, value, count in zip(names, values, bad_ranks) if count > 0)


@HOOKS.register_module()
class CheckFiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when a loss term is NaN or infinite.

    After iteration ``i`` (1-based, as the log counts) every value in the
    model's log variables (``loss`` and each ``loss_*`` term, the
    ``outputs`` of ``after_train_iter``) is tested with ``isfinite``; the
    per-term flags are summed over ranks (one all-reduce of T numbers), so
    every rank raises at the same iteration with the same terms named.
    Its priority (``NORMAL``) runs it before the logger and the checkpoint
    hook: a diverged state is neither logged as a result nor saved.
    """

    priority = 'NORMAL'

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[Dict[str, Tensor]] = None) -> None:
        if not outputs:
            return
        names = list(outputs)
        values = torch.stack([
            torch.as_tensor(outputs[name]).detach().float().reshape(())
            for name in names
        ])
        bad_ranks = (~torch.isfinite(values)).int()
        all_reduce(bad_ranks, op='sum')
        if bad_ranks.any():
            raise FloatingPointError(
                f'Non-finite loss at iteration {runner.iter + 1}: '
                f'{_non_finite_terms(names, values, bad_ranks)}')
