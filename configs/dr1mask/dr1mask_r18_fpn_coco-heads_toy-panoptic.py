_base_ = ['./_base_/toy_coco-heads.py', './_base_/dr1mask_r50_fpn_panoptic.py']

# The COCO panoptic config's model (dr1mask_r50_fpn_ms-3x_coco-panoptic.py:
# 80 + 53 classes, D = 64, mask and panoptic loss weights 1.0, its test_cfg)
# with ResNet-18 from scratch, on a few toy images relabelled into COCO's
# classes (see the base).
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
