_base_ = './dr1mask_r50_fpn_attn-vector_1x_coco.py'

# Table 3: the contexts A, B from the FPN level itself instead of the box
# tower (the top layer's context part reads P_l).
model = dict(bbox_head=dict(context_source='fpn'))
