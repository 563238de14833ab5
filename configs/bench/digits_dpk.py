# DPK alone: the plain student (no dynamic teacher) distilled from the frozen
# static teacher of digits_teacher.py on its last stage with DPK
# (_base_/digits_methods.py: part of the student's tokens replaced by the
# teacher's, pi = 1 - CKA, an encoder-decoder reconstructing the teacher's
# features), beside the student's cross-entropy; no logit KD. The
# encoder-decoder is training-only (distiller.methods, its own learning rate)
# and never reaches the extracted student. Set model.teacher_ckpt with
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
        method={{_base_.bench_dpk}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_dpk_lr}})
custom_hooks = [dict(type='mmgpd.GPDHook')]
