"""Training cost of DR1Mask against mmdet's Panoptic-FPN, CondInst and
Mask2Former: seconds per iteration and peak memory per process.

One training iteration is what mmengine's runner does per batch after the
data preprocessor: the forward pass with the losses, their backward pass and
the optimizer step (``model(**data, mode='loss')``, ``parse_losses``,
``OptimWrapper.update_params``), timed from the preprocessed batch (the
preprocessing, padding the images, masks and semantic maps, is untimed, as
the data loading is). Each model is R-50, built from its config with random,
seeded weights, and trained with its config's optimizer (SGD for DR1Mask,
Panoptic-FPN and CondInst, AdamW with gradient clipping for Mask2Former) at
learning rate 0: the step does all its arithmetic but leaves the weights
unchanged, so that every round trains on the same weights and thus does the
same work (from random weights a real step size would soon give
exploding losses). Mask2Former's and FCOS's batch padding to 1024 x 1024
(an LSJ augmentation) is dropped so that they train on the same input as the
others, and FCOS (``fcos``: the detector alone, which DR1Mask and CondInst
build on) trains in float32 like the others, not with CUDA's AMP.

Synthetic COCO-like targets, built once from a seeded generator and the same
for every model: per image, ``--things`` thing instances (ellipses and star
polygons, radii log-uniform from 8 px to a quarter of the short side, later
ones occluding earlier ones, as BitmapMasks of their visible pixels with
their boxes and one of 80 classes) on ``--stuff`` (a range) stuff regions (a
Voronoi partition into distinct classes of 53), with ``gt_sem_seg`` holding
things 0-79 and stuff 80-132 as mmdet's panoptic loader gives them. Each
model reads what it trains on: instances (CondInst, DR1Mask instance),
``gt_sem_seg`` and instances (Panoptic-FPN, DR1Mask panoptic, Mask2Former).

Every model runs in its own process, so that its peak memory is its own:
``peak_mem_mb`` is the growth of the process's peak resident set (Linux
``VmHWM``, after ``malloc_trim`` and a reset of the high-water mark through
``/proc/self/clear_refs``) during its training iterations (warm-up
included) over the resident set before them, which already holds the
libraries, the weights and the batch; it counts the gradients, the
optimizer state and the activations at their peak, plus what the allocator
keeps. ``peak_rss_mb`` is the high-water mark itself. The processes live
side by side and the iterations are interleaved: every round runs one
iteration of each model in turn, the order rotated each round so that the
machine's drift hits every model alike; after one untimed warm-up iteration
each, the medians over ``--rounds`` rounds are reported.

``--stages`` then profiles one more iteration of each model with
``torch.profiler`` and splits it by stage (:func:`stage_times`): the
forward pass of each direct submodule's ``forward`` and loss methods
(``backbone.forward``, ``bbox_head.loss_by_feat``, ``mask_head.loss``, ...),
the backward pass of the autograd nodes each of them created, and the
optimizer step, and the activations each stage saves for the backward
pass. The profiler adds a little time per op, so the stages'
shares are what to read, not their sum against ``median_s``.

``--out`` writes one JSON row per model and input: ``model``, ``input``
([h, w]), ``batch``, ``median_s``, ``times_s`` (every round), ``warmup_s``,
``peak_mem_mb``, ``peak_rss_mb``, ``things`` and ``stuff`` (mean visible
instances and stuff regions per image), ``threads``; with ``--stages`` also
``stages``, a list of ``stage``, ``forward_ms``, ``backward_ms``,
``step_ms`` and ``saved_mib``: the MiB of activations that the stage's
forward saved for the backward pass (:class:`SavedBytes`), held until the
backward pass reaches them.

Usage::

    # minutes on 2 CPU cores: 384x576, batch 2, 2 rounds
    .venv/bin/python tools/analysis_tools/benchmark_train.py --quick \\
        --threads 1 --out work_dirs/benchmark/train-quick.json

    # the comparison of the targets: 800x1216, batch 2, 3 rounds, and
    # every model's iteration by stage
    .venv/bin/python tools/analysis_tools/benchmark_train.py --threads 1 \\
        --models dr1mask_panoptic dr1mask_instance panoptic_fpn condinst \\
        fcos --stages --out work_dirs/benchmark/train.json \\
        --markdown work_dirs/benchmark/train.md
"""
import argparse
import bisect
import copy
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData, PixelData
from torch import nn
from torch.autograd.profiler_util import FunctionEvent

