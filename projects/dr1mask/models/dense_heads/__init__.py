from .dr1mask_head import DR1MaskHead
from .semantic_head import AuxSemanticHead

__all__ = ['DR1MaskHead', 'AuxSemanticHead']
