# KCD + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard strategy,
# gap term) plus KCD (_base_/digits_methods.py, as in digits_kcd.py) from the
# frozen static teacher of digits_teacher.py into both S and T_d, as GPD's
# static-teacher term.
#
# T_d's 'stage4' is folded back to the student's width (256 -> 128 channels by
# the inverse of IR's replica map: exactly S's features at init) before KCD
# sees it, and each target keeps its own assignment, solved from its own
# statistics: the two start equal and drift apart as T_d moves away from S.
# Unfolded, each of T_d's 2C channels carries half of a student channel, and
# an MSE to the teacher would pull one arbitrary replica of each to twice its
# share. Set model.teacher_ckpt with --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_methods.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method={{_base_.bench_kcd}},
        fold_dynamic_teacher_taps=True))

custom_hooks = [dict(type='mmgpd.GPDHook'), {{_base_.bench_kcd_hook}}]
