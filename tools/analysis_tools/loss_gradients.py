"""How strongly each loss term pulls on each part of a model.

For a few training batches of CONFIG, every loss term's gradient is taken
alone (``torch.autograd.grad``, the others not summed in), and its L2 norm
is reported over each group of parameters: the model's top-level modules,
with the dense head split into its submodules (for DR1Mask: the class and
box towers, the top layer emitting embeddings and contexts, the class,
box and centerness outputs). A loss whose gradient reaches a shared group
many times stronger than the others' steers that group; with gradient
clipping on the total norm it also shrinks every other term's step.

Prints a markdown table, the mean over ``--batches`` batches, one row per
loss term (and the total, as the optimizer sees it before clipping), one
column per group; ``--out`` writes the same as JSON rows (``loss``,
``group``, ``grad_norm``).

Usage::

    python tools/analysis_tools/loss_gradients.py \\
        configs/dr1mask/dr1mask_r18_fpn_coco-heads_toy-panoptic.py \\
        [--checkpoint CKPT] --batches 4
"""
import argparse
import json
import statistics
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmengine.utils import import_modules_from_strings

from mmdet.registry import MODELS

from benchmark_common import write_text


def parameter_groups(
        model: torch.nn.Module) -> Dict[str, List[torch.nn.Parameter]]:
    """Trainable parameters by group: ``bbox_head.<submodule>`` for the
    dense head's, ``<module>`` for every other top-level module's."""
    groups: Dict[str, List[torch.nn.Parameter]] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        parts = name.split('.')
        key = '.'.join(parts[:2]) if parts[0] == 'bbox_head' else parts[0]
        groups[key].append(param)
    return dict(groups)


def l2_norm(grads: Iterable[Optional[torch.Tensor]]) -> float:
    """The L2 norm of gradients taken together (None: unused, zero)."""
    norms = [g.norm() for g in grads if g is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def gradient_norms(model: torch.nn.Module, data: dict,
                   groups: Dict[str, List[torch.nn.Parameter]]
                   ) -> Dict[str, Dict[str, float]]:
    """{loss term: {group: L2 norm of that term's gradient}} for one
    preprocessed batch, with ``'total'`` for the sum of the terms and
    ``'all'`` for every parameter."""
    losses = model.loss(data['inputs'], data['data_samples'])
    # mmengine's BaseModel.parse_losses: the keys holding 'loss', a list
    # (one per level) summed
    terms = {
        k: sum(v) if isinstance(v, (list, tuple)) else v
        for k, v in losses.items() if 'loss' in k
    }
    terms['total'] = sum(terms.values())
    params = [p for group in groups.values() for p in group]
    norms = {}
    for name, loss in terms.items():
        grads = torch.autograd.grad(
            loss, params, retain_graph=True, allow_unused=True)
        by_param = dict(zip(map(id, params), grads))
        norms[name] = {
            group: l2_norm(by_param[id(p)] for p in members)
            for group, members in groups.items()
        }
        norms[name]['all'] = l2_norm(grads)
    return norms


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Gradient norm of each loss term per parameter group.')
    parser.add_argument('config', help='training config')
    parser.add_argument('--checkpoint',
                        help='weights to measure at (default: the init)')
    parser.add_argument('--batches', type=int, default=4,
                        help='training batches to average over')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, metavar='KEY=VALUE')
    parser.add_argument('--out', help='write the rows to this JSON file')
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f'--batches must be >= 1, got {args.batches}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    # the init's per-parameter report would bury the table
    MMLogger.get_instance('loss_gradients', log_level='WARNING')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.train()
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=args.seed)
    groups = parameter_groups(model)
    collected: Dict[str, Dict[str, List[float]]] = defaultdict(
        lambda: defaultdict(list))
    for _, batch in zip(range(args.batches), loader):
        data = model.data_preprocessor(batch, True)
        for loss, by_group in gradient_norms(model, data, groups).items():
            for group, value in by_group.items():
                collected[loss][group].append(value)
    columns = ['all'] + list(groups)
    rows = [
        dict(loss=loss, group=group, grad_norm=statistics.mean(values))
        for loss, by_group in collected.items()
        for group, values in by_group.items()
    ]
    value = {(r['loss'], r['group']): r['grad_norm'] for r in rows}
    print(f'Gradient L2 norm per loss term and parameter group, mean over '
          f'{args.batches} batch(es) of {args.config}'
          f'{" at " + args.checkpoint if args.checkpoint else " at init"}:')
    print()
    print('| loss | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    for loss in collected:
        print(f'| {loss} | ' + ' | '.join(
            f'{value[(loss, c)]:.3g}' for c in columns) + ' |')
    write_text(args.out, json.dumps(rows, indent=1) + '\n')
    return rows


if __name__ == '__main__':
    main()
