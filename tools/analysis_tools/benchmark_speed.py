"""End-to-end latency (and throughput) of DR1Mask against mmdet's
Panoptic-FPN, CondInst, FCOS and Mask2Former.

What is timed is what the paper times (Tables 8, 9): batch 1, from the model
input (the preprocessed, padded batch tensor and its data samples) to the
final predictions, post-processing included, i.e. ``model.predict(inputs,
samples, rescale=True)``, which pastes the masks and builds the panoptic map
at the original image size (here the input size, scale factor 1).

Six R-50 models with random weights, in eval mode under ``torch.no_grad``:
``dr1mask_panoptic``, ``dr1mask_instance``, ``panoptic_fpn``, ``condinst``,
``mask2former`` (panoptic, with its instance output on as configured) and
``fcos``: the detector alone, the floor the mask branches add to, in the
pytorch-style R-50, GN-head variant whose backbone, neck and head DR1Mask
shares. Every model gets the same random image of each input size, through
its own data preprocessor (untimed).

Fixed detection counts. Random weights make the number of detections
arbitrary, so every model is forced to keep exactly N instances after NMS
(``--detections``), and every call checks that it did (else it stops):

- dense heads (FCOS, CondInst, DR1Mask): the classification conv's bias is
  +10 for class 0 and -10 for the others, so every location has exactly one
  class above the unchanged score threshold (0.05) and the configured
  ``nms_pre`` (1000 per level) candidates reach NMS; NMS IoU 1.0, so nothing
  is suppressed, and ``max_per_img`` = N. The box regression bias is 4, so
  that boxes are 8 strides wide as a trained head's are on each level (a
  random regressor's are degenerate). DR1Mask's ``test_cfg.panoptic``
  gets ``score_thr`` = 0 so that the panoptic layer keeps all N instances.
- Panoptic-FPN: the RPN is left as configured (up to 1000 proposals, NMS
  0.7); the R-CNN classifier's bias is +10 for class 0 and -10 for the other
  classes and background, so every proposal has one class above the
  unchanged 0.6 threshold; NMS IoU 1.0 and ``max_per_img`` = N.
- Mask2Former: its 100 queries are fixed by design and all of them are
  decoded and their masks upsampled to the image; what N sets is how many
  its fusion head keeps. The classifier's bias is +5 for class 0 (a thing),
  -10 for the background and 0 for the others, so class 0 is every query's
  best class, with scores that differ from query to query. The panoptic
  output keeps the queries scoring above ``test_cfg.object_mask_thr``: it
  is set halfway between the N-th and the (N+1)-th query score of the
  input, from one untimed call of the head; the instance output keeps the
  top ``test_cfg.max_per_image`` = N (query, class) pairs, all class 0.
  Both counts are checked, per image.

The entries are timed in rounds, the order rotated every round so that the
machine's drift hits all of them alike; the medians are reported. Besides
their whole ``predict``, both DR1Mask models are run stage by stage
(``staged_predict``: ``DR1Mask.predict`` itself, with the call of each stage
in ``STAGE_CALLS`` timed on its own), as one more entry in the rounds.

Other figures, from untimed calls before the rounds (the first of which, the
traced one, is also the warm-up):

- ``params_m``: parameters the prediction uses, in millions (DR1Mask's
  auxiliary semantic head is training-only and left out).
- ``gflops``: mmengine's ``FlopAnalyzer`` (the counter behind
  ``get_model_complexity_info``) on a trace of the whole ``predict`` call
  (or stage) at N detections, one multiply-add counted as one FLOP. It
  counts convolutions, matrix products, einsum, norms, bilinear / nearest
  upsampling and grid sampling; elementwise ops, argmax and mmcv's custom
  ops (RoIAlign, NMS) are not counted.
- ``peak_mem_mb``: on CUDA, ``torch.cuda.max_memory_allocated`` during the
  call minus the memory allocated before it. On CPU, the growth of the
  process's peak resident set during the call over the resident set before
  it: freed heap memory is first returned to the kernel (``malloc_trim``)
  and the peak is reset (``/proc/self/clear_refs``), so it counts what the
  call itself touches (activations and outputs; the weights and the input
  are already resident).

``--checkpoint`` times a trained DR1Mask instead (``--config``, by default
the quickstart's, ``configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py``):
with random weights nearly every pixel is a stuff boundary and the
detections are random boxes, so the panoptic layer's post-processing works
harder than on real predictions. The rows ``dr1mask_panoptic`` and
``dr1mask_instance`` are then the checkpoint's model and the same model
without its panoptic layer, on a real image (``--image``, by default the
first of the config's test set) resized to each ``--sizes`` (default
256x256 and 512x512). Only the number of detections is forced: the dense
head's ``score_thr`` and the panoptic ``score_thr`` go to 0 and
``max_per_img`` to N, NMS is the config's, and the count is checked as
above. Its ratio ``pan / inst`` is the panoptic layer's cost on realistic
boundaries and boxes.

``--onnxruntime`` also times both DR1Mask models with their dense network
in ONNX Runtime (``DR1MaskORT``, as many intra-op threads as ``--threads``)
and the same PyTorch post-processing, in the same rounds: rows
``dr1mask_panoptic/onnxruntime`` and ``dr1mask_instance/onnxruntime``. The
graph is exported for every setting, after the detections are forced (the
forcing biases are in it); its FLOPs are not counted (``gflops`` is NaN:
mmengine's analyser sees PyTorch ops only).

``--batch-sizes`` adds the throughput: every whole model is timed again, in
rounds as above, on batches of that many copies of the image (so that each
image gets the same forced detections), and ``images_per_s`` is the batch
size over the median time of the call.

``--out`` writes one JSON row per model (``model`` as above), input size and
detection count, and one per stage (``model`` is ``dr1mask_panoptic/<stage>``
or ``dr1mask_instance/<stage>``, stages as in ``STAGES``): ``model``,
``input`` ([h, w]), ``detections``, ``median_ms``, ``times_ms`` (every
round), ``params_m``, ``gflops``, ``peak_mem_mb``; then, with
``--batch-sizes``, one row per model, input size, detection count and batch
size: ``model``, ``input``, ``detections``, ``batch``, ``median_ms`` (of
the whole batch), ``times_ms``, ``images_per_s``.

On a shared CPU, ``--threads 1`` gives steadier figures: with one OpenMP
thread per core, a thread the scheduler takes away stalls every parallel
region. On CUDA (``--device cuda``) every timing is bracketed by
``torch.cuda.synchronize``; NMS and RoIAlign need an mmcv built with CUDA
ops.

Usage::

    # a few minutes on 2 CPU cores: 512x512, 50 detections, 3 rounds
    .venv/bin/python tools/analysis_tools/benchmark_speed.py --quick \\
        --threads 1 --out work_dirs/benchmark/quick.json \\
        --markdown work_dirs/benchmark/quick.md

    # the full comparison (defaults: both sizes, 10 / 50 / 100, 5 rounds)
    .venv/bin/python tools/analysis_tools/benchmark_speed.py \\
        --sizes 800x1216 512x512 --detections 10 50 100 --rounds 5 \\
        --out work_dirs/benchmark/full.json

    # DR1Mask with its dense network in ONNX Runtime, beside PyTorch
    .venv/bin/python tools/analysis_tools/benchmark_speed.py --quick \\
        --threads 1 --models dr1mask_panoptic dr1mask_instance --onnxruntime
    # images per second at batch 1 and 4 as well
    .venv/bin/python tools/analysis_tools/benchmark_speed.py --quick \\
        --threads 1 --batch-sizes 1 4 --out work_dirs/benchmark/quick.json

    # the quickstart's trained model, with and without its panoptic layer
    .venv/bin/python tools/analysis_tools/benchmark_speed.py --threads 1 \\
        --checkpoint work_dirs/quickstart/iter_800.pth \\
        --out work_dirs/benchmark/trained.json

    # where the time of a stage (or of a whole model) goes
    .venv/bin/python tools/analysis_tools/benchmark_speed.py --quick \\
        --profile instance_module panoptic_layer panoptic_fpn
"""
import argparse
import copy
import functools
import gc
import json
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import torch
import torch.nn as nn
from benchmark_common import CONFIGS, TITLES, ProcessMemory
from benchmark_common import build_model as build_seeded_model
from benchmark_common import load_config, parse_size, ratio_cell, write_text
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint
from mmengine.structures import BaseDataElement
from torch import Tensor

