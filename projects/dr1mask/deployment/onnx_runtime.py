"""DR1Mask's dense network in ONNX, and ONNX Runtime feeding its outputs to
the PyTorch post-processing.

The exported graph is :meth:`DR1Mask._forward` without the outputs that
:meth:`DR1Mask.predict_by_feat` does not read: from the preprocessed batch
(N, 3, H, W) to, per FPN level l, ``cls_score_l``, ``bbox_pred_l``,
``centerness_l``, ``box_feat_l`` and to ``basis`` (F, stride 4). N, H and W
are dynamic axes. ``tools/deployment/export_onnx.py`` writes it.

Everything after the graph stays in PyTorch and is the same code the PyTorch
model runs: decoding and NMS, the embeddings of the kept detections, the
instance prediction module and the unified panoptic layer
(``predict_by_feat``). Those layers are learnt, so :class:`DR1MaskORT` takes
the model built from the config and checkpoint as well as the ONNX file;
only the layers the graph holds are not run in PyTorch.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch import Tensor

from mmdet.structures import SampleList
from ..models import DR1Mask, DR1MaskFeatures

# The per-level fields of DR1MaskFeatures that predict_by_feat reads, and the
# graph's output name of each (with the level appended: 'cls_score_0', ...).
LEVEL_OUTPUTS = dict(cls_scores='cls_score', bbox_preds='bbox_pred',
                     centernesses='centerness', box_feats='box_feat')
INPUT_NAME = 'inputs'


def output_names(num_levels: int) -> List[str]:
    """The graph's outputs, in order: the per-level fields, level by level
    within each, then ``'basis'``."""
    return [f'{name}_{level}' for name in LEVEL_OUTPUTS.values()
            for level in range(num_levels)] + ['basis']


def dynamic_axes(num_levels: int) -> Dict[str, Dict[int, str]]:
    """Batch, height and width of the input and of every output dynamic,
    for ``torch.onnx.export``."""
    axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
    for name in output_names(num_levels):
        axes[name] = {0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
    return axes


class DenseNetwork(nn.Module):
    """The part of ``detector`` that is exported: batch inputs (N, 3, H, W)
    to the tensors of :func:`output_names`, as a flat tuple, in eval mode
    (``torch.onnx.export`` puts a module back in the mode it found it in,
    so a wrapper left in training mode would leave the detector there)."""

    def __init__(self, detector: DR1Mask) -> None:
        super().__init__()
        self.detector = detector
        self.eval()

    @property
    def num_levels(self) -> int:
        return len(self.detector.bbox_head.strides)

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        feats = self.detector._forward(inputs)
        return tuple(t for field in LEVEL_OUTPUTS
                     for t in getattr(feats, field)) + (feats.basis, )


def export_onnx(detector: DR1Mask,
                onnx_file: str,
                shape: Tuple[int, int] = (512, 512),
                opset: int = 17) -> None:
    """Write ``detector``'s :class:`DenseNetwork` to ``onnx_file``, traced
    at batch 1 and ``shape`` (H, W) with torch's TorchScript-based exporter
    (``dynamo=False``: it needs no package beyond ``onnx``); batch, height
    and width stay dynamic."""
    network = DenseNetwork(detector)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns of each shape check in the model (they run at
        # trace time only) and torch of this exporter's successor.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            network, (torch.zeros(1, 3, *shape), ),
            onnx_file,
            input_names=[INPUT_NAME],
            output_names=output_names(network.num_levels),
            dynamic_axes=dynamic_axes(network.num_levels),
            opset_version=opset,
            dynamo=False)


class DR1MaskORT(BaseModel):
    """A DR1Mask whose dense network runs in ONNX Runtime.

    ``predict`` runs the graph on the preprocessed batch and hands its
    outputs to ``detector.predict_by_feat``; as an mmengine ``BaseModel``
    with the detector's data preprocessor, ``test_step`` (and so mmdet's
    ``inference_detector``) works as with the detector itself.

    Args:
        detector (DR1Mask): built from the config the graph was exported
            from, with the checkpoint's weights: its post-processing layers
            (instance module, panoptic layer, the top layer's embeddings)
            run in PyTorch.
        onnx_file (str): the graph of ``tools/deployment/export_onnx.py``.
        providers (Sequence[str]): ONNX Runtime execution providers.
        threads (int, optional): ONNX Runtime's intra-op threads; None is
            its default (one per core).
    """

    def __init__(self,
                 detector: DR1Mask,
                 onnx_file: str,
                 providers: Sequence[str] = ('CPUExecutionProvider', ),
                 threads: Optional[int] = None) -> None:
        super().__init__(data_preprocessor=detector.data_preprocessor)
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(
                'DR1MaskORT needs onnxruntime: pip install the onnxruntime '
                'version pinned in requirements.txt') from error
        self.detector = detector.eval()
        self.cfg = getattr(detector, 'cfg', None)
        self.dataset_meta = getattr(detector, 'dataset_meta', None)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            onnx_file, options, providers=list(providers))
        self.num_levels = len(detector.bbox_head.strides)
        expected = output_names(self.num_levels)
        found = [output.name for output in self.session.get_outputs()]
        if found != expected:
            raise ValueError(
                f'{onnx_file}: outputs {found}, but this DR1Mask config has '
                f'{self.num_levels} FPN levels and needs {expected}: export '
                'the graph from the same config with '
                'tools/deployment/export_onnx.py')

    @property
    def with_panoptic(self) -> bool:
        return self.detector.with_panoptic

    def features(self, inputs: Tensor) -> DR1MaskFeatures:
        """The graph's outputs on ``inputs`` (N, 3, H, W) as
        :class:`DR1MaskFeatures`; ``fpn`` and ``contexts``, which the
        post-processing does not read, are empty."""
        outputs = self.session.run(
            None, {INPUT_NAME: inputs.detach().cpu().float().numpy()})
        tensors = [torch.from_numpy(o).to(inputs.device) for o in outputs]
        n = self.num_levels
        per_field = [tensors[i * n:(i + 1) * n]
                     for i in range(len(LEVEL_OUTPUTS))]
        return DR1MaskFeatures((), *per_field, [], tensors[-1])

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """:meth:`DR1Mask.predict`, with the dense network in ONNX
        Runtime."""
        with torch.no_grad():
            return self.detector.predict_by_feat(
                self.features(batch_inputs), batch_data_samples, rescale)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[SampleList] = None,
                mode: str = 'predict'
                ) -> Union[SampleList, DR1MaskFeatures]:
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.features(inputs)
        raise RuntimeError(f"DR1MaskORT runs mode='predict' or 'tensor', "
                           f'not {mode!r}: train the PyTorch model')
