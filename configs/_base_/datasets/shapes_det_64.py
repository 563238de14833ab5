# The generated shapes set at 64x64 (data/shapes_64/): the
# CPU-sized detection data of configs/baselines/*_shapes.py, 4x cheaper than
# the 128x128 default of ./shapes_det.py, which it inherits. Boxes only; masks
# too: ./shapes_instance_64.py.
_base_ = ['./shapes_det.py']

img_scale = (64, 64)
shapes = dict(data_root='data/shapes_64/', img_size=64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, **shapes))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, **shapes))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=shapes['data_root'] + 'annotations/instances_val.json')
test_evaluator = val_evaluator
