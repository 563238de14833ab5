# KD + GPD: configs/gpd/resnet_digits.py (2x dynamic teacher, hard strategy,
# gap term) plus the frozen static teacher of digits_teacher.py distilled into
# both S and T_d with the same KD loss as digits_kd.py (T 4, weight 1): the
# logit-KD member of the "+ GPD" family beside DKD / ReviewKD / KCD / DPK /
# PESF-KD + GPD (benchmarks/capacity_gap.py). Set model.teacher_ckpt with
# --cfg-options.
_base_ = ['../gpd/resnet_digits.py', './_base_/digits_teacher_model.py']

model = dict(
    teacher={{_base_.bench_teacher_model}},
    teacher_ckpt='work_dirs/digits_teacher/epoch_30.pth',
    distiller=dict(
        kd_loss=dict(type='mmgpd.KDLoss', temperature=4.0, loss_weight=1.0),
        kd_targets=('student', 'dynamic_teacher')))
