from .dr1mask_tta import DR1MaskTTAModel

__all__ = ['DR1MaskTTAModel']
