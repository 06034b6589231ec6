_base_ = './dr1mask_r50_fpn_1x_coco.py'

# Table 4: BlendMask's full K x 14 x 14 attention.
model = dict(mask_head=dict(attention='full'))
