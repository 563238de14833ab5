# DPK + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard strategy,
# gap term) plus DPK (_base_/digits_methods.py, as in digits_dpk.py) from the
# frozen static teacher of digits_teacher.py into both S and T_d, as GPD's
# static-teacher term: one encoder-decoder (and one pi) per target. T_d's
# 'stage4' stays 256 wide (its tokeniser is sized for it; CKA, hence pi, is
# the same for the replicated features as for S's at init).
# Set model.teacher_ckpt with --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_methods.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method={{_base_.bench_dpk}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_dpk_lr}})
