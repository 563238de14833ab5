# Plain mmdet Mask R-CNN R18-FPN on COCO (mmdet's mask-rcnn_r50_fpn_1x_coco.py with an
# ImageNet-pretrained ResNet-18 backbone): the student of
# configs/gpd_det/mask-rcnn_r18_fpn_1x_coco.py and the config an extracted
# student is tested with.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=18,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
