# GPD* (no static teacher) for Mask R-CNN on the generated shapes set with its
# exact instance masks: the Mask R-CNN R18-FPN student of configs/baselines/
# mask-rcnn_r18_fpn_shapes.py grows a 2x-wide dynamic teacher by IR (backbone,
# FPN, RPN conv, RoI extractors, shared FCs, the mask head's convs and deconv;
# the RPN's and RoI heads' prediction layers, conv_logits included, stay the
# student's width); hard strategy. T_d replays the student's proposals and
# sampled RoIs, so its mask head trains on the student's positive RoIs and
# mask targets. Terms: RPN + RoI + mask losses of S and T_d, the gap term on
# the RPN objectness maps (sigmoid dense KD T_d -> S), the RoI gap term
# (softmax KD T_d -> S on the sampled RoIs' class scores), the mask gap term
# (binary KL T_d -> S per pixel of the positive RoIs' gt-class mask logits,
# mask_gap_loss) and feature distillation on the FPN levels (T_d's folded
# back). What acts on the mask head: task(S) (mask BCE), the mask gap term,
# and, through the FPN levels it reads, the feature term.
_base_ = ['../baselines/mask-rcnn_r18_fpn_shapes.py']

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
        mask_gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0,
                           loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
