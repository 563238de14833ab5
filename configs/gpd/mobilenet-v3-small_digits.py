# GPD* (from scratch, no static teacher, hard strategy) on the embedded digits
# data with MobileNetV3-small (SE gates with hard-sigmoid, hard-swish) as the student: the dynamic teacher is IR of it at
# ratio 2 (branches on the eligible k x k stride-1 convs); schedule and gap term
# of ./resnet_digits.py.
_base_ = ['./resnet_digits.py']

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='MobileNetV3',
            arch='small'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(in_channels=576)),
    distiller=dict(branches=True))
