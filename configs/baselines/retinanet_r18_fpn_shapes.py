# Plain mmdet RetinaNet-R18-FPN on the generated shapes set (mmgpd.ShapesDataset,
# written on first use): the student of configs/gpd_det/retinanet_r18_fpn_shapes.py
# and the config an extracted student is tested with. Sized for a CPU: from
# scratch (no ImageNet weights), a half-width ResNet-18 (base_channels 32: its
# 2x dynamic teacher has the standard R18 widths), a 64-wide FPN and a 2-conv
# head, anchors from 16 px, the set generated at 64x64 (objects of 14-32 px).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/shapes_det_64.py',
    '../_base_/schedules/shapes_det_cpu_30e.py',
]

model = dict(
    backbone=dict(
        depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    bbox_head=dict(
        num_classes=4,  # ShapesDataset: square, circle, triangle, cross
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        anchor_generator=dict(octave_base_scale=2)))
