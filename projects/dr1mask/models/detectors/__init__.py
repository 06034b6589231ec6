from .dr1mask import DR1Mask, DR1MaskFeatures

__all__ = ['DR1Mask', 'DR1MaskFeatures']
