"""PQ over a grid of DR1Mask's panoptic post-processing thresholds, from one
pass of the network.

Everything after the network is post-processing (``DR1Mask.predict_by_feat``
reads its thresholds from ``model.test_cfg``), so the network runs once over
the config's test dataloader and every setting of the grid re-runs only the
post-processing on the kept outputs, then mmdet's ``CocoPanopticMetric`` (the
config's ``test_evaluator`` entry; its other metrics are skipped). The swept
values, each a list (``--score-thr 0.2 0.3``):

- ``--score-thr``: ``test_cfg.panoptic.score_thr``, the detections that
  become thing segments;
- ``--mask-overlap``: ``test_cfg.panoptic.mask_overlap``, the mask NMS IoU
  (1 keeps every instance);
- ``--stuff-area-limit``: ``test_cfg.panoptic.stuff_area_limit``, stuff
  segments of fewer pixels become void;
- ``--instance-score-thr``: ``test_cfg.score_thr``, the dense head's
  candidate threshold before NMS.

Without a flag, its values are around the config's own (see ``--help``);
the config's own setting is always evaluated, marked ``default``. Prints one
row per setting, best PQ first, then the best setting and the config's own;
``--out`` writes the rows as JSON (``score_thr``, ``mask_overlap``,
``stuff_area_limit``, ``instance_score_thr``, ``PQ``, ``PQ_th``, ``PQ_st``
in points as ``CocoPanopticMetric`` reports them, and ``default``).

Memory: the network's outputs for every test image are kept, in host memory,
until the sweep ends: the FPN levels, the basis and the dense head's raw
per-location outputs (class scores, boxes, centerness, box features,
contexts) -- the raw outputs, not the detections, so that the instance score
threshold, which decides the detections, is swept too. That is roughly
100 MB for an 800 x 1333 COCO image with an R-50: fine for the toy set and a
few hundred images; for COCO take a subset, e.g. ``--cfg-options
test_dataloader.dataset.indices=300`` (the first 300 images).

Usage::

    python tools/analysis_tools/sweep_panoptic.py \\
        configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py \\
        work_dirs/toy/iter_800.pth \\
        --score-thr 0.2 0.3 0.4 --out work_dirs/toy/sweep.json
"""
import argparse
import itertools
import json
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.device import get_device
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmengine.utils import import_modules_from_strings

import projects.dr1mask.engine.safe_checkpoints  # noqa: F401  weights_only
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from projects.dr1mask.models.detectors import DR1Mask, DR1MaskFeatures

from benchmark_common import write_text

METRICS = ('PQ', 'PQ_th', 'PQ_st')
PANOPTIC_METRIC = 'CocoPanopticMetric'
CPU = torch.device('cpu')
# The default grid, each with the config's own value added.
SCORE_THRS = (0.2, 0.3, 0.4, 0.5)
MASK_OVERLAPS = (0.3, 0.5, 0.7)
# multiples of the config's stuff_area_limit
STUFF_AREA_FACTORS = (0, 0.25, 0.5, 1, 2)
# flag -> what its values are, for the range errors
UNIT_RANGE_FLAGS = {
    '--score-thr': 'a score threshold',
    '--mask-overlap': 'an IoU threshold',
    '--instance-score-thr': 'a score threshold',
}


class Setting(NamedTuple):
    """One point of the grid: the test_cfg values it sets."""
    score_thr: float
    mask_overlap: float
    stuff_area_limit: int
    instance_score_thr: float


# the network's outputs for one batch and its samples' metainfo
Kept = Tuple[DR1MaskFeatures, List[dict]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='PQ of a panoptic DR1Mask checkpoint over a grid of '
        'post-processing thresholds, the network run once.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='panoptic DR1Mask config')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--score-thr', nargs='+', type=float, metavar='THR',
        help='test_cfg.panoptic.score_thr values; None: '
        f'{" ".join(map(str, SCORE_THRS))} and the config\'s')
    parser.add_argument(
        '--mask-overlap', nargs='+', type=float, metavar='IOU',
        help='test_cfg.panoptic.mask_overlap values; None: '
        f'{" ".join(map(str, MASK_OVERLAPS))} and the config\'s')
    parser.add_argument(
        '--stuff-area-limit', nargs='+', type=int, metavar='PIXELS',
        help='test_cfg.panoptic.stuff_area_limit values; None: the '
        'config\'s times ' + ' '.join(map(str, STUFF_AREA_FACTORS)))
    parser.add_argument(
        '--instance-score-thr', nargs='+', type=float, metavar='THR',
        help='test_cfg.score_thr values (the dense head\'s candidates); '
        'None: the config\'s')
    parser.add_argument('--out', help='write the rows to this JSON file')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        metavar='KEY=VALUE', help='override settings of the config, as '
        'tools/test.py')
    args = parser.parse_args(argv)
    for flag, what in UNIT_RANGE_FLAGS.items():
        for value in getattr(args, flag[2:].replace('-', '_')) or []:
            if not 0 <= value <= 1:
                parser.error(f'{flag} {value} is outside [0, 1]: it is '
                             f'{what}')
    for value in args.stuff_area_limit or []:
        if value < 0:
            parser.error(f'--stuff-area-limit {value} is negative: it is an '
                         'area in pixels')
    return args


