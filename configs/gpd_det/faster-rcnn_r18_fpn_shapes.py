# GPD* (no static teacher) for a two-stage detector on the generated shapes
# set: the Faster R-CNN R18-FPN student of configs/baselines/
# faster-rcnn_r18_fpn_shapes.py grows a 2x-wide dynamic teacher by IR
# (backbone, FPN, RPN conv, RoI extractor, shared FCs; the RPN's and the RoI
# head's prediction layers stay the student's width); hard strategy. T_d
# replays the student's proposals and sampled RoIs. Terms: RPN + RoI losses of
# S and T_d, the gap term on the RPN objectness maps (sigmoid dense KD
# T_d -> S), the RoI gap term (softmax KD T_d -> S on the sampled RoIs' class
# scores) and feature distillation on the FPN levels (T_d's folded back).
_base_ = ['../baselines/faster-rcnn_r18_fpn_shapes.py']

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
        roi_gap_loss=dict(type='mmgpd.KDLoss', temperature=1.0,
                          loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
