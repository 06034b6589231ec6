_base_ = './dr1mask_r101_fpn_ms-3x_coco-panoptic_test-dev.py'

# Table 9, R-101-DCN (the model of dr1mask_r101-dcn_fpn_ms-3x_coco-panoptic.py).
model = dict(
    backbone=dict(
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
