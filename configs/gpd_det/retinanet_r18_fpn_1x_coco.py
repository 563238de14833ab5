# GPD for detection on COCO, with a static teacher: RetinaNet-R18-FPN student
# (mmdet's own config, ImageNet-pretrained backbone), RetinaNet-R50-FPN static
# teacher (mmdet's released COCO checkpoint, 36.5 mAP), and a 2x-wide dynamic
# teacher grown out of the student by IR (backbone, FPN and head; exactly the
# student at step 0) and trained with it (hard strategy: one parameter set).
#
# Terms: focal + box losses of S and T_d; dense KD on the classification maps
# T_s -> S, T_s -> T_d and (the gap term) sg(T_d) -> S; feature distillation on
# the FPN levels, T_d's folded back to the student's 256 channels by the inverse
# replica map. Validation reports the student's mAP ('coco/bbox_mAP') and the
# teachers' ('dynamic_teacher/coco/bbox_mAP', ...); GPDHook logs the gaps and
# writes student_latest.pth / student_best.pth (plain mmdet checkpoints).
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='mmgpd.GPD',
    architecture={{_base_.model}},
    # mmdet's retinanet_r50_fpn_1x_coco model (written out, not referenced, so
    # that --cfg-options on the student's head never changes the teacher's).
    teacher=dict(
        type='RetinaNet',
        backbone=dict(
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,
            style='pytorch'),
        neck=dict(
            type='FPN',
            in_channels=[256, 512, 1024, 2048],
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
