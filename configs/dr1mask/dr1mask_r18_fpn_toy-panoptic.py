_base_ = './dr1mask_r50_fpn_1x_coco-panoptic.py'

# The embedded default: panoptic DR1Mask on the generated toy set
# (tools/misc/generate_toy_panoptic.py), small enough to train and evaluate
# on 2 CPU cores. ResNet-18 from scratch: no weights can be fetched here.
data_root = 'data/toy_panoptic/'
thing_classes = ('disk', 'square', 'triangle', 'ring')
stuff_classes = ('sky', 'grass', 'brick')
metainfo = dict(
    classes=thing_classes + stuff_classes,
    thing_classes=thing_classes,
    stuff_classes=stuff_classes)

model = dict(
    backbone=dict(
        depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    bbox_head=dict(
        num_classes=len(thing_classes),
        in_channels=128,
        feat_channels=128,
        stacked_convs=2),
    basis=dict(in_channels=128, channels=32),
    # Mask and panoptic losses at 0.25: from scratch, their gradients reach
    # the box tower through the top layer (the embeddings) several times
    # stronger than the box losses', and the total is clipped, so at 1.0
    # the detector would get a small share of every step (docs/learning.md, gradient balance).
    mask_head=dict(
        loss_mask=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.25)),
    semantic_head=dict(
        num_things_classes=len(thing_classes),
        in_channels=128,
        feat_channels=64),
    panoptic_head=dict(
        num_things_classes=len(thing_classes),
        num_stuff_classes=len(stuff_classes),
        loss_weight=0.25),
    test_cfg=dict(
        panoptic=dict(
            # chosen by a sweep over 0.2..0.5 on the toy val set (docs/fidelity.md)
            score_thr=0.3,
            # Chosen from the training set, not the val score: 98 % of its
            # stuff segments are larger (1st percentile 330 px); smaller
            # predicted ones are fragments.
            stuff_area_limit=512)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations'),
    dict(type='Resize', scale_factor=1.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0),
    dict(type='LoadPanopticAnnotations'),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# `--tta`: the images at their size (the reference view) and 1.5 times it,
# each plain and flipped: 4 views (docs/learning.md, test-time augmentation).
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=1.0),
                dict(type='Resize', scale_factor=1.5)
            ],
            [dict(type='RandomFlip', prob=0.),
             dict(type='RandomFlip', prob=1.)],
            [dict(type='LoadPanopticAnnotations')],
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                               'scale_factor', 'flip', 'flip_direction'))
            ]
        ])
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_train.json',
        data_prefix=dict(img='train/', seg='annotations/panoptic_train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_val.json',
        data_prefix=dict(img='val/', seg='annotations/panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(
        type='CocoPanopticMetric',
        ann_file=data_root + 'annotations/panoptic_val.json',
        seg_prefix=data_root + 'annotations/panoptic_val/',
        classwise=True),
    dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val.json',
        metric=['bbox', 'segm']),
    dict(type='PanopticMIoUMetric')
]
test_evaluator = val_evaluator

# A CPU schedule, about 10 minutes on 2 cores: warm-up, one step, evaluation
# at the end.
max_iters = 800
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[650],
        gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.02), clip_grad=dict(max_norm=10))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=20)
