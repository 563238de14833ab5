# A plain mmpretrain classifier (no mmgpd algorithm) on the embedded digits
# dataset: a small CIFAR-style ResNet-18 (base width 16, 128 final channels).
_base_ = [
    'mmpretrain::_base_/default_runtime.py',  # default_scope='mmpretrain'
    '../_base_/datasets/digits.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        num_stages=4,
        out_indices=(3, ),
        stem_channels=16,
        base_channels=16,
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,  # base_channels * 2**(num_stages - 1)
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))

param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=30,
                       eta_min=0.0, convert_to_iter_based=True)

train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=5)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(
        type='CheckpointHook', interval=10, max_keep_ckpts=1,
        save_best='auto'),
)

randomness = dict(seed=0, deterministic=False)