import projects.dr1mask.engine.safe_checkpoints  # noqa: F401  weights_only
from mmdet.models.detectors import MaskFormer
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample, SampleList
from mmdet.utils import register_all_modules
from projects.dr1mask import DR1MaskORT
from projects.dr1mask.deployment.onnx_runtime import export_onnx

MODEL_NAMES = tuple(CONFIGS)
# Also run stage by stage (staged_predict).
STAGED = ('dr1mask_panoptic', 'dr1mask_instance')
# The stages of DR1Mask.predict: the call each one is (the submodule that
# owns it, '' for the detector, and the method), in predict's order ...
STAGE_CALLS = {
    'backbone_fpn': ('', 'extract_feat'),
    'dense_head': ('bbox_head', 'forward'),
    'basis': ('basis', 'forward'),
    'decode_nms': ('bbox_head', 'predict_by_feat'),
    'instance_module': ('', 'predict_instances'),
    'panoptic_layer': ('', 'predict_panoptic'),
}
# ... and the submodules whose parameters each uses.
STAGES = {
    'backbone_fpn': ('backbone', 'neck'),
    'dense_head': ('bbox_head', ),
    'basis': ('basis', ),
    'decode_nms': (),
    'instance_module': ('mask_head', ),
    'panoptic_layer': ('panoptic_head', ),
}
# Built but not used by predict.
TRAINING_ONLY = ('semantic_head', )
# (numerator, denominator, bound, column title): the targets.
TARGETS = (
    ('dr1mask_panoptic', 'panoptic_fpn', 0.75, 'pan / Panoptic-FPN'),
    ('dr1mask_instance', 'condinst', 0.90, 'inst / CondInst'),
    ('dr1mask_panoptic', 'dr1mask_instance', 1.05, 'pan / inst'),
    ('dr1mask_panoptic', 'fcos', 1.25, 'pan / FCOS'),
    ('dr1mask_panoptic', 'mask2former', 0.50, 'pan / Mask2Former'),
)
# Logit that makes one class certain (+) or negligible (-) everywhere.
FORCE_LOGIT = 10.0
# Mask2Former's class-0 logit: the best class of every query (about 0.56
# against at most 0.02 for any other), yet not certain, so that the scores of
# the queries differ and a threshold between two of them keeps exactly N.
QUERY_LOGIT = 5.0
# Dense heads' box sides, in strides of their level: the boxes FCOS's regress
# ranges give a trained head (4 to 8 strides), where a random regressor
# would give degenerate boxes (cheaper to paste where pasting is per box).
BOX_HALF_SIZE = 4.0
QUICK = dict(sizes=[(512, 512)], detections=[50], rounds=3)
TRAINED = dict(sizes=[(256, 256), (512, 512)])
QUICKSTART_CONFIG = 'configs/dr1mask/dr1mask_r18_fpn_toy-panoptic.py'
FULL = dict(sizes=[(800, 1216), (512, 512)], detections=[10, 50, 100],
            rounds=5)