def check_panoptic_test_cfg(cfg: Config, config: str) -> None:
    """An error naming what ``model.test_cfg.panoptic`` lacks: without it
    the model predicts no panoptic segmentation."""
    panoptic = (cfg.model.get('test_cfg') or {}).get('panoptic')
    if panoptic is None:
        raise ValueError(
            f'{config}: model.test_cfg.panoptic is missing, so the model '
            'predicts no panoptic segmentation and there is no PQ to sweep: '
            'use a panoptic config (e.g. '
            'configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py)')
    missing = [
        key for key in ('score_thr', 'mask_overlap', 'stuff_area_limit')
        if key not in panoptic
    ]
    if missing:
        raise ValueError(f'{config}: model.test_cfg.panoptic has no '
                         f'{", ".join(missing)}: set them in the config')


def grid(args: argparse.Namespace,
         test_cfg: ConfigDict) -> Tuple[List[Setting], Setting]:
    """The settings to evaluate, in grid order, and the config's own (last,
    if the flags leave it out of the grid)."""
    panoptic = test_cfg.panoptic
    # the dense head's default when the config sets none
    own = Setting(panoptic.score_thr, panoptic.mask_overlap,
                  panoptic.stuff_area_limit, test_cfg.get('score_thr', 0.0))
    axes = [
        args.score_thr or sorted({*SCORE_THRS, own.score_thr}),
        args.mask_overlap or sorted({*MASK_OVERLAPS, own.mask_overlap}),
        args.stuff_area_limit or sorted(
            {round(f * own.stuff_area_limit) for f in STUFF_AREA_FACTORS}),
        args.instance_score_thr or [own.instance_score_thr],
    ]
    # a value given twice would evaluate its settings twice
    axes = [list(dict.fromkeys(values)) for values in axes]
    settings = [Setting(*values) for values in itertools.product(*axes)]
    print(' x '.join(f'{len(values)} {name}'
                     for name, values in zip(Setting._fields, axes)) +
          f' = {len(settings)} settings' +
          ('' if own in settings else ", and the config's own"))
    if own not in settings:
        settings.append(own)
    return settings, own


def build_model(cfg: Config, config: str) -> DR1Mask:
    """The config's model, or an error when it is no panoptic DR1Mask (the
    sweep re-runs ``DR1Mask.predict_by_feat`` on ``DR1MaskFeatures``)."""
    model = MODELS.build(cfg.model)
    if not isinstance(model, DR1Mask):
        raise ValueError(
            f'{config}: model.type={cfg.model.type} is no DR1Mask: the sweep '
            're-runs DR1Mask\'s post-processing (predict_by_feat) on its '
            'network\'s outputs')
    if not model.with_panoptic:
        raise ValueError(
            f'{config}: model.panoptic_head is None, so the model predicts no '
            'panoptic segmentation and there is no PQ to sweep: use a '
            'panoptic config (e.g. '
            'configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py)')
    # The sweep sets its values in the detector's test_cfg; mmdet hands the
    # heads that object, not a copy. A head holding a copy would ignore the
    # sweep and every setting would report the same PQ.
    shared = (model.test_cfg, model.test_cfg.panoptic)
    for name, module in model.named_modules():
        head_cfg = getattr(module, 'test_cfg', None)
        if name and head_cfg is not None and not any(head_cfg is s
                                                     for s in shared):
            raise ValueError(
                f'{config}: model.{name}.test_cfg is a copy of the '
                'detector\'s, so the values the sweep sets would not reach it')
    return model


