# Plain mmdet Faster R-CNN R18-FPN on the generated shapes set
# (mmgpd.ShapesDataset, written on first use): the student of
# configs/gpd_det/faster-rcnn_r18_fpn_shapes.py and the config an extracted
# student is tested with. Sized for a CPU like configs/baselines/
# retinanet_r18_fpn_shapes.py: from scratch, a half-width ResNet-18
# (base_channels 32), a 64-wide FPN, RPN and RoI extractor, 256-wide shared
# FCs, anchors from 16 px (scale 4 at stride 4), the set at 64x64.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/shapes_det_64.py',
    '../_base_/schedules/shapes_det_cpu_30e.py',
]

model = dict(
    backbone=dict(
        depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(
        in_channels=64, feat_channels=64,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(
            in_channels=64, fc_out_channels=256,
            num_classes=4)),  # ShapesDataset: square, circle, triangle, cross
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
