# scikit-learn's handwritten digits (embedded, no download): 1797 8x8 images,
# 10 classes, upscaled to 32x32x3 uint8 by ``mmgpd.DigitsDataset``; fixed
# stratified split of 1347 train / 450 test images.
# ``default_scope`` is left to the model / runtime base (e.g. mmpretrain).
dataset_type = 'mmgpd.DigitsDataset'

data_preprocessor = dict(
    num_classes=10,
    # mean / std of the training split's pixels, in 0..255 units.
    mean=[77.85, 77.85, 77.85],
    std=[95.84, 95.84, 95.84],
    # the three channels are identical: nothing to convert.
    to_rgb=False,
)

# No RandomFlip: mirrored digits are not the same digits.
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    persistent_workers=False,
)

val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        split='test',
        test_mode=True,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
    persistent_workers=False,
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
