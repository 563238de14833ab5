# GPD* (no static teacher) on the generated shapes set for a detector with a
# non-ResNet backbone: the RetinaNet-RegNetX-800MF-FPN student of
# configs/baselines/retinanet_regnetx-800MF_fpn_shapes.py (mmdet's RegNet
# detector at shapes-set sizes, from scratch) grows a 2x-wide dynamic teacher by
# IR (RegNet's grouped 3x3 convs keep their group width of 16 and get 2x the
# groups; FPN and head as for R18); hard strategy. Terms: focal + box losses of
# S and T_d, the gap term (dense KD T_d -> S on the classification maps) and
# feature distillation on the FPN levels (T_d's folded back to the student's
# width by the inverse replica map). 30 epochs take ~20 min on 2 CPU cores.
_base_ = ['../baselines/retinanet_regnetx-800MF_fpn_shapes.py']

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
