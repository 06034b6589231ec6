_base_ = './dr1mask_r50_fpn_1x_coco.py'

# Table 4: YOLACT's channel-weight (vector) blending.
model = dict(mask_head=dict(attention='vector'))
