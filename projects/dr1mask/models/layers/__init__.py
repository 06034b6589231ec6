from .dr1_basis import DR1Basis, aligned_upsample
from .dr1_conv import DR1Conv
from .instance_module import InstancePredictionModule
from .panoptic_layer import UnifiedPanopticLayer

__all__ = [
    'DR1Conv', 'DR1Basis', 'aligned_upsample', 'InstancePredictionModule',
    'UnifiedPanopticLayer'
]
