# GPD from scratch (no static teacher) on the embedded digits dataset: the
# student of configs/baselines/resnet_digits.py grows a 2x-wide dynamic teacher
# by IR; hard strategy (shared parameters); gap term 3 * SCE(sg(T_d) -> S).
_base_ = ['../baselines/resnet_digits.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        strategy='hard',
        init='scratch',
        noise=1e-6,
        gap_loss=dict(
            type='mmgpd.SoftTargetCrossEntropy', smoothing=0.1,
            loss_weight=3.0)))

custom_hooks = [dict(type='mmgpd.GPDHook')]
