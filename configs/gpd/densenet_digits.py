# GPD* (from scratch, no static teacher, hard strategy) on the embedded digits
# data with a small DenseNet (growth 8, 4 blocks of 2
# layers: channel concatenation) as the student: the dynamic teacher is IR of it at
# ratio 2 (branches on the eligible k x k stride-1 convs); schedule and gap term
# of ./resnet_digits.py.
_base_ = ['./resnet_digits.py']

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='DenseNet',
            arch=dict(growth_rate=8, depths=[2, 2, 2, 2], init_channels=16)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(in_channels=32)),
    distiller=dict(branches=True))
