_base_ = [
    '../dr1mask/_base_/toy_coco-heads.py',
    './_base_/separate-branch_r50_fpn_panoptic.py'
]

# separate-branch_r50_fpn_ms-3x_coco-panoptic.py's model with ResNet-18 from
# scratch on the relabelled toy images, as
# dr1mask_r18_fpn_coco-heads_toy-panoptic.py is DR1Mask's.
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
