# GPD for detection on COCO with a non-ResNet backbone: the RetinaNet-RegNetX-
# 800MF-FPN student of mmdet's own config (ImageNet-pretrained RegNetX-800MF,
# 35.6 mAP when trained alone), the RetinaNet-RegNetX-3.2GF-FPN static teacher
# (mmdet's released COCO checkpoint, 39.1 mAP; same data preprocessor, classes,
# anchors and strides), and a 2x-wide dynamic teacher grown out of the student
# by IR and trained with it (hard strategy: one parameter set). IR widens the
# whole detector: RegNet's grouped 3x3 convs keep their group width (16) and get
# 2x the groups; stem, 1x1 convs, shortcuts, BN, FPN and head as for ResNet. It
# is exactly the student at step 0 (tests/models/test_gpd_det_regnet.py).
#
# Terms: focal + box losses of S and T_d; dense KD on the classification maps
# T_s -> S, T_s -> T_d and (the gap term) sg(T_d) -> S; feature distillation on
# the FPN levels, T_d's folded back to the student's 256 channels by the inverse
# replica map. Optimizer and schedule: mmdet's (SGD lr 0.02, weight decay 5e-5,
# gradient clip 35, 12 epochs, batch 2 x 8 GPUs).
_base_ = 'mmdet::regnet/retinanet_regnetx-800MF_fpn_1x_coco.py'

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/regnet/retinanet_regnetx-3.2GF_fpn_1x_coco/retinanet_regnetx-3.2GF_fpn_1x_coco_20200520_163141-cb1509e8.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    # mmdet's retinanet_regnetx-3.2GF_fpn_1x_coco model (written out, not
    # referenced, so that --cfg-options on the student never changes it).
    teacher=dict(
        type='RetinaNet',
        backbone=dict(
            type='RegNet',
            arch='regnetx_3.2gf',
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,
            style='pytorch'),
        neck=dict(
            type='FPN',
            in_channels=[96, 192, 432, 1008],
            out_channels=256,
            start_level=1,
            add_extra_convs='on_input',
            num_outs=5),
        bbox_head=dict(
            type='RetinaHead',
            num_classes=80,
            in_channels=256,
            stacked_convs=4,
            feat_channels=256,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=3,
                ratios=[0.5, 1.0, 2.0],
                strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[.0, .0, .0, .0],
                target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(
                type='FocalLoss',
                use_sigmoid=True,
                gamma=2.0,
                alpha=0.25,
                loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        test_cfg=dict(
            nms_pre=1000,
            min_bbox_size=0,
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100)),
    teacher_ckpt=teacher_ckpt,
    distiller=dict(
        type='mmgpd.GPDDistiller',
        ratio=2,
        init='preserve',  # the student starts from ImageNet weights
        noise=1e-6,
        kd_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0,
                     loss_weight=1.0),
        kd_targets=('student', 'dynamic_teacher'),
        gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0,
                      loss_weight=1.0),
        feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                       normalize=True)))

val_evaluator = dict(_delete_=True, type='mmgpd.PerModelMetric',
                     metric={{_base_.val_evaluator}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmgpd.GPDHook', metric_key='coco/bbox_mAP')]
