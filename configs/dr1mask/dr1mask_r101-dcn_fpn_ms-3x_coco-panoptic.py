_base_ = './dr1mask_r101_fpn_ms-3x_coco-panoptic.py'

# Deformable convolutions in C3-C5 (the paper's "DR1Mask*", Table 9).
model = dict(
    backbone=dict(
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
