_base_ = './dr1mask_r101_fpn_ms-3x_coco-panoptic.py'

# COCO test-dev (Table 9): `tools/test.py` writes the submission (the
# panoptic json and PNGs under <outfile_prefix>.panoptic) instead of
# scoring; the server scores it. As mmdet's test-dev settings
# (_base_/datasets/coco_panoptic.py), with no annotation to load.
data_root = 'data/coco/'
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
test_dataloader = dict(
    dataset=dict(
        ann_file='annotations/panoptic_image_info_test-dev2017.json',
        data_prefix=dict(_delete_=True, img='test2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_evaluator = dict(
    _delete_=True,
    type='CocoPanopticMetric',
    format_only=True,
    ann_file=data_root + 'annotations/panoptic_image_info_test-dev2017.json',
    outfile_prefix='./work_dirs/dr1mask_test-dev/panoptic')
# `--tta`: the base's views, with no annotation to load.
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
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                               'scale_factor', 'flip', 'flip_direction'))
            ]
        ])
]
