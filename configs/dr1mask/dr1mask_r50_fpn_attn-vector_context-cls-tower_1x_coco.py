_base_ = './dr1mask_r50_fpn_attn-vector_1x_coco.py'

# Table 3: the contexts A, B from the class tower instead of the box tower.
model = dict(bbox_head=dict(context_source='cls_tower'))
