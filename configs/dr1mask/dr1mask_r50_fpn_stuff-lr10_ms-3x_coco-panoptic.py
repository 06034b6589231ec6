_base_ = './dr1mask_r50_fpn_ms-3x_coco-panoptic.py'

# dr1mask_r50_fpn_ms-3x_coco-panoptic.py with the stuff columns of the
# unified panoptic layer at 10 x the learning rate: the paper's recipe has one
# learning rate; this is measured better with the COCO heads' 53 stuff
# classes on the toy images (dr1mask_r18_fpn_stuff-lr10_coco-heads_toy-
# panoptic.py, docs/learning.md), not yet on COCO.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(panoptic_head=dict(lr_mult=10.0))))
