_base_ = [
    './_base_/coco_panoptic_ms.py', './_base_/schedule_90k.py',
    './_base_/dr1mask_r50_fpn_panoptic.py'
]

# Keep the checkpoint with the best PQ (CocoPanopticMetric's key).
default_hooks = dict(
    checkpoint=dict(save_best='coco_panoptic/PQ', rule='greater'))
