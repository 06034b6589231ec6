"""DDP on the CPU: 2 gloo ranks of batch 1 against 1 process of batch 2.

The ranks are started once (torch.multiprocessing, gloo, a file store) for
every case below; each rank runs two forward / backward passes of the same
small DR1Mask through mmengine's ``MMDistributedDataParallel`` with
``find_unused_parameters=False`` (the runner's default), where a parameter
that gets no gradient on one rank makes DDP hang or fail, and writes its
all-reduced losses and its gradients. The reference is the same model on the
same two images as one batch in this process. Last, each rank runs
``CheckFiniteLossHook`` on log variables that are NaN on rank 1 only.

The model is ``small_model_cfg``'s: GroupNorm in the heads and DR1Basis,
the backbone's BatchNorm frozen (``norm_eval=True``), so no statistic
depends on how the batch is split. Both images of a case have one size:
batching pads the smaller image, and the padded locations would be extra
negatives that two batches of 1 do not have.
"""
import datetime
import time
from types import SimpleNamespace
from typing import List, Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.model import MMDistributedDataParallel

from projects.dr1mask.engine.check_finite_loss_hook import CheckFiniteLossHook
from conftest import (NUM_THINGS, build_model, make_sample, preprocess,
                      small_model_cfg)

IMG_HW = (64, 96)
CASES = {
    # One rank's image has no instance: it has no positive location and no
    # mask target, so the mask loss must still reach every parameter and
    # take part in the other rank's all-reduce of its normaliser.
    'empty': [
        dict(boxes=[[4, 6, 40, 50], [44, 10, 90, 60]], labels=[0, 3]),
        dict(boxes=[], labels=[], stuff_label=NUM_THINGS + 1),
    ],
    # Different numbers of positives, mask pixels and (with the void block)
    # panoptic pixels per rank: every normaliser must be the global one.
    'void': [
        dict(boxes=[[4, 6, 40, 50], [44, 10, 90, 60]], labels=[0, 3]),
        dict(boxes=[[10, 4, 70, 56]], labels=[1], stuff_label=NUM_THINGS + 2,
             void=(slice(40, 64), slice(0, 30))),
    ],
}
WORLD_SIZE = 2
STEPS = 2
# Summation order differs between one batch and two all-reduced halves; in
# float32 (eps 1.2e-7) that moved losses by up to 1.2e-7 relative and
# gradients (largest 1.4) by up to 7e-7 absolute. A per-rank normaliser
# where a global one is due moved the panoptic loss by 2e-3 relative and
# gradients by 1e-2 ('void' case, measured).
RTOL, ATOL = 1e-4, 1e-6


def case_batch(model: torch.nn.Module, specs: List[dict]) -> dict:
    """The case's images as one preprocessed training batch."""
    images, samples = [], []
    for spec in specs:
        spec = dict(spec)
        void = spec.pop('void', None)
        image, sample = make_sample(IMG_HW, **spec)
        if void is not None:
            sample.gt_sem_seg.sem_seg[0][void] = 255
        images.append(image)
        samples.append(sample)
    return preprocess(model, images, samples, training=True)


def losses_and_grads(model: torch.nn.Module, data: dict,
                     wrapper: Optional[torch.nn.Module] = None) -> dict:
    """One forward / backward pass of ``model``, through its DDP
    ``wrapper`` if given: the logged loss terms, the gradient of every
    trainable parameter that has one, and the names of those without."""
    model.zero_grad(set_to_none=True)
    loss, log_vars = model.parse_losses((wrapper or model)(**data,
                                                           mode='loss'))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters()
                 if p.requires_grad]
    return dict(
        losses={k: v.detach() for k, v in log_vars.items()},
        grads={n: p.grad.clone() for n, p in trainable if p.grad is not None},
        no_grad=[n for n, p in trainable if p.grad is None])


def rank_worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group(
        'gloo', init_method=f'file://{store}', rank=rank,
        world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = build_model(small_model_cfg())
    ddp = MMDistributedDataParallel(module=model)
    for name, specs in CASES.items():
        data = case_batch(model, [specs[rank]])
        # DDP reports a parameter left without gradient by one step when
        # the next step starts, if the first did not hang.
        for _ in range(STEPS):
            result = losses_and_grads(model, data, ddp)
        for value in result['losses'].values():
            dist.all_reduce(value)
            value /= WORLD_SIZE
        torch.save(result, f'{out_dir}/{name}_rank{rank}.pt')
    # The mask loss of rank 1 alone is NaN after iteration 7.
    log_vars = dict(loss=torch.tensor(1.0),
                    loss_mask=torch.tensor(float('nan') if rank else 0.5))
    try:
        CheckFiniteLossHook().after_train_iter(
            SimpleNamespace(iter=6), 0, outputs=log_vars)
        message = 'no error'
    except FloatingPointError as error:
        message = str(error)
    torch.save(message, f'{out_dir}/nan_rank{rank}.pt')
    # DDP's reducer goes while the process group it uses is alive: torn
    # down after it, the rank can hang at exit.
    del ddp
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """Per case, the result of each rank (a list of WORLD_SIZE dicts)."""
    out = tmp_path_factory.mktemp('ddp')
    context = mp.start_processes(
        rank_worker, args=(str(out / 'store'), str(out)),
        nprocs=WORLD_SIZE, join=False, start_method='spawn')
    deadline = time.monotonic() + 300
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, 'the ranks hang'
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return {
        name: [torch.load(out / f'{name}_rank{r}.pt')
               for r in range(WORLD_SIZE)]
        for name in [*CASES, 'nan']
    }


def test_a_rank_without_instances_finishes_the_step(ranks):
    """Both steps complete and every trainable parameter has a gradient,
    the same all-reduced one, on both ranks."""
    first, second = ranks['empty']
    assert first['no_grad'] == second['no_grad'] == []
    assert first['grads'].keys() == second['grads'].keys()
    for name, grad in first['grads'].items():
        assert torch.equal(grad, second['grads'][name]), name


@pytest.mark.parametrize('case', list(CASES))
def test_two_ranks_of_batch_one_equal_one_process_of_batch_two(ranks, case):
    torch.manual_seed(0)
    model = build_model(small_model_cfg())
    expected = losses_and_grads(model, case_batch(model, CASES[case]))
    for rank, result in enumerate(ranks[case]):
        assert result['losses'].keys() == expected['losses'].keys()
        for name, value in expected['losses'].items():
            torch.testing.assert_close(
                result['losses'][name], value, rtol=RTOL, atol=ATOL,
                msg=lambda m: f'{name}, rank {rank}: {m}')
        assert result['no_grad'] == expected['no_grad'] == []
        assert result['grads'].keys() == expected['grads'].keys()
        for name, grad in expected['grads'].items():
            torch.testing.assert_close(
                result['grads'][name], grad, rtol=RTOL, atol=ATOL,
                msg=lambda m: f'{name}, rank {rank}: {m}')


def test_a_non_finite_loss_on_one_rank_stops_every_rank(ranks):
    assert ranks['nan'] == [
        'Non-finite loss at iteration 7: '
        'loss_mask is not finite on another rank',
        'Non-finite loss at iteration 7: loss_mask = nan on rank 1',
    ]