from benchmark_common import (TITLES, ProcessMemory, build_model,
                              load_config, parse_size, ratio_cell,
                              write_text)
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules

NUM_THINGS, NUM_STUFF = 80, 53
IGNORE = 255
DEFAULT_MODELS = ('dr1mask_panoptic', 'dr1mask_instance', 'panoptic_fpn',
                  'condinst')
# FCOS alone: the detector DR1Mask and CondInst build on, their floor.
MODEL_NAMES = DEFAULT_MODELS + ('mask2former', 'fcos')
# (numerator, denominator, field, bound, column title): the targets.
TARGETS = (
    ('dr1mask_panoptic', 'panoptic_fpn', 'median_s', 1.00,
     'pan / Panoptic-FPN time'),
    ('dr1mask_panoptic', 'fcos', 'median_s', 1.10, 'pan / FCOS time'),
    ('dr1mask_panoptic', 'panoptic_fpn', 'peak_mem_mb', 1.00,
     'pan / Panoptic-FPN memory'),
    ('dr1mask_instance', 'condinst', 'median_s', 0.95,
     'inst / CondInst time'),
    ('dr1mask_instance', 'condinst', 'peak_mem_mb', 1.00,
     'inst / CondInst memory'),
)
# Methods of the model's direct submodules timed as stages by --stages:
# the forward pass and the loss computations mmdet's heads define.
STAGE_METHODS = ('forward', 'loss', 'loss_and_predict', 'loss_by_feat')
# The labels of the instrumented stages running now, innermost last.
RUNNING: List[str] = []
# Smallest radius of a thing, px; the largest is a quarter of the short side.
MIN_RADIUS = 8.0
# A thing occluded to fewer visible pixels is dropped.
MIN_VISIBLE = 16
QUICK = dict(sizes=[(384, 576)], rounds=2)
FULL = dict(sizes=[(800, 1216)], rounds=3)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Seconds per training iteration and peak memory of '
        'DR1Mask, Panoptic-FPN, CondInst (and Mask2Former), R-50')
    parser.add_argument('--sizes', type=parse_size, nargs='+',
                        help='input sizes HxW (default 800x1216)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--rounds', type=int,
                        help='timed iterations per model (default 3)')
    parser.add_argument('--quick', action='store_true',
                        help='defaults 384x576 and 2 rounds')
    parser.add_argument('--models', nargs='+', choices=MODEL_NAMES,
                        default=list(DEFAULT_MODELS))
    parser.add_argument('--things', type=int, default=20,
                        help='thing instances drawn per image')
    parser.add_argument('--stuff', type=int, nargs=2, default=[5, 10],
                        metavar=('MIN', 'MAX'),
                        help='stuff regions per image, drawn in this range')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the synthetic batch')
    parser.add_argument('--threads', type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--stages', action='store_true',
                        help='after the rounds, profile one more iteration '
                        'of each model and print its time and the '
                        'activations it saves for the backward pass, by '
                        'stage')
    parser.add_argument('--out', help='write every row to this JSON file')
    parser.add_argument('--markdown', help='write the table to this file')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch < 1 or args.rounds < 1 or args.things < 0:
        parser.error('--batch and --rounds must be >= 1, --things >= 0; got '
                     f'{args.batch}, {args.rounds}, {args.things}')
    if not 1 <= args.stuff[0] <= args.stuff[1] <= NUM_STUFF:
        parser.error(f'--stuff MIN MAX must satisfy 1 <= MIN <= MAX <= '
                     f'{NUM_STUFF}, got {args.stuff}')
    return args


# --- the synthetic batch ---------------------------------------------------


