# GPD* (from scratch, no static teacher, hard strategy) on the embedded digits
# data with ShuffleNetV2 x0.5 (channel split, concat and
# shuffle; spaces the teacher's shuffle cannot follow keep the student's width) as the student: the dynamic teacher is IR of it at
# ratio 2 (branches on the eligible k x k stride-1 convs); schedule and gap term
# of ./resnet_digits.py.
_base_ = ['./resnet_digits.py']

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='ShuffleNetV2',
            widen_factor=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(in_channels=1024)),
    distiller=dict(branches=True))