Runner = Callable[..., Any]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Median latency, FLOPs, peak memory and throughput of '
        'DR1Mask, Panoptic-FPN, CondInst, FCOS and Mask2Former at fixed '
        'detection counts')
    parser.add_argument('--sizes', type=parse_size, nargs='+',
                        help='input sizes HxW (default 800x1216 512x512)')
    parser.add_argument('--detections', type=int, nargs='+',
                        help='detections kept per image (default 10 50 100)')
    parser.add_argument('--rounds', type=int,
                        help='timed calls per model and setting (default 5)')
    parser.add_argument('--quick', action='store_true',
                        help='defaults 512x512, 50 detections, 3 rounds')
    parser.add_argument('--models', nargs='+', choices=MODEL_NAMES,
                        default=list(MODEL_NAMES))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--profile', nargs='+', default=[],
                        choices=list(STAGES) + list(MODEL_NAMES),
                        help='print torch.profiler tables of these stages '
                        'of the DR1Mask models, or of these whole models')
    parser.add_argument('--onnxruntime', action='store_true',
                        help='also time the DR1Mask models with their dense '
                        'network in ONNX Runtime')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[],
                        help='also measure the images per second of every '
                        'model at these batch sizes (e.g. 1 4)')
    parser.add_argument('--checkpoint',
                        help='time this trained DR1Mask (panoptic) with '
                        'and without its panoptic layer, on a real image')
    parser.add_argument('--config', default=QUICKSTART_CONFIG,
                        help="the checkpoint's config (default: the "
                        "quickstart's)")
    parser.add_argument('--image',
                        help='the image of --checkpoint (default: the first '
                        "of the config's test set)")
    parser.add_argument('--out', help='write every row to this JSON file')
    parser.add_argument('--markdown', help='write the tables to this file')
    args = parser.parse_args(argv)
    if args.checkpoint:
        args.models = [m for m in args.models if m in STAGED]
        if not args.models:
            parser.error(f'--checkpoint times {" and ".join(STAGED)} only')
        for key, value in TRAINED.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.onnxruntime:
            parser.error('--onnxruntime times random weights only, not '
                         '--checkpoint')
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_model(name: str, device: torch.device) -> nn.Module:
    """The model of ``CONFIGS[name]`` with seeded random weights, in eval
    mode (``benchmark_common.build_model``)."""
    return build_seeded_model(load_config(name), device).eval()


