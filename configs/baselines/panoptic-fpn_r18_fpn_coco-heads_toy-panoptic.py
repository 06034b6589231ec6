_base_ = [
    '../dr1mask/_base_/toy_coco-heads.py',
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
]

# mmdet's Panoptic-FPN COCO model (panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py
# adds the semantic head and the fusion to Mask R-CNN exactly so; its dataset
# and schedule cannot come along, as they clash with this one's base) with
# ResNet-18 from scratch, on the same relabelled toy images, optimizer and
# schedule as configs/dr1mask/dr1mask_r18_fpn_coco-heads_toy-panoptic.py.
model = dict(
    type='PanopticFPN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        pad_mask=True,
        mask_pad_value=0,
        pad_seg=True,
        seg_pad_value=255),
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    semantic_head=dict(
        type='PanopticFPNHead',
        num_things_classes=80,
        num_stuff_classes=53,
        in_channels=256,
        inner_channels=128,
        start_level=0,
        end_level=4,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        conv_cfg=None,
        loss_seg=dict(
            type='CrossEntropyLoss', ignore_index=255, loss_weight=0.5)),
    panoptic_fusion_head=dict(
        type='HeuristicFusionHead', num_things_classes=80,
        num_stuff_classes=53),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.6,
            nms=dict(type='nms', iou_threshold=0.5, class_agnostic=True),
            max_per_img=100,
            mask_thr_binary=0.5),
        panoptic=dict(mask_overlap=0.5, stuff_area_limit=4096)))
# mmdet's PanopticFPN predicts the panoptic map only.
val_evaluator = [{{_base_.panoptic_metric}}]
test_evaluator = val_evaluator
