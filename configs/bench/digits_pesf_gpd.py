# PESF-KD + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard
# strategy, gap term) plus PESF-KD (as in digits_pesf.py) from the frozen
# static teacher of digits_teacher.py into both S and T_d, one adapter per
# target (their sharpness gaps differ). GPDHook logs the sharpness of S, T_d,
# T_s, the adapted T_s that S learns from and the one T_d learns from. Set
# model.teacher_ckpt with --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_review_pesf.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method={{_base_.bench_pesf}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_pesf_lr}})
