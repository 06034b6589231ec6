_base_ = './dr1mask_r50_fpn_1x_coco-panoptic.py'

# Panoptic DR1Mask on Cityscapes fine (2975 train / 500 val images, 1024 x
# 2048), converted by tools/dataset_converters/cityscapes_panoptic.py. The
# classes (8 things, 11 stuff) are CityscapesPanopticDataset's, from
# cityscapesscripts' label definitions.
num_things_classes, num_stuff_classes = 8, 11
model = dict(
    # the panoptic width (Table 6), not the 1x ablations' 32
    basis=dict(channels=64),
    bbox_head=dict(num_classes=num_things_classes),
    semantic_head=dict(num_things_classes=num_things_classes),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes),
    # detectron2's Panoptic-DeepLab (config.py: STUFF_AREA 2048, which its
    # Cityscapes configs keep and its COCO ones raise to 4096).
    test_cfg=dict(panoptic=dict(stuff_area_limit=2048)))

# Panoptic-FPN's Cityscapes recipe, as detectron2's Semantic FPN config for
# Cityscapes has it (PointRend/configs/SemanticSegmentation/
# pointrend_semantic_R_101_FPN_1x_cityscapes.yaml): shorter side chosen from
# 512..2048 in steps of 256 (longer side <= 4096, i.e. 0.5x to 2x of
# 1024 x 2048), a 512 x 1024 crop, horizontal flip; the test runs on the
# full 1024 x 2048 image (MIN_SIZE_TEST 1024, MAX_SIZE_TEST 2048). The crop
# may hold no thing (stuff still trains).
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadPanopticAnnotations', backend_args=None),
    dict(
        type='RandomChoiceResize',
        scales=[(4096, 512), (4096, 768), (4096, 1024), (4096, 1280),
                (4096, 1536), (4096, 1792), (4096, 2048)],
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_size=(512, 1024),
        crop_type='absolute',
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    # After Resize: the ground truth keeps the original size, as the
    # predictions do (PQ and mIoU compare the two).
    dict(type='LoadPanopticAnnotations', backend_args=None),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# `--tta`: the test scale first, then shorter sides 768 and 1280 (inside the
# training range), each plain and flipped: 6 views.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
                dict(type='Resize', scale=(1536, 768), keep_ratio=True),
                dict(type='Resize', scale=(2560, 1280), keep_ratio=True)
            ],
            [dict(type='RandomFlip', prob=0.),
             dict(type='RandomFlip', prob=1.)],
            [dict(type='LoadPanopticAnnotations', backend_args=None)],
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                               'scale_factor', 'flip', 'flip_direction'))
            ]
        ])
]

data_root = 'data/cityscapes/'
dataset_type = 'CityscapesPanopticDataset'
# Same source: 32 images per batch (8 GPUs x 4).
train_dataloader = dict(
    batch_size=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/cityscapes_panoptic_train.json',
        data_prefix=dict(
            img='leftImg8bit/train/',
            seg='annotations/cityscapes_panoptic_train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/cityscapes_panoptic_val.json',
        data_prefix=dict(
            img='leftImg8bit/val/', seg='annotations/cityscapes_panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# One pass: PQ (all / things / stuff), box and mask AP of the 8 thing
# classes, mIoU of the 19 classes.
val_evaluator = [
    dict(
        type='CocoPanopticMetric',
        ann_file=data_root + 'annotations/cityscapes_panoptic_val.json',
        seg_prefix=data_root + 'annotations/cityscapes_panoptic_val/',
        classwise=True),
    dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/cityscapes_instances_val.json',
        metric=['bbox', 'segm']),
    dict(type='PanopticMIoUMetric', classwise=True)
]
test_evaluator = val_evaluator

# Same source: SGD, lr 0.01 for batch 32, 65k iterations, lr / 10 at 40k and
# 55k, linear warm-up over 1k (detectron2's default, as the base schedule).
max_iters = 65000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[40000, 55000],
        gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=32)
