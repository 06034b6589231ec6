_base_ = './dr1mask_r50_fpn_attn-vector_1x_coco.py'

# Table 1: the output factor B alone.
model = dict(basis=dict(use_a=False, use_b=True))
