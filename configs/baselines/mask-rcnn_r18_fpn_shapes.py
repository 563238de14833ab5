# Plain mmdet Mask R-CNN R18-FPN on the generated shapes set with its instance
# masks (mmgpd.ShapesDataset, written on first use; each annotation carries the
# shape's exact mask as a COCO RLE): the student of
# configs/gpd_det/mask-rcnn_r18_fpn_shapes.py and the config an extracted
# student is tested with. Sized for a CPU like faster-rcnn_r18_fpn_shapes.py:
# from scratch, a half-width ResNet-18 (base_channels 32), a 64-wide FPN, RPN,
# RoI extractors and mask head (4 convs of 64 channels, deconv to 28x28), 256-wide
# shared FCs, anchors from 16 px, the set at 64x64; evaluated on boxes and masks.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/shapes_det.py',
    'mmdet::_base_/default_runtime.py',
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
            num_classes=4),  # ShapesDataset: square, circle, triangle, cross
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=4)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# The shapes set at 64x64 (data/shapes_64/), boxes and masks.
img_scale = (64, 64)
shapes = dict(data_root='data/shapes_64/', img_size=64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, **shapes))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, **shapes))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=shapes['data_root'] + 'annotations/instances_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_epochs = 30
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         T_max=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=1),
                     logger=dict(interval=10))
randomness = dict(seed=0)
