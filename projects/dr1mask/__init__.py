"""DR1Mask (Chen, Shen, Tian, arXiv 2011.09796) for MMDetection 3.x.

Importing this package registers its modules into mmdet's registries and
changes nothing else.
"""
from .check_finite_loss_hook import CheckFiniteLossHook
from .cityscapes_panoptic import CityscapesPanopticDataset
from .dataset_check import CheckPanopticDatasetHook
from .dr1_basis import DR1Basis, aligned_upsample
from .dr1_conv import DR1Conv
from .dr1mask import DR1Mask, DR1MaskFeatures
from .dr1mask_head import DR1MaskHead
from .dr1mask_tta import DR1MaskTTAModel
from .instance_module import InstancePredictionModule
from .onnx_runtime import DR1MaskORT
from .panoptic_layer import UnifiedPanopticLayer
from .panoptic_miou_metric import PanopticMIoUMetric
from .semantic_head import AuxSemanticHead

__all__ = [
    'DR1Conv', 'DR1Basis', 'aligned_upsample', 'DR1MaskHead',
    'InstancePredictionModule', 'UnifiedPanopticLayer', 'AuxSemanticHead',
    'DR1Mask', 'DR1MaskFeatures', 'DR1MaskTTAModel', 'DR1MaskORT',
    'CityscapesPanopticDataset', 'PanopticMIoUMetric',
    'CheckPanopticDatasetHook', 'CheckFiniteLossHook'
]
