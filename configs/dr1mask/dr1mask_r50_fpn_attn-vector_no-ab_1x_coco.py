_base_ = './dr1mask_r50_fpn_attn-vector_1x_coco.py'

# Tables 1 and 2: no dynamic factor, DR1Basis is a plain FPN-like basis.
model = dict(basis=dict(use_a=False, use_b=False))
