# GPD* (no static teacher) for a softmax dense head on the generated shapes set:
# the SSD-style student of configs/baselines/ssd_r18_shapes.py (mmdet's
# SSDHead + SSDNeck on a half-width ResNet-18) grows a 2x-wide dynamic teacher
# by IR (backbone, the neck's extra levels; the head's class / box convs keep
# their outputs); hard strategy. Terms: SSD's losses (softmax CE with hard
# negative mining, smooth L1) of S and T_d, the gap term as a softmax dense KD
# sg(T_d) -> S (mmgpd.SoftmaxDenseKDLoss: KL over the 4 classes + background of
# every anchor, averaged over the anchors) and feature distillation on the
# neck's levels (T_d's folded back to the student's widths).
_base_ = ['../baselines/ssd_r18_shapes.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        init='scratch',
        noise=1e-6,
        gap_loss=dict(type='mmgpd.SoftmaxDenseKDLoss', temperature=1.0,
                      loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
