"""Equal-budget comparisons on the toy set: DR1Mask against mmdet's own
models, trained alike, evaluated at the same iterations and seeds.

Models (``--models``; every model of a pair given is compared with the
other):

- ``dr1mask-instance`` (configs/dr1mask/dr1mask_r18_fpn_toy.py) against
  ``condinst`` (configs/baselines/condinst_r18_fpn_toy.py): box and mask AP.
- ``dr1mask-panoptic`` (configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py)
  against ``panoptic-fpn`` (configs/baselines/
  panoptic-fpn_r18_fpn_toy-panoptic.py): PQ, PQ things, PQ stuff, and box
  and mask AP (Panoptic-FPN's from the same checkpoint evaluated as a plain
  Mask R-CNN, configs/baselines/mask-rcnn_r18_fpn_toy-from-panoptic-fpn.py,
  since mmdet's PanopticFPN returns no instances), and against
  ``separate-branch`` (configs/baselines/
  separate-branch_r18_fpn_toy-panoptic.py: the same detector and instance
  masks with BlendMask's separate semantic branch and heuristic fusion
  instead of the unified layer; the paper's Table 9 peer and the ablation
  "unified layer against separate branch").

``--coco-heads`` runs the panoptic pairs with the COCO configs' models
instead (configs/dr1mask/dr1mask_r18_fpn_coco-heads_toy-panoptic.py,
configs/baselines/panoptic-fpn_r18_fpn_coco-heads_toy-panoptic.py and
separate-branch_r18_fpn_coco-heads_toy-panoptic.py beside it: 80 + 53
classes, the COCO heads' widths and loss weights, ResNet-18 from scratch),
batch 1 on the first 4 toy training images relabelled into COCO's classes
and evaluated on the same images: whether each memorises a handful of
images, the smallest check a COCO training must pass. Its results go under
``WORK_DIR/coco-heads``.

Every model has the same ResNet-18 from scratch, FPN width, data, image
size, batch, optimizer (SGD lr 0.02, gradient clipping at 10) and schedule:
the toy configs' warm-up and one lr step, stretched to the largest of
``--iters`` (the step at the same fraction of the run, 650 / 800).

One training per model and seed: it runs to the largest of ``--iters`` and
keeps a checkpoint at each of them, and each checkpoint is evaluated on the
toy val set, so every seed costs one training whatever the number of
evaluation points (and an early point is the same run before its lr step,
not a run with its own shorter schedule). Seeds go to mmengine through
``--cfg-options randomness.seed=S``. Trainings and evaluations run
``tools/train.py`` and ``tools/test.py`` in subprocesses with
``--threads`` threads each, one after another; a training or evaluation whose
checkpoint or metrics are already in ``--work-dir`` is not repeated, and an
interrupted training resumes from its latest checkpoint (``--resume``), so
an interrupted comparison goes on where it stopped when run again.

Training time to an iteration is the sum of mmengine's per-iteration
``time`` (data loading, forward, backward, optimizer step; a checkpoint
save falls in the next iteration's), read from the run's
``vis_data/scalars.json``: process start-up, model and dataset building
are left out.

``--out`` writes one JSON row per model, seed and iteration: ``model``,
``seed``, ``iter``, ``train_time_s``, ``threads``, and the metrics in
points (``PQ``, ``PQ_th``, ``PQ_st`` for the panoptic models; ``bbox_AP``,
``segm_AP`` and the box AP of small, medium and large objects,
``bbox_AP_s``, ``bbox_AP_m``, ``bbox_AP_l``, for all). ``--markdown`` writes the mean and min-max over
seeds per model and iteration, the differences of the means per pair, and
the equal wall-clock comparison: the time budget is the faster model's
training time to the largest iteration, and each model is read at its
evaluated iteration whose mean training time is closest to that budget.

Usage::

    # the panoptic and instance pairs at 300 and 800 iterations, 3 seeds
    python tools/analysis_tools/equal_budget.py --iters 300 800 \\
        --out work_dirs/equal_budget/results.json \\
        --markdown work_dirs/equal_budget/results.md
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from benchmark_common import REPO, write_text

PANOPTIC = ['PQ', 'PQ_th', 'PQ_st']
INSTANCE = ['bbox_AP', 'segm_AP', 'bbox_AP_s', 'bbox_AP_m', 'bbox_AP_l']
# model -> (training config, {evaluation config: its metrics}), each
# evaluation run on the training's checkpoint
MODELS = {
    'dr1mask-instance': ('configs/dr1mask/dr1mask_r18_fpn_toy.py', {
        'configs/dr1mask/dr1mask_r18_fpn_toy.py': INSTANCE
    }),
    'condinst': ('configs/baselines/condinst_r18_fpn_toy.py', {
        'configs/baselines/condinst_r18_fpn_toy.py': INSTANCE
    }),
    'dr1mask-panoptic': ('configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py', {
        'configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py': PANOPTIC + INSTANCE
    }),
    'panoptic-fpn': ('configs/baselines/panoptic-fpn_r18_fpn_toy-panoptic.py', {
        'configs/baselines/panoptic-fpn_r18_fpn_toy-panoptic.py': PANOPTIC,
        'configs/baselines/mask-rcnn_r18_fpn_toy-from-panoptic-fpn.py':
        INSTANCE
    }),
    'separate-branch':
    ('configs/baselines/separate-branch_r18_fpn_toy-panoptic.py', {
        'configs/baselines/separate-branch_r18_fpn_toy-panoptic.py':
        PANOPTIC + INSTANCE
    }),
}
# --coco-heads: the COCO panoptic configs' models (80 + 53 classes) with
# ResNet-18 from scratch, trained and evaluated on a few toy images
# relabelled into COCO's classes (configs/dr1mask/_base_/toy_coco-heads.py)
COCO_HEADS_MODELS = {
    'dr1mask-panoptic':
    ('configs/dr1mask/dr1mask_r18_fpn_coco-heads_toy-panoptic.py', {
        'configs/dr1mask/dr1mask_r18_fpn_coco-heads_toy-panoptic.py':
        PANOPTIC + INSTANCE
    }),
    'panoptic-fpn':
    ('configs/baselines/panoptic-fpn_r18_fpn_coco-heads_toy-panoptic.py', {
        'configs/baselines/panoptic-fpn_r18_fpn_coco-heads_toy-panoptic.py':
        PANOPTIC
    }),
    'separate-branch':
    ('configs/baselines/separate-branch_r18_fpn_coco-heads_toy-panoptic.py', {
        'configs/baselines/separate-branch_r18_fpn_coco-heads_toy-panoptic.py':
        PANOPTIC + INSTANCE
    }),
}
# what configs/dr1mask/_base_/toy_coco-heads.py reads
COCO_HEADS_TOY_ROOT = 'data/toy_panoptic'
COCO_HEADS_IMAGES = 4
# (DR1Mask's model, the baseline)
PAIRS = [('dr1mask-instance', 'condinst'),
         ('dr1mask-panoptic', 'panoptic-fpn'),
         ('dr1mask-panoptic', 'separate-branch')]
# the metric rows' names -> (mmdet's metric key, scale to points)
METRICS = {
    'PQ': ('coco_panoptic/PQ', 1.0),
    'PQ_th': ('coco_panoptic/PQ_th', 1.0),
    'PQ_st': ('coco_panoptic/PQ_st', 1.0),
    'bbox_AP': ('coco/bbox_mAP', 100.0),
    'segm_AP': ('coco/segm_mAP', 100.0),
    # box AP of the small (area < 32^2), medium and large objects
    'bbox_AP_s': ('coco/bbox_mAP_s', 100.0),
    'bbox_AP_m': ('coco/bbox_mAP_m', 100.0),
    'bbox_AP_l': ('coco/bbox_mAP_l', 100.0),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    pairs = ', '.join(f'{a} / {b}' for a, b in PAIRS)
    parser = argparse.ArgumentParser(
        description='Equal-budget comparison on the toy set: one training '
        'per model and seed to the largest of --iters, each checkpoint at '
        '--iters evaluated (so a seed costs one training). Pairs: '
        f'{pairs}.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        '--models', nargs='+', choices=list(MODELS), metavar='MODEL',
        help=f'models to train and evaluate, of: {", ".join(MODELS)} '
        '(default: all; with --coco-heads: '
        f'{", ".join(COCO_HEADS_MODELS)})')
    parser.add_argument(
        '--coco-heads', action='store_true',
        help='the COCO panoptic configs\' models (80 + 53 classes) with '
        f'ResNet-18 from scratch, batch 1, trained and evaluated on the first '
        f'{COCO_HEADS_IMAGES} toy training images relabelled into COCO\'s '
        'classes (written by tools/misc/relabel_toy_coco_classes.py when '
        'missing): memorisation; results under WORK_DIR/coco-heads')
    parser.add_argument(
        '--iters', nargs='+', type=int, default=[300, 800],
        help='evaluation points (iterations, batch 4); the training runs to '
        'the largest')
    parser.add_argument(
        '--seeds', nargs='+', type=int, default=[0, 1, 2],
        help='seeds (randomness.seed); one training per model and seed')
    parser.add_argument(
        '--threads', type=int, default=1,
        help='OMP_NUM_THREADS of every training and evaluation')
    parser.add_argument(
        '--work-dir', default='work_dirs/equal_budget',
        help='checkpoints, logs and metrics, one folder per model and seed')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='more options for every training (e.g. a smaller batch for a '
        'smoke run)')
    parser.add_argument('--out', help='write the rows to this JSON file')
    parser.add_argument('--markdown', help='write the tables to this file')
    args = parser.parse_args(argv)
    table = COCO_HEADS_MODELS if args.coco_heads else MODELS
    if args.models is None:
        args.models = list(table)
    unknown = [m for m in args.models if m not in table]
    if unknown:
        parser.error(f'--models {unknown} have no --coco-heads variant: '
                     f'choose from {list(table)}')
    if min(args.iters) < 1 or min(args.seeds) < 0 or args.threads < 1:
        parser.error(f'--iters {args.iters} must be >= 1, --seeds '
                     f'{args.seeds} >= 0 and --threads {args.threads} >= 1')
    args.iters = sorted(set(args.iters))
    return args


def schedule_options(config: str, max_iters: int,
                     every: int) -> List[str]:
    """``--cfg-options`` that stretch ``config``'s schedule (warm-up, then
    MultiStepLR) to ``max_iters``, with a checkpoint and a log record every
    ``every`` iterations, all checkpoints kept, and no validation during
    training."""
    cfg = Config.fromfile(config)
    step = cfg.param_scheduler[1]
    if step.type != 'MultiStepLR':
        raise ValueError(
            f'{config}: param_scheduler[1] is {step.type}; equal_budget.py '
            'stretches a MultiStepLR schedule: add one to the config')
    milestones = [
        max(1, round(m * max_iters / cfg.train_cfg.max_iters))
        for m in step.milestones
    ]
    return [
        f'train_cfg.max_iters={max_iters}',
        # no validation while training: every checkpoint is tested after
        f'train_cfg.val_begin={max_iters + 1}',
        f'param_scheduler.1.end={max_iters}',
        f'param_scheduler.1.milestones={milestones}',
        f'default_hooks.checkpoint.interval={every}',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'default_hooks.checkpoint.save_best=None',
        # one record per `every` iterations, averaged over exactly those
        f'default_hooks.logger.interval={every}',
        f'log_processor.window_size={every}',
    ]


def run_tool(tool: str, args: List[str], threads: int, log: str) -> None:
    """Run tools/<tool> with ``args`` in a subprocess, output to ``log``;
    from the current folder, where the configs find ``data/``, as when the
    tool is run by hand."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    with open(log, 'w') as f:
        result = subprocess.run(
            [sys.executable, osp.join(REPO, 'tools', tool), *args], env=env,
            stdout=f, stderr=subprocess.STDOUT)
    if result.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(
            f'tools/{tool} {" ".join(args)} failed (exit code '
            f'{result.returncode}); its log is {log}:\n{tail}')