def stuff_regions(rng: np.random.Generator, size: Tuple[int, int],
                  count: int) -> np.ndarray:
    """(H, W) int64 region index 0..count-1: the Voronoi cells of ``count``
    random seeds (every seed lies in its own cell, so none is empty)."""
    h, w = size
    seeds = rng.uniform((0, 0), (h, w), size=(count, 2))
    ys, xs = np.arange(h)[:, None, None], np.arange(w)[None, :, None]
    dist = (ys - seeds[:, 0])**2 + (xs - seeds[:, 1])**2
    return dist.argmin(-1)


def draw_thing(rng: np.random.Generator, canvas: np.ndarray,
               value: int) -> None:
    """Draw one ellipse or star polygon of ``value`` onto ``canvas``."""
    h, w = canvas.shape
    radius = np.exp(rng.uniform(np.log(MIN_RADIUS), np.log(min(h, w) / 4)))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    if rng.random() < 0.5:
        axes = (int(radius), max(int(radius * rng.uniform(0.4, 1.0)), 1))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes,
                    rng.uniform(0, 180), 0, 360, value, thickness=-1)
        return
    n = rng.integers(5, 9)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.0, n)
    points = np.stack([cx + radii * np.cos(angles),
                       cy + radii * np.sin(angles)], -1)
    cv2.fillPoly(canvas, [points.round().astype(np.int32)], value)


def synthetic_image(rng: np.random.Generator, size: Tuple[int, int],
                    things: int, stuff: Tuple[int, int]) -> dict:
    """One image and its targets (module docstring), as numpy arrays:
    ``image`` (3, H, W) uint8, ``masks`` (N, H, W) uint8 visible pixels,
    ``bboxes`` (N, 4) xyxy float32, ``labels`` (N, ) int64, ``sem_seg``
    (H, W) uint8 (things 0-79, stuff 80-132)."""
    h, w = size
    count = int(rng.integers(stuff[0], stuff[1] + 1))
    regions = stuff_regions(rng, size, count)
    stuff_classes = NUM_THINGS + rng.choice(NUM_STUFF, count, replace=False)
    sem_seg = stuff_classes[regions]
    # Instance ids 1..things, 0 for stuff; later shapes overwrite earlier.
    ids = np.zeros(size, np.int32)
    for i in range(things):
        draw_thing(rng, ids, i + 1)
    areas = np.bincount(ids.ravel(), minlength=things + 1)[1:]
    visible = np.flatnonzero(areas >= MIN_VISIBLE) + 1
    masks = ids[None] == visible[:, None, None]
    labels = rng.integers(0, NUM_THINGS, len(visible))
    # Class of each id; the dropped ones' pixels keep their stuff class.
    id_class = np.full(things + 1, -1)
    id_class[visible] = labels
    sem_seg = np.where(id_class[ids] >= 0, id_class[ids], sem_seg)
    rows, cols = masks.any(2), masks.any(1)
    bboxes = np.stack([
        cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1),
        h - rows[:, ::-1].argmax(1)
    ], 1).astype(np.float32)
    # Colour per segment plus noise: some image structure, any will do.
    segment = np.where(ids > 0, 256 + ids, sem_seg)
    colours = rng.integers(0, 256, (256 + things + 1, 3))
    image = colours[segment] + rng.integers(-20, 21, (h, w, 3))
    return dict(
        image=np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1),
        masks=masks.astype(np.uint8), bboxes=bboxes, labels=labels,
        sem_seg=sem_seg.astype(np.uint8), stuff=count)


def synthetic_batch(size: Tuple[int, int], batch: int, things: int,
                    stuff: Tuple[int, int], seed: int) -> List[dict]:
    """``batch`` images of :func:`synthetic_image`, image ``i`` drawn from
    ``default_rng([seed, h, w, i])``: the same in every process."""
    return [
        synthetic_image(np.random.default_rng([seed, *size, i]), size,
                        things, stuff) for i in range(batch)
    ]


# --- the stages of one iteration --------------------------------------------

STAGE = 'stage: '
ITERATION, BACKWARD, OPTIMIZER = 'iteration', 'backward', 'optimizer step'
ACCUMULATE = 'accumulate gradients'
OUTSIDE = '(between the stages)'
ENGINE = '(autograd engine)'
EVALUATE = 'autograd::engine::evaluate_function: '


