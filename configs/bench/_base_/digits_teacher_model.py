# The static teacher of the digits benchmark (benchmarks/accuracy.py), as a
# variable so that method configs can use it beside the student's `model`
# (two bases may not both define `model`): a CIFAR-style ResNet-34 of base
# width 32 (~8x the student's compute, 256 final channels).
bench_teacher_model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=34,
        num_stages=4,
        out_indices=(3, ),
        stem_channels=32,
        base_channels=32,
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=256,  # base_channels * 2**(num_stages - 1)
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ))
