_base_ = './dr1mask_r50_fpn_ms-3x_coco-panoptic.py'

# Table 6: DR1Basis width D = 32 (64 is the default).
model = dict(basis=dict(channels=32))