def instrument(model: nn.Module) -> None:
    """Run every :data:`STAGE_METHODS` method of the model's direct
    submodules (``backbone``, ``neck``, ``bbox_head``, ...) in a profiler
    range named ``'<submodule>.<method>'``."""
    for name, child in model.named_children():
        if name == 'data_preprocessor':
            continue
        for method in STAGE_METHODS:
            fn = getattr(child, method, None)
            if inspect.ismethod(fn):
                setattr(child, method, ranged(name + '.' + method, fn))


def ranged(label: str, fn: Callable) -> Callable:
    """``fn`` in a profiler range named ``STAGE + label``, with ``label`` on
    :data:`RUNNING` while it runs."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        RUNNING.append(label)
        try:
            with torch.profiler.record_function(STAGE + label):
                return fn(*args, **kwargs)
        finally:
            RUNNING.pop()

    return run


class SavedBytes:
    """MiB of the tensors autograd saves for the backward pass, by the stage
    whose forward saved them: within ``with saved.hooks():`` every storage
    a saved tensor views is counted once, whole, for the innermost
    :func:`ranged` stage running when it is first saved (:data:`OUTSIDE`
    if none). The model's parameters are not counted: they are resident
    anyway. This is the activation memory that each stage holds until the
    backward pass reaches it.

    Args:
        model (nn.Module): The model whose parameters are left out.
    """

    def __init__(self, model: nn.Module) -> None:
        self.mib: Dict[str, float] = {}
        self._parameters = {
            p.untyped_storage().data_ptr()
            for p in model.parameters()
        }
        # The storages themselves, so that an address freed and reused
        # within the forward pass still names one storage.
        self._seen: Dict[int, torch.UntypedStorage] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._parameters and key not in self._seen:
            self._seen[key] = storage
            label = RUNNING[-1] if RUNNING else OUTSIDE
            mib = storage.nbytes() / 2**20
            self.mib[label] = self.mib.get(label, 0.0) + mib
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        """The context in which the forward pass is counted."""
        return torch.autograd.graph.saved_tensors_hooks(
            self.pack, lambda tensor: tensor)


def stage_times(events: List[FunctionEvent]) -> List[dict]:
    """Milliseconds of forward and backward per stage of one profiled
    iteration.

    The events hold the ranges of :func:`instrument` (``STAGE + label``),
    one range named ``STAGE + BACKWARD`` around the backward pass, one
    ``STAGE + OPTIMIZER`` around the optimizer's step and ``zero_grad``
    and one ``STAGE + ITERATION`` around them all.
    A stage's forward time is the time in its ranges outside the stage
    ranges nested in them (``bbox_head.loss`` calling ``bbox_head.forward``
    leaves the forward to the latter). Its backward time is that of the
    autograd nodes its forward created: each node's
    ``evaluate_function`` event carries the sequence number of the forward
    op that recorded it, and the op belongs to the innermost stage range
    around it; a node with no op of that number (a custom autograd
    function's) belongs to the stage of the closest op recorded before it,
    as numbers are given out in forward order. ``AccumulateGrad`` nodes,
    which add the parameters' gradients, are :data:`ACCUMULATE`; what
    the backward range holds besides its nodes is :data:`ENGINE`, and the
    forward time outside every stage range (the detector's own code, the
    losses' sum) is :data:`OUTSIDE`.

    Returns:
        list[dict]: ``stage``, ``forward_ms``, ``backward_ms`` and
        ``step_ms`` (the optimizer's, in its own row), the stages in the
        order they first ran.
    """
    ranges = sorted((e for e in events if e.name.startswith(STAGE)),
                    key=lambda e: e.time_range.start)
    named = (ITERATION, BACKWARD, OPTIMIZER)
    special = {
        e.name[len(STAGE):]: e
        for e in ranges if e.name[len(STAGE):] in named
    }
    ranges = [e for e in ranges if e.name[len(STAGE):] not in special]
    if set(special) != set(named):
        raise ValueError(f'stage_times needs the ranges {named}; found '
                         f'{sorted(special)}')
    backward = special[BACKWARD].time_range

    def innermost(t: float) -> Optional[FunctionEvent]:
        inside = [r for r in ranges
                  if r.time_range.start <= t < r.time_range.end]
        return inside[-1] if inside else None

    # Microseconds, as the profiler gives them.
    forward_us: Dict[str, float] = {}
    for r in ranges:
        label = r.name[len(STAGE):]
        forward_us[label] = forward_us.get(label, 0.0) + r.cpu_time_total
    # Subtract each range from the innermost range around it; the outermost
    # ones from the iteration.
    forward_us[OUTSIDE] = (special[ITERATION].cpu_time_total -
                        special[BACKWARD].cpu_time_total -
                        special[OPTIMIZER].cpu_time_total)
    for i, r in enumerate(ranges):
        outer = [o for o in ranges[:i]
                 if o.time_range.end >= r.time_range.end]
        label = outer[-1].name[len(STAGE):] if outer else OUTSIDE
        forward_us[label] -= r.cpu_time_total
    backward_us = {label: 0.0 for label in forward_us if label != OUTSIDE}
    backward_us.update({OUTSIDE: 0.0, ACCUMULATE: 0.0})
    # Forward ops: the sequence number of each, and the stage it ran in.
    numbered: Dict[int, str] = {}
    for e in events:
        if (e.sequence_nr < 0 or e.name.startswith(STAGE)
                or e.time_range.start >= backward.start
                or e.sequence_nr in numbered):
            continue
        stage = innermost(e.time_range.start)
        numbered[e.sequence_nr] = (stage.name[len(STAGE):]
                                   if stage is not None else OUTSIDE)
    numbers = sorted(numbered)
    nodes_us = 0.0
    for e in events:
        if not (e.name.startswith(EVALUATE)
                and backward.start <= e.time_range.start < backward.end):
            continue
        us = e.cpu_time_total
        nodes_us += us
        if e.sequence_nr < 0:
            backward_us[ACCUMULATE] += us
            continue
        at = bisect.bisect_right(numbers, e.sequence_nr) - 1
        label = numbered[numbers[at]] if at >= 0 else OUTSIDE
        backward_us[label] += us
    rows = [
        dict(stage=label, forward_ms=forward_us.get(label, 0.0) / 1e3,
             backward_ms=backward_us[label] / 1e3, step_ms=0.0)
        for label in backward_us
    ]
    rows.append(dict(stage=ENGINE, forward_ms=0.0,
                     backward_ms=(special[BACKWARD].cpu_time_total -
                                  nodes_us) / 1e3, step_ms=0.0))
    rows.append(dict(stage=OPTIMIZER, forward_ms=0.0, backward_ms=0.0,
                     step_ms=special[OPTIMIZER].cpu_time_total / 1e3))
    return rows


# --- one model's process -----------------------------------------------------


def to_data(images: List[dict]) -> dict:
    """The data loader's output for ``images``: uint8 image tensors and
    DetDataSamples with ``gt_instances`` and ``gt_sem_seg``."""
    samples = []
    for i, image in enumerate(images):
        h, w = image['sem_seg'].shape
        sample = DetDataSample(
            metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w),
                          scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=torch.from_numpy(image['bboxes']),
            labels=torch.from_numpy(image['labels']),
            masks=BitmapMasks(image['masks'], h, w))
        sample.gt_sem_seg = PixelData(
            sem_seg=torch.from_numpy(image['sem_seg'])[None])
        samples.append(sample)
    return dict(inputs=[torch.from_numpy(i['image']) for i in images],
                data_samples=samples)


class Trainer:
    """One model, its optimizer and the preprocessed batch, in this
    process; :meth:`step` runs and times one training iteration."""

    def __init__(self, name: str, args: argparse.Namespace,
                 size: Tuple[int, int]) -> None:
        if args.threads:
            torch.set_num_threads(args.threads)
        register_all_modules()
        # Keep init_weights' per-parameter report out of the output.
        MMLogger.get_instance('benchmark_train', log_level='WARNING')
        cfg = load_config(name)
        # Same input and arithmetic for all: no LSJ batch padding to
        # 1024 x 1024 (Mask2Former, FCOS), float32 (FCOS's config trains
        # with CUDA AMP).
        cfg.model.data_preprocessor.batch_augments = None
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'OptimWrapper'
            cfg.optim_wrapper.pop('loss_scale', None)
        cfg.optim_wrapper.optimizer.lr = 0.0  # same weights every round
        self.model = build_model(cfg, torch.device('cpu')).train()
        self.optim_wrapper = build_optim_wrapper(self.model,
                                                 cfg.optim_wrapper)
        images = synthetic_batch(size, args.batch, args.things,
                                 tuple(args.stuff), args.seed)
        self.things = statistics.mean(len(i['labels']) for i in images)
        self.stuff = statistics.mean(i['stuff'] for i in images)
        self.data = to_data(images)
        self.memory = ProcessMemory()
        if args.stages:
            instrument(self.model)

    def step(self) -> float:
        """One iteration's seconds; the preprocessing of a fresh copy of
        the batch (it pads the samples' masks in place) is untimed."""
        data = self.model.data_preprocessor(copy.deepcopy(self.data), True)
        start = time.perf_counter()
        losses = self.model(**data, mode='loss')
        loss, _ = self.model.parse_losses(losses)
        self.optim_wrapper.update_params(loss)
        return time.perf_counter() - start

    def stages(self) -> List[dict]:
        """One more iteration, profiled: :func:`stage_times`, each row with
        ``saved_mib``, what its stage saved for the backward pass
        (:class:`SavedBytes`). The optimizer wrapper's ``update_params`` is
        its three calls, so that the backward pass and the step get ranges
        of their own."""
        data = self.model.data_preprocessor(copy.deepcopy(self.data), True)
        saved = SavedBytes(self.model)
        with torch.profiler.profile() as prof, \
                torch.profiler.record_function(STAGE + ITERATION):
            with saved.hooks():
                losses = self.model(**data, mode='loss')
            loss, _ = self.model.parse_losses(losses)
            with torch.profiler.record_function(STAGE + BACKWARD):
                self.optim_wrapper.backward(loss)
            with torch.profiler.record_function(STAGE + OPTIMIZER):
                self.optim_wrapper.step()
                self.optim_wrapper.zero_grad()
        rows = stage_times(prof.events())
        for row in rows:
            row['saved_mib'] = saved.mib.get(row['stage'], 0.0)
        return rows


def worker(spec: str) -> None:
    """The loop of one model's process: build, then answer the parent's
    commands on stdin (``reset``, ``step``, ``stats``) with one JSON line
    each on the original stdout; everything else printed goes to stderr."""
    answers = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    name, argv, size = json.loads(spec)
    trainer = Trainer(name, parse_args(argv), tuple(size))
    answers.write(json.dumps(dict(ready=True)) + '\n')
    answers.flush()
    for command in sys.stdin:
        command = command.strip()
        if command == 'reset':
            trainer.memory.reset()
            answer = {}
        elif command == 'step':
            answer = dict(seconds=trainer.step())
        elif command == 'stages':
            answer = dict(stages=trainer.stages())
        elif command == 'stats':
            answer = dict(peak_mem_mb=trainer.memory.peak_growth_mb(),
                          peak_rss_mb=trainer.memory.peak_mb(),
                          things=trainer.things, stuff=trainer.stuff)
        else:
            raise ValueError(f'benchmark_train worker: unknown command '
                             f'{command!r}')
        answers.write(json.dumps(answer) + '\n')
        answers.flush()


# --- the parent: interleaved rounds ----------------------------------------


class Worker:
    """The parent's handle on one model's process."""

    def __init__(self, name: str, argv: Sequence[str],
                 size: Tuple[int, int], threads: Optional[int]) -> None:
        self.name = name
        env = dict(os.environ)
        if threads:
            env['OMP_NUM_THREADS'] = str(threads)
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--worker',
             json.dumps([name, list(argv), list(size)])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            text=True)

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f'the {self.name} process exited with code '
                               f'{code} (its error is printed above)')
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + '\n')
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure_size(args: argparse.Namespace, argv: Sequence[str],
                 size: Tuple[int, int]) -> List[dict]:
    """All the rows of one input size."""
    log(f'{size[0]}x{size[1]}, batch {args.batch}: building '
        f'{", ".join(args.models)} (one process each)')
    workers = [Worker(n, argv, size, args.threads) for n in args.models]
    try:
        for w in workers:
            w.read()  # ready
        warmup = {}
        for w in workers:
            w.ask('reset')
            warmup[w.name] = w.ask('step')['seconds']
            log(f'  warm-up {w.name}: {warmup[w.name]:.2f} s')
        times: Dict[str, List[float]] = {w.name: [] for w in workers}
        for round_ in range(args.rounds):
            # Rotate the order so that drift and position hit every model
            # alike.
            shift = round_ % len(workers)
            for w in workers[shift:] + workers[:shift]:
                times[w.name].append(w.ask('step')['seconds'])
            log(f'  round {round_ + 1}/{args.rounds}: ' + ', '.join(
                f'{n} {t[-1]:.2f} s' for n, t in times.items()))
        rows = []
        for w in workers:
            rows.append(
                dict(model=w.name, input=list(size), batch=args.batch,
                     median_s=statistics.median(times[w.name]),
                     times_s=times[w.name], warmup_s=warmup[w.name],
                     threads=args.threads, **w.ask('stats')))
            if args.stages:
                log(f'  profiling {w.name} by stage')
                rows[-1].update(w.ask('stages'))
    finally:
        for w in workers:
            w.close()
    return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def markdown(rows: List[dict], args: argparse.Namespace) -> str:
    """One table per input size: every model, then the target ratios."""
    setup = (f'CPU, {args.threads or "default"} threads, batch '
             f'{args.batch}, median of {args.rounds} rounds')
    parts = []
    for size in dict.fromkeys(tuple(r['input']) for r in rows):
        by_model = {r['model']: r for r in rows if tuple(r['input']) == size}
        lines = [
            '| model | s / iteration | peak mem (MiB) | peak RSS (MiB) '
            '| things / image | stuff / image |', '|---|---|---|---|---|---|'
        ]
        for row in by_model.values():
            lines.append(
                f"| {TITLES[row['model']]} | {row['median_s']:.2f} | "
                f"{row['peak_mem_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
                f"{row['things']:.1f} | {row['stuff']:.1f} |")
        lines += ['', '| target | ratio |', '|---|---|']
        for num, den, field, bound, title in TARGETS:
            lines.append(f'| {title} (<= {bound:.2f}) | '
                         f'{ratio_cell(by_model, num, den, field, bound)} |')
        parts.append(f'Training, {size[0]}x{size[1]} ({setup}):\n\n' +
                     '\n'.join(lines))
        parts += [
            stage_table(row, size, args.threads) for row in by_model.values()
            if 'stages' in row
        ]
    return '\n\n'.join(parts) + '\n'


def stage_table(row: dict, size: Tuple[int, int],
                threads: Optional[int]) -> str:
    """One model's profiled iteration by stage (:func:`stage_times`)."""
    stages = row['stages']
    total = sum(s['forward_ms'] + s['backward_ms'] + s['step_ms']
                for s in stages)
    lines = [
        f"{TITLES[row['model']]} by stage, {size[0]}x{size[1]} (one "
        f'profiled iteration, {threads or "default"} threads):', '',
        '| stage | forward (ms) | backward (ms) | total (ms) | share '
        '| saved for backward (MiB) |', '|---|---|---|---|---|---|'
    ]
    for s in stages:
        ms = s['forward_ms'] + s['backward_ms'] + s['step_ms']
        lines.append(f"| {s['stage']} | {s['forward_ms']:.0f} | "
                     f"{s['backward_ms']:.0f} | {ms:.0f} | "
                     f'{100 * ms / total:.1f} % | {s["saved_mib"]:.0f} |')
    saved = sum(s['saved_mib'] for s in stages)
    lines.append(f'| all | | | {total:.0f} | | {saved:.0f} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return []
    rows = []
    for size in args.sizes:
        rows += measure_size(args, argv, size)
    table = markdown(rows, args)
    print(table, end='')
    write_text(args.out, json.dumps(rows, indent=1))
    write_text(args.markdown, table)
    return rows


if __name__ == '__main__':
    main()
