_base_ = './dr1mask_r50_fpn_1x_coco-panoptic.py'

# Table 2: no dynamic factor, DR1Basis is a plain FPN-like basis.
model = dict(basis=dict(use_a=False, use_b=False))