def panoptic_metric(cfg: Config, config: str) -> dict:
    """The config's ``CocoPanopticMetric`` entry of ``test_evaluator``: the
    sweep reports PQ, and the other metrics would cost time at every
    setting."""
    entries = cfg.get('test_evaluator') or []
    if not isinstance(entries, list):
        entries = [entries]
    panoptic = [
        e for e in entries
        if str(e.get('type')).rsplit('.', 1)[-1] == PANOPTIC_METRIC
    ]
    if len(panoptic) != 1:
        raise ValueError(
            f'{config}: test_evaluator has {len(panoptic)} '
            f'{PANOPTIC_METRIC} entries; the sweep reports the PQ of one: '
            'give it exactly one')
    return panoptic[0]


@torch.no_grad()
def run_network(model: DR1Mask, loader: torch.utils.data.DataLoader) -> \
        List[Kept]:
    """The network's outputs for every batch of ``loader``, in host memory
    (usually larger than the accelerator's), and the metainfo of its
    samples: all that ``predict_by_feat`` and ``CocoPanopticMetric`` read
    of them, so the ground truth is not kept."""
    kept = []
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        kept.append((model._forward(data['inputs']).map(
            lambda t: t.to(CPU)),
                     [sample.metainfo for sample in data['data_samples']]))
    return kept


@torch.no_grad()
def evaluate(model: DR1Mask, kept: List[Kept], evaluator: Evaluator,
             setting: Setting, size: int) -> Dict[str, float]:
    """PQ, PQ_th and PQ_st of ``setting``: its values set in
    ``model.test_cfg``, the post-processing re-run on the kept outputs."""
    model.test_cfg.score_thr = setting.instance_score_thr
    model.test_cfg.panoptic.update(
        score_thr=setting.score_thr,
        mask_overlap=setting.mask_overlap,
        stuff_area_limit=setting.stuff_area_limit)
    device = next(model.parameters()).device
    for feats, metas in kept:
        evaluator.process(
            model.predict_by_feat(
                feats.map(lambda t: t.to(device)),
                [DetDataSample(metainfo=meta) for meta in metas]))
    metrics = evaluator.evaluate(size)
    prefix = evaluator.metrics[0].prefix
    return {key: metrics[f'{prefix}/{key}'] for key in METRICS}


def table(rows: List[dict]) -> str:
    """A markdown table of ``rows``, best PQ first (grid order on ties),
    then the best setting and the config's own."""
    columns = list(Setting._fields) + list(METRICS)
    lines = [
        '| ' + ' | '.join(columns) + ' | default |',
        '|---' * (len(columns) + 1) + '|'
    ]
    ranked = sorted(rows, key=lambda r: -r['PQ'])
    for row in ranked:
        lines.append('| ' + ' | '.join(
            f'{row[c]:.3f}' if c in METRICS else f'{row[c]:g}'
            for c in columns) + f' | {"yes" if row["default"] else ""} |')

    def describe(row: dict) -> str:
        return (', '.join(f'{k}={row[k]:g}' for k in Setting._fields) +
                f': PQ {row["PQ"]:.3f} (PQ_th {row["PQ_th"]:.3f}, PQ_st '
                f'{row["PQ_st"]:.3f})')

    own = next(row for row in rows if row['default'])
    lines += [
        '', f'best: {describe(ranked[0])}', f'config: {describe(own)}'
    ]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    check_panoptic_test_cfg(cfg, args.config)
    # the metric's PQ table at every setting would bury the sweep's
    MMLogger.get_instance('sweep_panoptic', log_level='WARNING')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    model = build_model(cfg, args.config)
    metric = panoptic_metric(cfg, args.config)
    settings, own = grid(args, cfg.model.test_cfg)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(get_device()).eval()
    loader = Runner.build_dataloader(cfg.test_dataloader)
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = loader.dataset.metainfo
    kept = run_network(model, loader)
    rows = []
    for setting in settings:
        rows.append(
            dict(setting._asdict(),
                 **evaluate(model, kept, evaluator, setting,
                            len(loader.dataset)),
                 default=setting == own))
    print(f'PQ over {len(loader.dataset)} images of {args.config} at '
          f'{args.checkpoint}:\n')
    print(table(rows))
    write_text(args.out, json.dumps(rows, indent=1) + '\n')
    return rows


if __name__ == '__main__':
    main()
