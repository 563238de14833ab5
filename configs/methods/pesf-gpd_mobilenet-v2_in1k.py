# PESF-KD + GPD on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2.
# configs/gpd/mobilenet-v2_in1k.py (the GPD paper's 100-epoch CNN protocol)
# with PESF-KD (as in pesf-gpd_resnet18_in1k.py; the adapters read the
# ResNet-50's 2048-wide pooled feature) instead of DKD, into S and T_d.
_base_ = ['../gpd/mobilenet-v2_in1k.py']

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=dict(
            type='mmgpd.PESFKD',
            temperature=4.0,
            alpha=1.0,
            adapter_ce_weight=1.0,
            adapter_kd_weight=1.0,
            target='adapted',
            hidden=32)))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)}))
