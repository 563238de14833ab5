# GPD* from scratch on ImageNet-1k with a DeiT-tiny student, no static teacher.
#
# The paper's transformer is RVT-Ti (RVT-Ti 78.45 -> GPD* 79.85 top-1 from
# scratch), not DeiT: mmpretrain has no RVT, and the paper reports no DeiT
# numbers. IR widens the ViT by 2 (embedding 192 -> 384, 3 -> 6 heads of the
# same head dim, MLP 768 -> 1536); it has no 3x3 stride-1 conv, so no branches.
#
# Everything else is mmpretrain's DeiT-tiny recipe, unchanged: 300 epochs,
# AdamW (lr 1e-3 at batch 1024 = 4 GPUs x 256, wd 0.05), linear warm-up +
# cosine, RandAugment, Mixup / CutMix, label smoothing 0.1, clip 5. (RVT's own
# recipe is similar: AdamW, cosine, 300 epochs, lr 5e-4 per 512.)
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},  # mmpretrain DeiT-tiny ImageClassifier
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
