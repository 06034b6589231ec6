# DR1Mask R-50-FPN for COCO instance segmentation: factored attention, D = 32
# (paper Sec. 4.1; the detector's settings are FCOS's and BlendMask's).
# `projects.dr1mask.engine.safe_checkpoints` lets torch's weights_only loading read
# the checkpoints mmengine's runner writes (see that module).
custom_imports = dict(
    imports=['projects.dr1mask', 'projects.dr1mask.engine.safe_checkpoints'],
    allow_failed_imports=False)

model = dict(
    type='DR1Mask',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        # Pad to 4, not 32: DR1Basis realigns the levels itself (Table 5).
        pad_size_divisor=4),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='DR1MaskHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        conv_bias=True,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    basis=dict(type='DR1Basis', in_channels=256, channels=32),
    mask_head=dict(
        type='InstancePredictionModule',
        attention='factored',
        num_bases=4,
        attention_size=14,
        attention_rank=4,
        mask_size=56,
        max_masks_per_img=200),
    semantic_head=dict(type='AuxSemanticHead', num_things_classes=80),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100,
        mask_thr=0.5))

# `tools/test.py CONFIG CKPT --tta` wraps the model in this and feeds it the
# views of `tta_pipeline`: detections merged by NMS, masks and panoptic
# logits averaged over the views (projects/dr1mask/models/test_time_augs/dr1mask_tta.py). The
# merge's NMS IoU is mmdet's TTA default, 0.5, not test_cfg's 0.6: at 0.6 the
# views' near-duplicates of one object survive it (docs/learning.md, test-time
# augmentation).
tta_model = dict(
    type='DR1MaskTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