def force_detections(model: nn.Module, n: int) -> None:
    """Make ``model`` keep exactly ``n`` detections (module docstring)."""
    if hasattr(model, 'roi_head'):
        test_cfg = model.roi_head.test_cfg
        classifier = model.roi_head.bbox_head.fc_cls
    else:
        test_cfg = model.bbox_head.test_cfg
        classifier = model.bbox_head.conv_cls
    test_cfg.nms.iou_threshold = 1.0
    test_cfg.max_per_img = n
    with torch.no_grad():
        classifier.bias.fill_(-FORCE_LOGIT)
        classifier.bias[0] = FORCE_LOGIT
        if not hasattr(model, 'roi_head'):
            model.bbox_head.conv_reg.bias.fill_(BOX_HALF_SIZE)
    if getattr(model, 'with_panoptic', False):
        model.test_cfg.panoptic.score_thr = 0.0


def force_count(model: nn.Module, n: int) -> None:
    """Make a trained DR1Mask keep its ``n`` best detections after its own
    NMS, all of them in the panoptic map (``--checkpoint``)."""
    model.test_cfg.score_thr = 0.0
    model.test_cfg.max_per_img = n
    if model.with_panoptic:
        model.test_cfg.panoptic.score_thr = 0.0


def trained_models(config: str, checkpoint: str, device: torch.device
                   ) -> Dict[str, nn.Module]:
    """``dr1mask_panoptic``: the model of ``config`` with the weights of
    ``checkpoint``; ``dr1mask_instance``: the same without its panoptic
    layer. In eval mode."""
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model)
    if not getattr(model, 'with_panoptic', False):
        raise SystemExit(f'--checkpoint compares a panoptic DR1Mask with '
                         f'and without its panoptic layer, but {config} '
                         'has no model.panoptic_head')
    load_checkpoint(model, checkpoint, map_location='cpu')
    model = model.to(device).eval()
    instance = copy.deepcopy(model)
    instance.panoptic_head = None
    return dict(dr1mask_panoptic=model, dr1mask_instance=instance)


def first_test_image(config: str) -> str:
    """The path of the first image of ``config``'s test set."""
    cfg = Config.fromfile(config)
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[]))
    return dataset.get_data_info(0)['img_path']


def query_scores(mask_cls: Tensor, num_classes: int) -> Tensor:
    """The score of each query's best class, as
    ``MaskFormerFusionHead.panoptic_postprocess`` compares it with
    ``object_mask_thr``, and 0 where that class is the background.

    Args:
        mask_cls (Tensor): Class logits, (..., num_queries, num_classes + 1).
        num_classes (int): Thing and stuff classes.

    Returns:
        Tensor: (..., num_queries).
    """
    scores, labels = mask_cls.softmax(-1).max(-1)
    return scores * labels.ne(num_classes)


def force_queries(model: MaskFormer, n: int, inputs: Tensor,
                  samples: SampleList) -> None:
    """Make Mask2Former keep exactly ``n`` of its queries in both its outputs
    (module docstring), on ``inputs``."""
    head, fusion = model.panoptic_head, model.panoptic_fusion_head
    if n > head.num_queries:
        raise ValueError(f'--detections {n}: Mask2Former has only '
                         f'{head.num_queries} queries (num_queries in '
                         f'{CONFIGS["mask2former"]})')
    with torch.no_grad():
        head.cls_embed.bias.zero_()
        head.cls_embed.bias[0] = QUERY_LOGIT
        head.cls_embed.bias[-1] = -FORCE_LOGIT
        mask_cls, _ = head.predict(model.extract_feat(inputs), samples)
    scores = query_scores(mask_cls[0], fusion.num_classes).sort(
        descending=True).values
    fusion.test_cfg.max_per_image = n
    # Halfway between the n-th and the (n+1)-th score: a margin for the
    # rounding differences between this call and the timed ones (batches).
    fusion.test_cfg.object_mask_thr = float(
        scores[n - 1] + scores[n]) / 2 if n < len(scores) else 0.0


def watch_detections(model: nn.Module) -> Callable[[], List[int]]:
    """Wrap the call that returns the detections after NMS; the returned
    function gives how many the last call kept, per image. Mask2Former's
    are its queries above ``object_mask_thr`` (the panoptic output) and its
    instances (the instance output), both per image."""
    if isinstance(model, MaskFormer):
        fusion = model.panoptic_fusion_head

        def count(results: List[dict], mask_cls: Tensor, *args,
                  **kwargs) -> List[int]:
            above = query_scores(mask_cls, fusion.num_classes) > \
                fusion.test_cfg.object_mask_thr
            return above.sum(1).tolist() + [
                len(result['ins_results']) for result in results
            ]

        owner, attr = fusion, 'predict'
    else:

        def count(results: list, *args, **kwargs) -> List[int]:
            return [len(result) for result in results]

        owner, attr = (model.roi_head, 'predict') if hasattr(
            model, 'roi_head') else (model.bbox_head, 'predict_by_feat')
    original = getattr(owner, attr)
    kept: List[int] = []

    def counted(*args, **kwargs):
        results = original(*args, **kwargs)
        kept[:] = count(results, *args, **kwargs)
        return results

    setattr(owner, attr, counted)
    return lambda: list(kept)


