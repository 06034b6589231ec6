_base_ = [
    '../dr1mask/_base_/coco_panoptic_ms.py',
    '../dr1mask/_base_/schedule_270k.py',
    './_base_/separate-branch_r50_fpn_panoptic.py'
]

# The same-detector baseline on COCO panoptic with the schedule, data and
# thresholds of dr1mask_r50_fpn_ms-3x_coco-panoptic.py: the pair is the
# ablation "unified panoptic layer against a separate branch".
default_hooks = dict(
    checkpoint=dict(save_best='coco_panoptic/PQ', rule='greater'))
