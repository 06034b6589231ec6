from .panoptic_miou_metric import PanopticMIoUMetric

__all__ = ['PanopticMIoUMetric']
