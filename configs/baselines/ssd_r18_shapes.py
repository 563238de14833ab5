# Plain mmdet SSD-style detector on the generated shapes set (mmgpd.ShapesDataset,
# written on first use): the student of configs/gpd_det/ssd_r18_shapes.py and
# the config an extracted student is tested with. mmdet's SSDHead (softmax over
# the 4 classes + background per anchor, hard negative mining 3:1, smooth L1)
# and SSDNeck (extra 1x1 / 3x3-stride-2 levels; no L2Norm: the first level is
# a ResNet stage, not VGG's conv4_3) on a half-width ResNet-18 (base_channels
# 32) from scratch, the set at 64x64: 4 levels at strides 8 / 16 / 32 / 64,
# anchors of 12-64 px (SSDAnchorGenerator with explicit sizes).
_base_ = [
    '../_base_/datasets/shapes_det_64.py',
    '../_base_/schedules/shapes_det_cpu_30e.py',
]

model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet', depth=18, base_channels=32, num_stages=4,
        out_indices=(1, 2, 3), frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch', init_cfg=None),
    neck=dict(
        type='SSDNeck',
        in_channels=(64, 128, 256),
        out_channels=(64, 128, 256, 128),
        level_strides=(2, ),
        level_paddings=(1, ),
        l2_norm_scale=None),
    bbox_head=dict(
        type='SSDHead',
        in_channels=(64, 128, 256, 128),
        num_classes=4,  # ShapesDataset: square, circle, triangle, cross
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=64,
            strides=[8, 16, 32, 64],
            ratios=([2], [2, 3], [2, 3], [2]),
            min_sizes=[12, 20, 30, 44],
            max_sizes=[20, 30, 44, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[0.1, 0.1, 0.2, 0.2])),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.5,
            min_pos_iou=0.,
            ignore_iof_thr=-1,
            gt_max_assign_all=False),
        sampler=dict(type='PseudoSampler'),
        smoothl1_beta=1.,
        allowed_border=-1,
        pos_weight=-1,
        neg_pos_ratio=3,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=100))
