_base_ = [
    './_base_/coco_instance_ms.py', './_base_/schedule_270k.py',
    './_base_/dr1mask_r50_fpn.py'
]

# Keep the checkpoint with the best mask AP (CocoMetric's key).
default_hooks = dict(
    checkpoint=dict(save_best='coco/segm_mAP', rule='greater'))
