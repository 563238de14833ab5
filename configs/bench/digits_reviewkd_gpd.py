# ReviewKD + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard
# strategy, gap term) plus ReviewKD (as in digits_reviewkd.py) from the frozen
# static teacher of digits_teacher.py into both S and T_d, as GPD's
# static-teacher term (the paper's ReviewKD + GPD). Each target has its own
# ABFs: S's read 16..128 channels, T_d's its 2x-wide taps (32..256; the 1x1
# convs absorb the replica layout, so no fold). Set model.teacher_ckpt with
# --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_review_pesf.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method={{_base_.bench_reviewkd}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_reviewkd_lr}})
