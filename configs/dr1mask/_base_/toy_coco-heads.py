_base_ = 'mmdet::_base_/default_runtime.py'

# Memorisation with COCO's class counts: the first 4 toy training images,
# relabelled into COCO panoptic's 80 + 53 classes
# (tools/misc/relabel_toy_coco_classes.py), trained on and evaluated on
# themselves, at the toy set's own image size, batch 1. A model with the COCO
# panoptic config's heads must fit a handful of images; the models inheriting
# this differ from their COCO configs only in the backbone (ResNet-18 from
# scratch: no weights can be fetched here) and share the toy configs'
# optimizer, warm-up and lr step (tools/analysis_tools/equal_budget.py
# --coco-heads).
dataset_type = 'CocoPanopticDataset'
data_root = 'data/toy_panoptic/'
ann_dir = data_root + 'coco_heads/'
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
dataset = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='coco_heads/panoptic.json',
    data_prefix=dict(img='train/', seg='annotations/panoptic_train/'))
train_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        dataset,
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
panoptic_metric = dict(
    type='CocoPanopticMetric',
    ann_file=ann_dir + 'panoptic.json',
    seg_prefix=data_root + 'annotations/panoptic_train/')
val_evaluator = [
    panoptic_metric,
    dict(
        type='CocoMetric',
        ann_file=ann_dir + 'instances.json',
        metric=['bbox', 'segm'])
]
test_evaluator = val_evaluator

# The toy configs' optimizer and schedule at 300 iterations: warm-up over
# 100, lr / 10 at the toy schedule's fraction (650 / 800).
max_iters = 300
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[244],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1,
        save_best='coco_panoptic/PQ',
        rule='greater'))
log_processor = dict(by_epoch=False, window_size=20)
