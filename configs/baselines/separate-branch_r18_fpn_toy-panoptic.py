_base_ = '../dr1mask/dr1mask_r18_fpn_toy-panoptic.py'

# The same-detector baseline on the toy set: DR1Mask's toy model (detector,
# basis, instance module, auxiliary loss, schedule, thresholds) with the
# separate semantic branch and heuristic fusion of
# _base_/separate-branch_r50_fpn_panoptic.py instead of the unified layer,
# at the toy widths and classes.
model = dict(
    type='DR1MaskSeparateBranch',
    # PanopticFPNHead sums P3-P5 upsampled by 2 and 4: the levels halve
    # exactly when the input is padded to 32, as BlendMask pads it.
    data_preprocessor=dict(pad_size_divisor=32),
    panoptic_head=None,
    seg_head=dict(
        type='PanopticFPNHead',
        num_things_classes=4,
        num_stuff_classes=3,
        in_channels=128,
        end_level=3,
        loss_seg=dict(
            type='CrossEntropyLoss', ignore_index=255, loss_weight=0.5)),
    panoptic_fusion_head=dict(
        type='HeuristicFusionHead', num_things_classes=4,
        num_stuff_classes=3))
