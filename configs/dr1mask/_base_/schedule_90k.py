# The paper's 1x schedule (BlendMask's): batch 16 (8 GPUs x 2), SGD lr 0.01,
# 90k iterations, linear warm-up over 1k, lr / 10 at 60k and 80k.
_base_ = 'mmdet::_base_/default_runtime.py'

max_iters = 90000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[60000, 80000],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000))
log_processor = dict(by_epoch=False)
# Before the first iteration, the panoptic train / val data are checked
# (projects/dr1mask/datasets/dataset_check.py); after each, a NaN or infinite loss
# term stops the run, naming the term and the iteration.
custom_hooks = [
    dict(type='CheckPanopticDatasetHook'),
    dict(type='CheckFiniteLossHook'),
]
