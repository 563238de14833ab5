# DKD + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard strategy,
# gap term) plus the frozen static teacher of digits_teacher.py distilled into
# both S and T_d with the same DKD loss as digits_dkd.py (the paper's DKD + GPD).
# Set model.teacher_ckpt with --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_loss=dict(
            type='mmgpd.DKDLoss', alpha=1.0, beta=0.5, temperature=1.0),
        kd_targets=('student', 'dynamic_teacher')))
