_base_ = 'mmdet::_base_/datasets/coco_panoptic.py'

# Shorter side 640..800, longer side <= 1333 (paper Sec. 4.1), for 1x and 3x.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadPanopticAnnotations', backend_args=None),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# One pass reports PQ, box / mask AP and the mIoU of the panoptic map's
# semantic labels (things and stuff) on the same predictions.
data_root = 'data/coco/'
val_evaluator = [
    dict(
        type='CocoPanopticMetric',
        ann_file=data_root + 'annotations/panoptic_val2017.json',
        seg_prefix=data_root + 'annotations/panoptic_val2017/',
        classwise=True,
        backend_args=None),
    dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val2017.json',
        metric=['bbox', 'segm'],
        backend_args=None),
    dict(type='PanopticMIoUMetric')
]
test_evaluator = val_evaluator

# Test-time augmentation (`tools/test.py ... --tta`): the test scale first
# (the reference view), then the shorter side at the two ends of the training
# range and one beyond it, each plain and flipped: 6 views. The ground truth
# is loaded after the views' resizing and flipping: at the original size.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(1333, 800), keep_ratio=True),
                dict(type='Resize', scale=(1333, 640), keep_ratio=True),
                dict(type='Resize', scale=(1600, 960), keep_ratio=True)
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
