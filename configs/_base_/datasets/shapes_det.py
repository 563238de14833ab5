# Generated shapes detection set (``mmgpd.ShapesDataset``, no download): COCO
# layout under ``data_root``, written on first use by the dataset itself (a
# no-op when it is there): 300 train / 100 val 128x128 RGB images, 4 classes
# ('square', 'circle', 'triangle', 'cross'), 1-4 objects of 14-56 px each.
# Use the same shapes parameters in every dataloader sharing a data_root.
# ``default_scope`` is left to the model / runtime base (mmdet).
dataset_type = 'mmgpd.ShapesDataset'
data_root = 'data/shapes/'
backend_args = None
num_classes = 4
# The native size: Resize is then the identity but records ``scale_factor``
# (1.0), which ``predict(rescale=True)`` needs. Raise it (e.g. to (256, 256))
# to upscale the images.
img_scale = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# Built after the val dataloader (whose dataset writes the file).
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
