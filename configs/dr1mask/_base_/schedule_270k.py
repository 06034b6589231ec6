# The paper's 3x schedule: 270k iterations, lr / 10 at 180k and 240k.
_base_ = './schedule_90k.py'

max_iters = 270000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[180000, 240000],
        gamma=0.1)
]
