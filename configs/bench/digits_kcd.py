# KCD alone: the plain student (no dynamic teacher) distilled from the frozen
# static teacher of digits_teacher.py on its last stage with KCD
# (_base_/digits_methods.py: the teacher's channels matched to the student's,
# solved offline from the initial student by KCDHook; MSE on the matched
# channels), beside the student's cross-entropy; no logit KD. mmgpd.GPD is the
# harness only (enable_dynamic_teacher=False). Set model.teacher_ckpt with
# --cfg-options.
_base_ = ['../baselines/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_methods.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        type='mmgpd.GPDDistiller',
        enable_dynamic_teacher=False,
        kd_targets=('student', ),
        gap_loss=None,
        method={{_base_.bench_kcd}}))

custom_hooks = [dict(type='mmgpd.GPDHook'), {{_base_.bench_kcd_hook}}]
