_base_ = './dr1mask_r50_fpn_ms-3x_coco.py'

# COCO test-dev (Table 8): `tools/test.py` writes the submission files
# (<outfile_prefix>.bbox.json, .segm.json) instead of scoring; the server
# scores them. As mmdet's test-dev settings (_base_/datasets/coco_instance.py).
data_root = 'data/coco/'
test_dataloader = dict(
    dataset=dict(
        ann_file='annotations/image_info_test-dev2017.json',
        data_prefix=dict(img='test2017/'),
        test_mode=True))
test_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    metric=['bbox', 'segm'],
    format_only=True,
    ann_file=data_root + 'annotations/image_info_test-dev2017.json',
    outfile_prefix='./work_dirs/dr1mask_test-dev/instances')