def train(model: str, config: str, seed: int, iters: List[int], threads: int,
          run_dir: str, cfg_options: List[str]) -> None:
    """Train ``model`` (its training ``config``, relative to the
    repository) with ``seed`` to max(iters), a checkpoint at each of
    ``iters``, unless its last checkpoint is in ``run_dir`` already; an
    interrupted training resumes from its latest checkpoint."""
    if osp.isfile(osp.join(run_dir, f'iter_{iters[-1]}.pth')):
        return
    config = osp.join(REPO, config)
    every = math.gcd(*iters)
    os.makedirs(run_dir, exist_ok=True)
    resume = ['--resume'] if osp.isfile(
        osp.join(run_dir, 'last_checkpoint')) else []
    print(f'training {model}, seed {seed}, to {iters[-1]} iterations',
          flush=True)
    run_tool('train.py', [
        config, '--work-dir', run_dir, *resume, '--cfg-options',
        f'randomness.seed={seed}',
        *schedule_options(config, iters[-1], every), *cfg_options
    ], threads, osp.join(run_dir, 'train.log'))


def train_times(run_dir: str) -> Dict[int, float]:
    """Training time to each logged iteration: the running sum of the
    per-iteration ``time`` of the run's ``vis_data/scalars.json``, oldest
    first (a resumed run's log continues from its checkpoint's
    iteration)."""
    logs = sorted(glob.glob(osp.join(run_dir, '*', 'vis_data',
                                     'scalars.json')))
    if not logs:
        raise FileNotFoundError(
            f'{run_dir} holds no */vis_data/scalars.json: remove the folder '
            'to train again')
    times: Dict[int, float] = {}
    for log in logs:
        with open(log) as f:
            for line in f:
                record = json.loads(line)
                if 'time' in record and 'iter' in record:
                    last = max((i for i in times if i < record['iter']),
                               default=0)
                    times[record['iter']] = times.get(last, 0.0) + \
                        record['time'] * (record['iter'] - last)
    return times


