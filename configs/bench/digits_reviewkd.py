# ReviewKD alone: the plain student (no dynamic teacher) distilled from the
# frozen static teacher of digits_teacher.py with ReviewKD (all four stages +
# the pooled feature, HCL weight 1; _base_/digits_review_pesf.py) beside its
# own cross-entropy; no logit KD. mmgpd.GPD is the harness only
# (enable_dynamic_teacher=False). Set model.teacher_ckpt with --cfg-options.
_base_ = ['../baselines/resnet_digits.py', './_base_/digits_teacher_model.py',
          './_base_/digits_review_pesf.py']

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
        method={{_base_.bench_reviewkd}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_reviewkd_lr}})

custom_hooks = [dict(type='mmgpd.GPDHook')]
