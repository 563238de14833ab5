# GPD* for FCOS (GroupNorm head) on COCO (no static teacher): the FCOS-R18-FPN
# student of configs/baselines/fcos_r18_fpn_gn-head_1x_coco.py and a 2x-wide
# dynamic teacher grown by IR (backbone, FPN and the GN head with r*G groups:
# exact). Terms: the task losses (focal, IoU, centerness) of S and T_d, the gap
# term (dense KD sg(T_d) -> S on the classification maps) and feature
# distillation T_d -> S on the FPN levels (folded by the inverse replica map).
_base_ = '../baselines/fcos_r18_fpn_gn-head_1x_coco.py'

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        init='preserve',  # the student starts from ImageNet weights
        noise=1e-6,
        gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0,
                      loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
