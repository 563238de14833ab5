# GPD* from scratch on ImageNet-1k with a ConvNeXt-atto student (LayerNorm2d,
# layer-scale gamma, GELU MLP), no static teacher; ratio 2, branches on the 7x7
# depthwise convs. mmpretrain ships no ConvNeXt-atto config: this is its
# ConvNeXt-tiny recipe (300 epochs, AdamW, EMA) with arch='atto' (320 final
# channels). The paper reports no ConvNeXt number.
_base_ = ['mmpretrain::convnext/convnext-tiny_32xb128_in1k.py']
_base_.model.backbone.arch = 'atto'
_base_.model.head.in_channels = 320

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain ConvNeXt, arch atto
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

custom_hooks = [
    dict(type='mmgpd.GPDHook'),
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
]
