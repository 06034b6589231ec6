_base_ = './dr1mask_r50_fpn_ms-3x_coco.py'

# Backbone swapped by config alone: ResNeXt-101 64x4d (same stage widths).
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
