# GPD* (from scratch, no static teacher, hard strategy) on the embedded digits
# data with ConvNeXt-atto (LayerNorm2d, layer-scale gamma, GELU MLP) as the
# student: the dynamic teacher is IR of it at
# ratio 2 (branches on the eligible k x k stride-1 convs); schedule and gap term
# of ./resnet_digits.py.
_base_ = ['./resnet_digits.py']

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='ConvNeXt',
            arch='atto',
            drop_path_rate=0.1),
        neck=None,  # ConvNeXt pools before its final norm
        head=dict(in_channels=320)),
    distiller=dict(branches=True))