def make_inputs(model: nn.Module, size: Tuple[int, int], batch: int = 1,
                image: Optional[Tensor] = None) -> Tuple[Tensor, SampleList]:
    """The model's own preprocessing of ``batch`` copies of one image of
    ``size``, which is also its original size (copies: every image of a
    batch then has the same forced detections): a random one, or ``image``
    ((3, H, W) uint8) resized."""
    h, w = size
    if image is None:
        generator = torch.Generator().manual_seed(h * 10007 + w)
        image = torch.randint(
            0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
    else:
        image = torch.from_numpy(
            cv2.resize(image.permute(1, 2, 0).numpy(), (w, h),
                       interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    samples = [
        DetDataSample(
            metainfo=dict(
                img_id=i, img_shape=size, ori_shape=size,
                scale_factor=(1.0, 1.0))) for i in range(batch)
    ]
    data = model.data_preprocessor(
        dict(inputs=[image] * batch, data_samples=samples), False)
    return data['inputs'], data['data_samples']


def staged_predict(model: nn.Module, inputs: Tensor, samples: SampleList,
                   run: Runner) -> SampleList:
    """``DR1Mask.predict`` itself, with every call of ``STAGE_CALLS`` made
    through ``run``."""
    wrapped = []
    for stage, (owner_name, method) in STAGE_CALLS.items():
        owner = model.get_submodule(owner_name)
        call = getattr(owner, method)
        setattr(owner, method, functools.partial(run, stage, call))
        wrapped.append((owner, method, call))
    try:
        return model.predict(inputs, samples, rescale=True)
    finally:
        for owner, method, call in wrapped:
            setattr(owner, method, call)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def direct(name: str, fn: Callable, *args, **kwargs) -> Any:
    """The runner that only runs."""
    return fn(*args, **kwargs)


class Timer:
    """Runner recording the wall time of each call, in ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: Dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *args, **kwargs) -> Any:
        synchronize(self.device)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        synchronize(self.device)
        self.ms[name] = (time.perf_counter() - start) * 1e3
        return result


class PeakMemory:
    """Runner recording the peak memory each call adds, in MiB (see the
    module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: Dict[str, float] = {}
        self.process = ProcessMemory() if device.type == 'cpu' else None

    def __call__(self, name: str, fn: Callable, *args, **kwargs) -> Any:
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            result = fn(*args, **kwargs)
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.mb[name] = (peak - before) / 2**20
            return result
        self.process.reset()
        result = fn(*args, **kwargs)
        self.mb[name] = self.process.peak_growth_mb()
        return result


def tensors_in(obj: Any) -> List[Tensor]:
    """Every tensor in nested lists, tuples, dicts and data elements."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (BaseDataElement, dict)):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    return []


class _Traced(nn.Module):
    """``fn()`` as a module to trace: ``model`` is registered so that its
    parameters are the trace's state, and the outputs are every tensor of
    the result so that nothing that produced them is pruned."""

    def __init__(self, model: nn.Module, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn
        self.result = None

    def forward(self, _anchor: Tensor) -> Tuple[Tensor, ...]:
        self.result = self.fn()
        return tuple(tensors_in(self.result))


class FlopCounter:
    """Runner recording the GFLOPs of each call (``FlopAnalyzer``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gflops: Dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *args, **kwargs) -> Any:
        traced = _Traced(self.model, lambda: fn(*args, **kwargs))
        analyzer = FlopAnalyzer(traced, (torch.zeros(1), ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        self.gflops[name] = analyzer.total() / 1e9
        return traced.result


class Profiler:
    """Runner printing torch.profiler's op table of the chosen calls."""

    def __init__(self, names: Sequence[str], device: torch.device,
                 prefix: str = '') -> None:
        self.names = set(names)
        self.prefix = prefix
        self.activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == 'cuda':
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sort_by = 'self_cuda_time_total' if device.type == 'cuda' \
            else 'self_cpu_time_total'

    def __call__(self, name: str, fn: Callable, *args, **kwargs) -> Any:
        if name not in self.names:
            return fn(*args, **kwargs)
        with torch.profiler.profile(activities=self.activities) as prof:
            result = fn(*args, **kwargs)
        print(f'\n### torch.profiler: {self.prefix}{name}\n')
        print(prof.key_averages().table(sort_by=self.sort_by, row_limit=15))
        return result


class Entry:
    """One thing to time, a model's whole ``predict`` or (``staged``) a
    DR1Mask model stage by stage, with its inputs and detection check."""

    def __init__(self, name: str, model: nn.Module, staged: bool = False,
                 image: Optional[Tensor] = None) -> None:
        self.name = name
        self.model = model
        self.staged = staged
        # A real image for a trained model, whose detections are its own.
        self.image = image
        self.kept = watch_detections(model)
        self.inputs: Optional[Tensor] = None
        self.samples: SampleList = []

    @property
    def names(self) -> List[str]:
        """The names its runner calls are recorded under."""
        if not self.staged:
            return [self.name]
        return [s for s in STAGES
                if s != 'panoptic_layer' or self.model.with_panoptic]

    def prepare(self, size: Tuple[int, int], n: int, batch: int = 1
                ) -> None:
        self.inputs, self.samples = make_inputs(self.model, size, batch,
                                                self.image)
        if self.image is not None:
            force_count(self.model, n)
        elif isinstance(self.model, MaskFormer):
            force_queries(self.model, n, self.inputs, self.samples)
        else:
            force_detections(self.model, n)

    def predict(self, *args, **kwargs) -> SampleList:
        """The ``predict`` that is timed."""
        return self.model.predict(*args, **kwargs)

    def __call__(self, run: Runner, n: int) -> SampleList:
        # predict writes into its samples: give it fresh ones, untimed.
        samples = [s.clone() for s in self.samples]
        if self.staged:
            outputs = staged_predict(self.model, self.inputs, samples, run)
        else:
            outputs = run(self.names[0], self.predict, self.inputs, samples,
                          rescale=True)
        if any(kept != n for kept in self.kept()):
            raise RuntimeError(f'{self.name} kept {self.kept()} detections, '
                               f'not {n}: cannot compare at fixed counts')
        return outputs


class OnnxEntry(Entry):
    """A DR1Mask model's whole predict with its dense network in ONNX
    Runtime (module docstring, ``--onnxruntime``)."""

    def __init__(self, name: str, model: nn.Module,
                 threads: Optional[int]) -> None:
        super().__init__(name, model)
        self.threads = threads
        self.onnx_file = tempfile.NamedTemporaryFile(suffix='.onnx')
        self.runtime: Optional[DR1MaskORT] = None

    @property
    def names(self) -> List[str]:
        return [f'{self.name}/onnxruntime']

    def prepare(self, size: Tuple[int, int], n: int, batch: int = 1
                ) -> None:
        super().prepare(size, n, batch)
        export_onnx(self.model, self.onnx_file.name, size)
        self.runtime = DR1MaskORT(self.model, self.onnx_file.name,
                                  threads=self.threads)

    def predict(self, *args, **kwargs) -> SampleList:
        return self.runtime.predict(*args, **kwargs)

    def __call__(self, run: Runner, n: int) -> SampleList:
        if isinstance(run, FlopCounter):
            run.gflops[self.names[0]] = float('nan')
            run = direct
        return super().__call__(run, n)


def inference_params_m(model: nn.Module,
                       modules: Optional[Sequence[str]] = None) -> float:
    """Parameters (millions) of ``modules``, or by default of every module
    that predict uses."""
    counts = parameter_count(model)
    if modules is not None:
        return sum(counts.get(m, 0) for m in modules) / 1e6
    unused = sum(counts.get(m, 0) for m in TRAINING_ONLY)
    return (counts[''] - unused) / 1e6


def check_device(device: torch.device) -> None:
    """Fail early, and clearly, where mmcv cannot run NMS on the device."""
    if device.type != 'cuda':
        return
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 1., 1.]], device=device)
    try:
        nms(boxes, torch.ones(1, device=device), 0.5)
    except (RuntimeError, NotImplementedError) as error:
        raise SystemExit(
            'This mmcv has no CUDA ops (NMS, RoIAlign fail on the GPU): '
            'install an mmcv built with CUDA, or run with --device cpu.\n'
            f'({error})')


def measure_setting(entries: List[Entry], size: Tuple[int, int], n: int,
                    rounds: int, device: torch.device,
                    profile: Sequence[str]) -> List[dict]:
    """All the rows of one input size and detection count."""
    log(f'{size[0]}x{size[1]}, {n} detections: FLOPs, memory')
    flops = [FlopCounter(entry.model) for entry in entries]
    memory = [PeakMemory(device) for _ in entries]
    for entry, flop_counter, peak_memory in zip(entries, flops, memory):
        entry.prepare(size, n)
        # The traced call is also the warm-up of what follows.
        entry(flop_counter, n)
        entry(peak_memory, n)
    times = timed_rounds(entries, n, rounds, device)
    for entry in entries:
        if set(entry.names) & set(profile):
            prefix = f'{entry.name}/' if entry.staged else ''
            entry(Profiler(profile, device, prefix), n)
    rows = []
    for entry, flop_counter, peak_memory, entry_times in zip(
            entries, flops, memory, times):
        for name in entry.names:
            modules = STAGES[name] if entry.staged else None
            rows.append(
                dict(
                    model=f'{entry.name}/{name}' if entry.staged else name,
                    input=list(size),
                    detections=n,
                    median_ms=statistics.median(entry_times[name]),
                    times_ms=entry_times[name],
                    params_m=inference_params_m(entry.model, modules),
                    gflops=flop_counter.gflops[name],
                    peak_mem_mb=peak_memory.mb[name]))
    return rows


def timed_rounds(entries: List[Entry], n: int, rounds: int,
                 device: torch.device) -> List[Dict[str, List[float]]]:
    """The ms of every call of every entry (by the names its runner calls
    are recorded under) in ``rounds`` rounds of one call each."""
    times: List[Dict[str, List[float]]] = [{} for _ in entries]
    order = list(range(len(entries)))
    for round_ in range(rounds):
        log(f'  round {round_ + 1}/{rounds}')
        # Rotate the order so that drift and position hit every model alike.
        shift = round_ % len(entries)
        for i in order[shift:] + order[:shift]:
            timer = Timer(device)
            entries[i](timer, n)
            for name, ms in timer.ms.items():
                times[i].setdefault(name, []).append(ms)
    return times


def measure_throughput(entries: List[Entry], size: Tuple[int, int], n: int,
                       batch_sizes: Sequence[int], rounds: int,
                       device: torch.device) -> List[dict]:
    """The throughput rows of one input size and detection count: images
    per second of every whole model (not the staged entries) at each batch
    size, from the median time of a call on the whole batch."""
    entries = [entry for entry in entries if not entry.staged]
    rows = []
    for batch in batch_sizes:
        log(f'{size[0]}x{size[1]}, {n} detections, batch {batch}: warm-up')
        for entry in entries:
            entry.prepare(size, n, batch)
            entry(direct, n)
        times = timed_rounds(entries, n, rounds, device)
        for entry, entry_times in zip(entries, times):
            name = entry.names[0]
            median_ms = statistics.median(entry_times[name])
            rows.append(
                dict(
                    model=name,
                    input=list(size),
                    detections=n,
                    batch=batch,
                    median_ms=median_ms,
                    times_ms=entry_times[name],
                    images_per_s=batch * 1e3 / median_ms))
    return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def latency_table(rows: List[dict]) -> str:
    """Median ms per model and the target ratios, per size and count."""
    models = [m for m in TITLES if any(r['model'] == m for r in rows)]
    head = ['input', 'dets'] + [f'{TITLES[m]} ms' for m in models] + [
        f'{title} (<= {bound:.2f})' for _, _, bound, title in TARGETS
    ]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for (size, n), by_model in _settings(rows).items():
        cells = [f'{size[0]}x{size[1]}', str(n)] + [
            f'{by_model[m]["median_ms"]:.0f}' for m in models
        ] + [
            ratio_cell(by_model, num, den, 'median_ms', bound)
            for num, den, bound, _ in TARGETS
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def complexity_table(rows: List[dict]) -> str:
    """Parameters, GFLOPs and peak memory of every model row."""
    lines = [
        '| model | input | dets | params (M) | GFLOPs | peak mem (MiB) |',
        '|---|---|---|---|---|---|'
    ]
    for row in rows:
        if row['model'] in TITLES:
            lines.append(
                f"| {TITLES[row['model']]} | {_size(row)} | "
                f"{row['detections']} | {row['params_m']:.1f} | "
                f"{row['gflops']:.1f} | {row['peak_mem_mb']:.0f} |")
    return '\n'.join(lines)


def stage_table(rows: List[dict], model: str) -> str:
    """The stages of ``model``, with their share of the staged sum and the
    unstaged end-to-end median beside it."""
    lines = [
        '| input | dets | stage | median ms | share | GFLOPs | params (M) '
        '| peak mem (MiB) |', '|---|---|---|---|---|---|---|---|'
    ]
    for (size, n), by_model in _settings(rows).items():
        stages = [by_model[f'{model}/{s}'] for s in STAGES
                  if f'{model}/{s}' in by_model]
        if not stages:
            continue
        total = sum(s['median_ms'] for s in stages)
        for row in stages:
            lines.append(
                f"| {size[0]}x{size[1]} | {n} | "
                f"{row['model'].split('/')[1]} | {row['median_ms']:.1f} | "
                f"{100 * row['median_ms'] / total:.0f} % | "
                f"{row['gflops']:.2f} | {row['params_m']:.2f} | "
                f"{row['peak_mem_mb']:.0f} |")
        lines.append(
            f'| {size[0]}x{size[1]} | {n} | sum (end to end) | {total:.1f} '
            f"({by_model[model]['median_ms']:.1f}) | 100 % | | | |")
    return '\n'.join(lines)


def backend_table(rows: List[dict]) -> str:
    """The DR1Mask models' median ms in PyTorch and with the dense network
    in ONNX Runtime (``--onnxruntime``)."""
    lines = ['| input | dets | model | PyTorch ms | ONNX Runtime ms | '
             'ORT / PyTorch |', '|---|---|---|---|---|---|']
    for (size, n), by_model in _settings(rows).items():
        for model in STAGED:
            if f'{model}/onnxruntime' in by_model:
                torch_ms = by_model[model]['median_ms']
                ort_ms = by_model[f'{model}/onnxruntime']['median_ms']
                lines.append(
                    f'| {size[0]}x{size[1]} | {n} | {TITLES[model]} | '
                    f'{torch_ms:.0f} | {ort_ms:.0f} | '
                    f'{ort_ms / torch_ms:.2f} |')
    return '\n'.join(lines)


def throughput_table(rows: List[dict]) -> str:
    """Images per second of every model, per size, count and batch."""
    models = [m for m in TITLES if any(r['model'] == m for r in rows)]
    head = ['input', 'dets', 'batch'] + [f'{TITLES[m]} img/s' for m in models]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for (size, n, batch), by_model in _settings(rows, 'batch').items():
        cells = [f'{size[0]}x{size[1]}', str(n), str(batch)] + [
            f'{by_model[m]["images_per_s"]:.2f}' for m in models
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _size(row: dict) -> str:
    return f"{row['input'][0]}x{row['input'][1]}"


def _settings(rows: List[dict], *fields: str
              ) -> Dict[tuple, Dict[str, dict]]:
    """The rows by model, grouped by (input, detections, *fields)."""
    settings: Dict[tuple, Dict[str, dict]] = {}
    for row in rows:
        key = (tuple(row['input']), row['detections']) + tuple(
            row[field] for field in fields)
        settings.setdefault(key, {})[row['model']] = row
    return settings


def markdown(rows: List[dict], throughput: List[dict],
             args: argparse.Namespace) -> str:
    weights = (f'the weights of {args.checkpoint} on '
               f'{args.image or "the first test image"}, resized'
               if args.checkpoint else 'random weights')
    setup = (f'device {args.device}, {torch.get_num_threads()} torch '
             f'threads, {args.rounds} rounds, medians in ms, batch 1, '
             f'{weights}')
    parts = [
        f'Latency ({setup}):', latency_table(rows),
        'Complexity:', complexity_table(rows)
    ]
    for model in STAGED:
        if any(r['model'].startswith(f'{model}/') for r in rows):
            parts += [f'{TITLES[model]} by stage:', stage_table(rows, model)]
    if any(r['model'].endswith('/onnxruntime') for r in rows):
        parts += ['PyTorch vs ONNX Runtime:', backend_table(rows)]
    if throughput:
        parts += [
            f'Throughput (device {args.device}, {torch.get_num_threads()} '
            f'torch threads, {args.rounds} rounds, images per second from '
            'the median time per batch):',
            throughput_table(throughput)
        ]
    return '\n\n'.join(parts) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    check_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules()
    # Keep init_weights' per-parameter report out of the output.
    MMLogger.get_instance('benchmark_speed', log_level='WARNING')
    entries = []
    image, trained = None, {}
    if args.checkpoint:
        path = args.image or first_test_image(args.config)
        array = cv2.imread(path, cv2.IMREAD_COLOR)
        if array is None:
            raise SystemExit(f'--image {path}: not an image file OpenCV '
                             'can read')
        image = torch.from_numpy(array).permute(2, 0, 1)
        log(f'loading {args.checkpoint}')
        trained = trained_models(args.config, args.checkpoint, device)
    for name in args.models:
        log(f'building {name}')
        model = trained[name] if trained else build_model(name, device)
        entries.append(Entry(name, model, image=image))
        if name in STAGED:
            entries.append(
                Entry(name, entries[-1].model, staged=True, image=image))
            if args.onnxruntime:
                entries.append(
                    OnnxEntry(name, entries[-1].model, args.threads))
    rows, throughput = [], []
    with torch.no_grad():
        for size in args.sizes:
            for n in args.detections:
                rows += measure_setting(entries, size, n, args.rounds, device,
                                        args.profile)
                throughput += measure_throughput(entries, size, n,
                                                 args.batch_sizes,
                                                 args.rounds, device)
    table = markdown(rows, throughput, args)
    print(table, end="")
    write_text(args.out, json.dumps(rows + throughput, indent=1))
    write_text(args.markdown, table)
    return rows + throughput


if __name__ == '__main__':
    main()
