from .cityscapes_panoptic import CityscapesPanopticDataset
from .dataset_check import CheckPanopticDatasetHook

__all__ = ['CityscapesPanopticDataset', 'CheckPanopticDatasetHook']
