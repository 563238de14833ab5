# DPK + GPD on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2 student
# (the paper pairs R50 with MobileNet; mmpretrain has no MobileNetV1).
# configs/gpd/mobilenet-v2_in1k.py (GPD's recipe) with DPK instead of DKD as
# the static-teacher term, into S and T_d, on the last stage ('stage4':
# MobileNetV2's conv2, 1280 channels, vs ResNet-50's layer4, 2048 channels;
# 7x7 = 49 tokens): the DPK settings of ./dpk-gpd_resnet18_in1k.py.
# Reconstructed from the paper's description; no number of the paper's is
# claimed (it reports 73.26 top-1 for DPK alone with an R50 teacher and a
# MobileNet student, unverified here).
_base_ = ['../gpd/mobilenet-v2_in1k.py']

dpk = dict(
    type='mmgpd.DPK',
    taps=('stage4', ),
    embed_dim=256,
    patch_size=1,
    enc_depth=4,
    dec_depth=2,
    num_heads=8,
    ratio='cka',
    ratio_clip=(0.0, 0.95),
    loss_weight=1.0)

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=dpk))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)}))
