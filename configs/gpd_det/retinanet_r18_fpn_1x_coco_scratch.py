# GPD* for detection on COCO (no static teacher): the RetinaNet-R18-FPN student
# and its 2x-wide dynamic teacher (IR, hard strategy) only. Terms: the task
# losses of S and T_d, the gap term (dense KD sg(T_d) -> S) and feature
# distillation T_d -> S on the FPN levels (folded by the inverse replica map).
_base_ = './retinanet_r18_fpn_1x_coco.py'

model = dict(
    teacher=None,
    teacher_ckpt=None,
    distiller=dict(kd_loss=None))
