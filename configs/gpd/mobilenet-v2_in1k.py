# DKD + GPD on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2 student.
# The paper's student is MobileNet *v1* (DKD 72.05 -> DKD + GPD 73.63 top-1);
# mmpretrain has no MobileNetV1, so this config uses MobileNetV2 — the paper's
# numbers do not transfer.
#
# The student and the data pipeline come from the mmpretrain base; the schedule
# is GPD's CNN recipe (the reference ran the same command for MobileNet as for
# ResNet-18), not mmpretrain's 300-epoch MobileNetV2 one: 100 epochs, SGD lr
# 0.1, momentum 0.9, wd 1e-4, x0.1 at 30 / 60 / 90, batch 512, clip 5, EMA.
# DKD uses beta 2.0 (the reference's MobileNet setting), GPD ratio 2.
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain MobileNetV2 (1.0x)
    # mmpretrain's ResNet-50 (76.55 top-1; the paper's torchvision one: 76.16)
    teacher=dict(
        type='ImageClassifier',
        backbone=dict(
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(3, ),
            style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=1000,
            in_channels=2048,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, 5),
        )),
    teacher_ckpt='https://download.openmmlab.com/mmclassification/v0/resnet/'
    'resnet50_8xb32_in1k_20210831-ea4938fc.pth',
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        branches=True,  # only the 3x3 stride-1 depthwise convs qualify
        init='scratch',
        noise=1e-6,
        strategy='hard',
        kd_loss=dict(
            type='mmgpd.DKDLoss', alpha=1.0, beta=2.0, temperature=1.0),
        kd_targets=('student', 'dynamic_teacher'),
        gap_loss=dict(
            type='mmgpd.SoftTargetCrossEntropy', smoothing=0.1,
            loss_weight=3.0)))

# 4 GPUs x 128 = 512 images per step at lr 0.1; --auto-scale-lr otherwise.
train_dataloader = dict(batch_size=128)
auto_scale_lr = dict(base_batch_size=512)

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=5))

param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True,
    milestones=[30, 60, 90], gamma=0.1)

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)

default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='accuracy/top1', rule='greater'))

# EMAHook after GPDHook at the same priority: the student GPDHook saves at a
# validation is the EMA one whose accuracy was reported.
custom_hooks = [
    dict(type='mmgpd.GPDHook'),
    dict(type='EMAHook', momentum=4e-5, priority='NORMAL'),
]
