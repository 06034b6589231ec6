from .onnx_runtime import DR1MaskORT

__all__ = ['DR1MaskORT']
