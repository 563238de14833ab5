# Plain mmdet FCOS (GroupNorm head) with an ImageNet-pretrained ResNet-18
# (pytorch style) + FPN, on mmdet's fcos_r50-caffe_fpn_gn-head_1x_coco recipe:
# the student of configs/gpd_det/fcos_r18_fpn_1x_coco.py.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        depth=18,
        style='pytorch',
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