def evaluate(evaluations: Dict[str, List[str]], iteration: int,
             threads: int, run_dir: str) -> Dict[str, float]:
    """Every metric of a model's checkpoint at ``iteration``, in points:
    ``evaluations`` maps each evaluation config to the metrics read from it;
    each one's result is kept in ``run_dir`` and reused."""
    row = {}
    for config, keys in evaluations.items():
        name = osp.splitext(osp.basename(config))[0]
        test_dir = osp.join(run_dir, f'test_iter_{iteration}_{name}')
        metrics_file = osp.join(test_dir, 'metrics.json')
        if not osp.isfile(metrics_file):
            os.makedirs(test_dir, exist_ok=True)
            run_tool('test.py', [
                osp.join(REPO, config),
                osp.join(run_dir, f'iter_{iteration}.pth'), '--work-dir',
                test_dir
            ], threads, osp.join(test_dir, 'test.log'))
            # the test's metrics, as mmengine's logger hook dumps them
            dumps = sorted(glob.glob(osp.join(test_dir, '*', '*.json')))
            with open(dumps[-1]) as f:
                metrics = json.load(f)
            with open(metrics_file, 'w') as f:
                json.dump(metrics, f, indent=1)
        with open(metrics_file) as f:
            metrics = json.load(f)
        for key in keys:
            mmdet_key, scale = METRICS[key]
            if mmdet_key not in metrics and mmdet_key.startswith('coco/'):
                # CocoMetric gives no AP when nothing was detected (an early
                # checkpoint below the score threshold): AP 0
                metrics[mmdet_key] = 0.0
            if mmdet_key not in metrics:
                raise KeyError(
                    f'{metrics_file} has no {mmdet_key}: see the log next to '
                    'it, and remove the folder to evaluate again')
            row[key] = metrics[mmdet_key] * scale
    return row


