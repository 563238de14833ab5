# PESF-KD alone: the plain student (no dynamic teacher) distilled from the
# frozen static teacher of digits_teacher.py through a zero-initialised
# adapter on the teacher (_base_/digits_review_pesf.py: KL at T 4 to the
# adapted logits, the adapter trained with CE + KL at 0.1x the student's lr)
# beside its own cross-entropy. GPDHook logs the sharpness of S, T_s and the
# adapted T_s at every validation. Set model.teacher_ckpt with --cfg-options.
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
        method={{_base_.bench_pesf}}))

optim_wrapper = dict(paramwise_cfg={{_base_.bench_pesf_lr}})

custom_hooks = [dict(type='mmgpd.GPDHook')]
