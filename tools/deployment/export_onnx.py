"""Export DR1Mask's dense network to ONNX and check it against PyTorch.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx \
        [--shape HxW] [--opset N]

The graph is backbone, FPN, the dense head with its top layer and DR1Basis
(``projects.dr1mask.deployment.onnx_runtime``): from the preprocessed, padded batch
``inputs`` (N, 3, H, W) to ``cls_score_l``, ``bbox_pred_l``,
``centerness_l``, ``box_feat_l`` per FPN level l and ``basis``. N, H and W
are dynamic; ``--shape`` is only the size the graph is traced at. The
post-processing and its learnt layers stay in PyTorch
(``projects.dr1mask.DR1MaskORT`` runs both, from the config, the checkpoint
and this file).

It uses torch's TorchScript-based exporter (``dynamo=False``), which needs
no package beyond ``onnx``. After writing the file it runs it in ONNX
Runtime at ``--shape`` and at a second size and compares every output with
PyTorch's (``--atol``, on ``bbox_pred`` in units of its level's stride,
which is what the network regresses); it exits non-zero when one differs
by more.
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, NoReturn, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader

# Reads the checkpoints mmengine's runner writes (torch's weights_only).
import projects.dr1mask.engine.safe_checkpoints  # noqa: F401
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from projects.dr1mask import DR1Mask
from projects.dr1mask.deployment.onnx_runtime import (INPUT_NAME, DenseNetwork,
                                           export_onnx, output_names)

# The TorchScript-based exporter's newest opset.
MAX_OPSET = 20
DEFAULT_OPSET = 17


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a DR1Mask config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--shape', default='512x512',
                        help='HxW the graph is traced at (default 512x512); '
                        'a multiple of the data preprocessor\'s '
                        'pad_size_divisor')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, 11..{MAX_OPSET} '
                        f'(default {DEFAULT_OPSET})')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest absolute difference to PyTorch '
                        'accepted (default 1e-4)')
    return parser.parse_args()


def fail(message: str) -> NoReturn:
    sys.exit(f'error: {message}')


def parse_shape(text: str, divisor: int) -> Tuple[int, int]:
    """``'HxW'`` as (H, W), both positive multiples of ``divisor``."""
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if not match or not all(int(v) > 0 for v in match.groups()):
        fail(f'--shape {text!r} is not HxW with positive integers, '
             'e.g. --shape 512x512')
    h, w = map(int, match.groups())
    if h % divisor or w % divisor:
        fail(f'--shape {text}: the model sees inputs padded to a multiple '
             f'of {divisor} (data_preprocessor.pad_size_divisor); use e.g. '
             f'--shape {-(-h // divisor) * divisor}x'
             f'{-(-w // divisor) * divisor}')
    return h, w


def build_detector(config: str, checkpoint: str) -> DR1Mask:
    """The config's DR1Mask with every weight from the checkpoint, in eval
    mode on the CPU."""
    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            fail(f'{what} {path} does not exist')
    cfg = Config.fromfile(config)
    model_type = cfg.get('model', {}).get('type')
    if model_type != 'DR1Mask':
        fail(f'{config}: model.type is {model_type!r}; this tool exports '
             "DR1Mask (model.type='DR1Mask') configs only")
    # The checkpoint provides every weight: nothing to fetch.
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    try:
        loaded = CheckpointLoader.load_checkpoint(checkpoint,
                                                  map_location='cpu')
    except Exception as error:  # torch.load's errors are of many types
        fail(f'cannot read checkpoint {checkpoint}: {error}')
    state = loaded.get('state_dict', loaded)
    state = {re.sub(r'^module\.', '', key): value
             for key, value in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # weights of other shapes
        shapes = [line.strip() for line in str(error).splitlines()
                  if 'size mismatch' in line] or [str(error)]
        fail(f'{checkpoint} does not hold the weights of {config}: '
             f'{len(shapes)} weights of other shapes, e.g. {shapes[0]} Pass '
             'the checkpoint trained with this config.')
    problems = [
        f'{len(keys)} {what} (e.g. {", ".join(keys[:3])})'
        for what, keys in (('missing', result.missing_keys),
                           ('unexpected', result.unexpected_keys)) if keys
    ]
    if problems:
        fail(f'{checkpoint} does not hold the weights of {config}: '
             f'{"; ".join(problems)}. Pass the checkpoint trained with '
             'this config.')
    return model.eval()


def max_differences(network: DenseNetwork, onnx_file: str,
                    shape: Tuple[int, int]) -> Dict[str, float]:
    """Largest absolute difference between PyTorch and ONNX Runtime per
    output on one seeded random input of ``shape``; ``bbox_pred`` in units
    of its level's stride."""
    import onnxruntime
    session = onnxruntime.InferenceSession(
        onnx_file, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((1, 3, *shape), generator=generator)
    with torch.no_grad():
        expected = network(inputs)
    found = session.run(None, {INPUT_NAME: inputs.numpy()})
    strides = network.detector.bbox_head.strides
    differences = {}
    for name, ours, theirs in zip(
            output_names(network.num_levels), expected, found):
        difference = (torch.from_numpy(theirs) - ours).abs().max().item()
        if name.startswith('bbox_pred_'):
            difference /= strides[int(name.rsplit('_', 1)[1])]
        differences[name] = difference
    return differences


def main() -> None:
    args = parse_args()
    register_all_modules()
    if not MAX_OPSET >= args.opset >= 11:
        fail(f'--opset {args.opset}: the exporter writes opsets 11 to '
             f'{MAX_OPSET}; e.g. --opset {DEFAULT_OPSET}')
    model = build_detector(args.config, args.checkpoint)
    divisor = model.data_preprocessor.pad_size_divisor
    shape = parse_shape(args.shape, divisor)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    export_onnx(model, args.out, shape, args.opset)
    print(f'wrote {args.out} (opset {args.opset}, traced at '
          f'{shape[0]}x{shape[1]}, dynamic batch, height and width)')
    # A second size whose levels round differently checks the dynamic axes.
    other = (shape[0] + divisor, shape[1] + 3 * divisor)
    worst = 0.0
    for size in (shape, other):
        differences = max_differences(DenseNetwork(model), args.out, size)
        name = max(differences, key=differences.get)
        worst = max(worst, differences[name])
        print(f'{size[0]}x{size[1]}: max |ONNX Runtime - PyTorch| = '
              f'{differences[name]:.2e} ({name})')
    if worst > args.atol:
        fail(f'ONNX Runtime differs from PyTorch by {worst:.2e} > --atol '
             f'{args.atol:g}: the exported graph does not compute what the '
             'model does')


if __name__ == '__main__':
    main()
