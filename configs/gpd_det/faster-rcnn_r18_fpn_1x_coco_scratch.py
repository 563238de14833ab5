# GPD* for Faster R-CNN on COCO (no static teacher): the R18-FPN student and
# its 2x-wide dynamic teacher (IR, hard strategy) only. Terms: the RPN + RoI
# losses of S and T_d, the gap terms (RPN objectness dense KD and RoI softmax
# KD sg(T_d) -> S on the student's sampled RoIs) and feature distillation
# T_d -> S on the FPN levels.
_base_ = './faster-rcnn_r18_fpn_1x_coco.py'

model = dict(
    teacher=None,
    teacher_ckpt=None,
    distiller=dict(kd_loss=None, roi_kd_loss=None))
