_base_ = './dr1mask_r50_fpn_ms-3x_coco.py'

# Backbone swapped by config alone: RegNetX-3.2GF, whose stages are narrower.
model = dict(
    data_preprocessor=dict(
        # RegNet's ImageNet weights expect BGR, pycls statistics.
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='RegNet',
        arch='regnetx_3.2gf',
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://regnetx_3.2gf')),
    neck=dict(in_channels=[96, 192, 432, 1008]))