def summary(values: List[float]) -> str:
    """``mean [min-max]`` with one decimal, or the value alone."""
    if len(values) == 1:
        return f'{values[0]:.1f}'
    return (f'{statistics.mean(values):.1f} '
            f'[{min(values):.1f}-{max(values):.1f}]')


def group(rows: List[dict]) -> Dict[Tuple[str, int], List[dict]]:
    """Rows by (model, iteration), in the order first seen."""
    groups: Dict[Tuple[str, int], List[dict]] = {}
    for row in rows:
        groups.setdefault((row['model'], row['iter']), []).append(row)
    return groups


def mean_of(rows: List[dict], key: str) -> Optional[float]:
    values = [row[key] for row in rows if key in row]
    return statistics.mean(values) if values else None


def markdown(rows: List[dict]) -> str:
    """Mean [min-max] over seeds per model and iteration; per pair, the
    differences of the means at each iteration and at equal training
    time."""
    groups = group(rows)
    keys = [k for k in METRICS if any(k in row for row in rows)]
    threads = ', '.join(sorted({str(row['threads']) for row in rows}))
    lines = [
        f'Mean [min-max] over seeds; training time in seconds on {threads} '
        'thread(s).', '',
        '| model | iter | seeds | train time (s) | ' + ' | '.join(keys) +
        ' |', '|---' * (4 + len(keys)) + '|'
    ]
    for (model, iteration), runs in groups.items():
        cells = [
            summary([run[k] for run in runs]) if k in runs[0] else '-'
            for k in keys
        ]
        seeds = ','.join(str(run['seed']) for run in runs)
        time_s = summary([run['train_time_s'] for run in runs])
        lines.append(f'| {model} | {iteration} | {seeds} | {time_s} | ' +
                     ' | '.join(cells) + ' |')
    for ours, theirs in PAIRS:
        ours_iters = sorted(i for m, i in groups if m == ours)
        theirs_iters = sorted(i for m, i in groups if m == theirs)
        if not ours_iters or not theirs_iters:
            continue
        shared = [k for k in keys
                  if k in groups[(ours, ours_iters[0])][0]
                  and k in groups[(theirs, theirs_iters[0])][0]]
        lines += [
            '', f'{ours} minus {theirs} (difference of the means):', '',
            '| comparison | ' + f'{ours} iter | {theirs} iter | '
            f'{ours} time (s) | {theirs} time (s) | ' +
            ' | '.join(shared) + ' |', '|---' * (5 + len(shared)) + '|'
        ]
        comparisons = [('equal iterations', i, i)
                       for i in ours_iters if i in theirs_iters]
        # equal wall-clock: the faster model's whole run is the budget
        time_of = {(m, i): mean_of(groups[(m, i)], 'train_time_s')
                   for m, i in groups if m in (ours, theirs)}
        budget = min(time_of[(ours, ours_iters[-1])],
                     time_of[(theirs, theirs_iters[-1])])

        def closest(model: str, iters: List[int]) -> int:
            return min(iters, key=lambda i: abs(time_of[(model, i)] - budget))

        comparisons.append((f'equal time (budget {budget:.0f} s)',
                            closest(ours, ours_iters),
                            closest(theirs, theirs_iters)))
        for name, i, j in comparisons:
            a, b = groups[(ours, i)], groups[(theirs, j)]
            cells = [f'{mean_of(a, k) - mean_of(b, k):+.1f}' for k in shared]
            lines.append(f'| {name} | {i} | {j} | {time_of[(ours, i)]:.0f} '
                         f'| {time_of[(theirs, j)]:.0f} | ' +
                         ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    models, work_dir = MODELS, args.work_dir
    if args.coco_heads:
        models, work_dir = COCO_HEADS_MODELS, osp.join(work_dir, 'coco-heads')
        ann_dir = osp.join(COCO_HEADS_TOY_ROOT, 'coco_heads')
        if not osp.isfile(osp.join(ann_dir, 'panoptic.json')):
            os.makedirs(work_dir, exist_ok=True)
            run_tool('misc/relabel_toy_coco_classes.py', [
                COCO_HEADS_TOY_ROOT, '--images',
                str(COCO_HEADS_IMAGES), '--out-dir', ann_dir
            ], args.threads, osp.join(work_dir, 'relabel.log'))
    rows = []
    # seed by seed, so that an interrupted comparison has every model of
    # its first seeds
    for seed in args.seeds:
        for model in args.models:
            run_dir = osp.abspath(osp.join(work_dir, model, f'seed_{seed}'))
            train(model, models[model][0], seed, args.iters, args.threads,
                  run_dir, args.cfg_options)
            times = train_times(run_dir)
            for iteration in args.iters:
                print(f'evaluating {model}, seed {seed}, iteration '
                      f'{iteration}', flush=True)
                rows.append(
                    dict(model=model, seed=seed, iter=iteration,
                         train_time_s=times[iteration], threads=args.threads,
                         **evaluate(models[model][1], iteration,
                                    args.threads, run_dir)))
                # written as they come, so a long comparison shows progress
                if args.out:
                    write_text(args.out, json.dumps(rows, indent=1) + '\n')
    table = markdown(rows)
    write_text(args.markdown, table)
    print(table)
    return rows


if __name__ == '__main__':
    main()
