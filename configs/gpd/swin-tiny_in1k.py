# GPD* from scratch on ImageNet-1k with a Swin-tiny student, no static teacher.
# IR widens it by 2: 3 -> 6, 6 -> 12 ... heads of the same head dim (window
# attention's qkv replicated per q | k | v segment, q and k exact so the scores
# and the relative-position bias are the student's), patch merging's unfolded
# channels followed; it has no k x k stride-1 conv, so no branches. The paper
# reports no Swin number; everything but the model is mmpretrain's Swin-tiny
# recipe, unchanged (300 epochs, AdamW, batch 64 x 16).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain Swin-tiny
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
