_base_ = './panoptic-fpn_r18_fpn_toy-panoptic.py'

# The instance half of the toy Panoptic-FPN as a plain mmdet Mask R-CNN: the
# same backbone, neck, RPN and RoI head (taken from the base config, so a
# Panoptic-FPN checkpoint loads with no missing key; its semantic head is
# left unused), evaluated with box / mask AP on the toy instance annotations.
# mmdet's PanopticFPN.predict drops `pred_instances`, so this is how its mask
# AP is measured:
#   tools/test.py configs/baselines/mask-rcnn_r18_fpn_toy-from-panoptic-fpn.py \
#       <panoptic-fpn work dir>/iter_300.pth
# Evaluation only (no train dataloader); the boxes are kept from score 0.05,
# as for DR1Mask's AP, not from the panoptic fusion's 0.6.
data_root = 'data/toy_panoptic/'

model = dict(
    _delete_=True,
    type='MaskRCNN',
    # Panoptic-FPN's own; its segmentation padding has nothing to pad here.
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    neck={{_base_.model.neck}},
    rpn_head={{_base_.model.rpn_head}},
    roi_head={{_base_.model.roi_head}},
    train_cfg={{_base_.model.train_cfg}},
    test_cfg=dict(
        rpn={{_base_.model.test_cfg.rpn}},
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100,
            mask_thr_binary=0.5)))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes={{_base_.thing_classes}}),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator
