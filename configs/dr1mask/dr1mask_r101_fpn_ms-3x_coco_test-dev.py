_base_ = './dr1mask_r50_fpn_ms-3x_coco_test-dev.py'

# Table 8, R-101 (the model of dr1mask_r101_fpn_ms-3x_coco.py).
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
