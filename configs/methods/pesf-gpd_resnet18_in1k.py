# PESF-KD + GPD on ImageNet-1k: static ResNet-34 teacher -> ResNet-18 student.
# No published PESF-KD or PESF-KD + GPD number exists for this pair.
#
# configs/gpd/resnet18_in1k.py (the GPD paper's 100-epoch CNN protocol) with
# PESF-KD instead of DKD as the static-teacher term, one adapter per target:
#   * each adapter (512 -> 1000 -> 32 -> 1000, the released CV code's form,
#     ~0.58M parameters, output layer zero-initialised) shifts the frozen
#     ResNet-34's logits; S (and T_d) distil from the adapted logits at T 4
#     (the abstract's form), the adapter learns from CE(adapted, y) +
#     KL(adapted || sg(student));
#   * the adapters train at 0.1x the student's lr (ours: the paper's ImageNet
#     settings could not be read; the CV code's CIFAR ratio is 4e-4).
# GPDHook logs the sharpness (log-sum-exp) of S, T_d, T_s and both adapted
# T_s at every validation.
_base_ = ['../gpd/resnet18_in1k.py']

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
