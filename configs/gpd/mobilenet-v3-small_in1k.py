# GPD* from scratch on ImageNet-1k with a MobileNetV3-small student (SE gates
# with hard-sigmoid, hard-swish), no static teacher. IR widens it by 2: the SE
# gates' last convs produce exact (factor 1) spaces so the hard-sigmoid sees the
# student's values; 3x3 / 5x5 stride-1 depthwise convs grow branches.
#
# The paper reports no MobileNetV3 number; everything but the model is
# mmpretrain's MobileNetV3-small recipe, unchanged (600 epochs, RMSprop, batch
# 128 x 8, AutoAugment).
_base_ = ['mmpretrain::mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain MobileNetV3-small
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        branches=True,
        init='scratch',
        noise=1e-6,
        strategy='hard',
        gap_loss=dict(
            type='mmgpd.SoftTargetCrossEntropy', smoothing=0.1,
            loss_weight=3.0)))

default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='accuracy/top1', rule='greater'))

custom_hooks = [dict(type='mmgpd.GPDHook')]
