# KCD + GPD for detection on the generated shapes set: GPD* of
# retinanet_r18_fpn_shapes.py (2x dynamic teacher, gap term, T_d -> S feature
# term) plus KCD from a frozen static teacher as the static-teacher term, into
# S and T_d, per FPN level ('fpn0' ... 'fpn4': 64 student vs 64 teacher
# channels; at 64x64 input 8x8 ... 1x1): one channel assignment per level and
# target (Hungarian on the cross-correlation of standardised channels, solved
# by KCDHook before training from the initial student), MSE on the matched
# channels. T_d's levels are folded back to the student's width before KCD
# sees them (as the T_d -> S feature term does). KCD's transform and its
# offline solve are reconstructed from the paper's description
# (mmgpd/models/methods/kcd.py).
#
# Static teacher: the baseline detector (configs/baselines/
# retinanet_r18_fpn_shapes.py) trained alone, e.g.
#   python tools/train.py configs/baselines/retinanet_r18_fpn_shapes.py
# (writes the teacher_ckpt below); or set model.teacher_ckpt with
# --cfg-options.
_base_ = ['./retinanet_r18_fpn_shapes.py']

fpn_levels = ('fpn0', 'fpn1', 'fpn2', 'fpn3', 'fpn4')
model = dict(
    teacher={{_base_.model.architecture}},
    teacher_ckpt='work_dirs/retinanet_r18_fpn_shapes/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method=dict(
            type='mmgpd.KCD',
            taps=fpn_levels,
            mode='permute',
            loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                      normalize=True)),
        fold_dynamic_teacher_taps=True))

custom_hooks = [
    dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP'),
    dict(type='mmgpd.KCDHook', mode='offline', num_batches=10),
]
