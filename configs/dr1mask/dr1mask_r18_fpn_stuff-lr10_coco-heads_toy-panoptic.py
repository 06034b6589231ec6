_base_ = './dr1mask_r18_fpn_coco-heads_toy-panoptic.py'

# The stuff columns of the unified panoptic layer at 10 x the learning rate.
# They classify the basis F, whose squared norm per location is 6-9 x smaller
# than that of the semantic FPN head's features (64 against 128 channels, one
# map against a sum of three), so at one learning rate a linear classifier on
# F moves several times slower; with 53 stuff classes this is what holds
# stuff back (docs/learning.md, stuff with many classes).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(panoptic_head=dict(lr_mult=10.0))))
