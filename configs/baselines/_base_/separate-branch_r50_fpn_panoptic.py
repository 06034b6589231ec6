_base_ = '../../dr1mask/_base_/dr1mask_r50_fpn_panoptic.py'

# The same-detector baseline (the paper's Table 9 peer, BlendMask): the
# panoptic DR1Mask model with a separate semantic branch and heuristic fusion
# instead of the unified panoptic layer. mmdet's PanopticFPNHead and
# HeuristicFusionHead default to COCO's 80 + 53 classes and 256 channels; the
# branch's loss weight is BlendMask's and Panoptic-FPN's, 0.5.
model = dict(
    type='DR1MaskSeparateBranch',
    # PanopticFPNHead sums P3-P5 upsampled by 2 and 4: the levels halve
    # exactly when the input is padded to 32, as BlendMask pads it.
    data_preprocessor=dict(pad_size_divisor=32),
    panoptic_head=None,
    seg_head=dict(
        type='PanopticFPNHead',
        end_level=3,
        loss_seg=dict(
            type='CrossEntropyLoss', ignore_index=255, loss_weight=0.5)),
    panoptic_fusion_head=dict(type='HeuristicFusionHead'))
