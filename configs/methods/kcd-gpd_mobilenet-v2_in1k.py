# KCD + GPD on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2 student
# (the paper pairs R50 with MobileNet; mmpretrain has no MobileNetV1).
# configs/gpd/mobilenet-v2_in1k.py (GPD's recipe) with KCD instead of DKD as
# the static-teacher term, into S and T_d, on the last stage ('stage4':
# MobileNetV2's conv2, 1280 channels, vs ResNet-50's layer4, 2048 channels;
# 7x7): every student channel gets a distinct teacher channel, the 768
# teacher channels matched to none are dropped. Settings as
# ./kcd-gpd_resnet18_in1k.py. Reconstructed from the paper's description; no
# number of the paper's is claimed.
_base_ = ['../gpd/mobilenet-v2_in1k.py']

kcd = dict(
    type='mmgpd.KCD',
    taps=('stage4', ),
    mode='permute',
    loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0, normalize=True))

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=kcd,
        fold_dynamic_teacher_taps=True))

custom_hooks = [
    dict(type='mmgpd.GPDHook'),
    dict(type='EMAHook', momentum=4e-5, priority='NORMAL'),
    dict(type='mmgpd.KCDHook', mode='offline', num_batches=40),
]
