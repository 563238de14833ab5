# The CPU schedule of configs/baselines/*_shapes.py (30 epochs of SGD lr 0.02,
# linear warm-up then cosine, validation every 10 epochs; ~5 min of GPD for the
# half-width RetinaNet-R18 on 2 idle cores) with mmdet's default runtime, which
# it inherits: its hooks are merged here, so list this base instead of
# mmdet::_base_/default_runtime.py, not beside it.
_base_ = ['mmdet::_base_/default_runtime.py']

max_epochs = 30
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         T_max=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=1),
                     logger=dict(interval=10))
randomness = dict(seed=0)
