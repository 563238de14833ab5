# GPD* from scratch on ImageNet-1k with an EfficientNet-b0 student (SE gates,
# swish, drop path), no static teacher; ratio 2. Its convs pad adaptively
# (Conv2dAdaptivePadding), which a branch conv would not reproduce: no branches.
# The paper reports no EfficientNet number; everything but the model is
# mmpretrain's EfficientNet-b0 recipe, unchanged.
_base_ = ['mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain EfficientNet-b0
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
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
