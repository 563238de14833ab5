# KD baseline: the plain student (no dynamic teacher) distilled from the frozen
# static teacher of digits_teacher.py with Hinton's KD (T 4, weight 1) on top of
# its own cross-entropy. mmgpd.GPD is used only as the KD harness
# (enable_dynamic_teacher=False: no IR, no gap term); GPDHook reports S / T_s and
# writes the student. Set model.teacher_ckpt with --cfg-options.
_base_ = ['../baselines/resnet_digits.py', './_base_/digits_teacher_model.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        type='mmgpd.GPDDistiller',
        enable_dynamic_teacher=False,
        kd_loss=dict(type='mmgpd.KDLoss', temperature=4.0, loss_weight=1.0),
        kd_targets=('student', ),
        gap_loss=None))

custom_hooks = [dict(type='mmgpd.GPDHook')]
