from .dr1mask import DR1Mask, DR1MaskFeatures
from .separate_branch import DR1MaskSeparateBranch

__all__ = ['DR1Mask', 'DR1MaskFeatures', 'DR1MaskSeparateBranch']
