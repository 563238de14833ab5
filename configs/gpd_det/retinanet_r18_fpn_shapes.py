# GPD* (no static teacher) for detection on the generated shapes set (`make
# demo-det`): the RetinaNet-R18-FPN student of configs/baselines/
# retinanet_r18_fpn_shapes.py grows a 2x-wide dynamic teacher by IR (backbone,
# FPN and head); hard strategy. Terms: focal + box losses of S and T_d, the gap
# term (dense KD T_d -> S on the classification maps) and feature distillation
# on the FPN levels (T_d's folded back to the student's width by the inverse
# replica map).
_base_ = ['../baselines/retinanet_r18_fpn_shapes.py']

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        init='scratch',
        noise=1e-6,
        gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0,
                      loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
