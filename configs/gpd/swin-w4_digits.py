# GPD* (from scratch, no static teacher, hard strategy) on the embedded digits
# data with a 2-stage Swin (embed 32, heads 2 / 4,
# window 4, patch 2: hand-written window attention with relative-position bias,
# shifted windows, patch merging) as the student: the dynamic teacher is IR of it at
# ratio 2 (branches on the eligible k x k stride-1 convs); schedule and gap term
# of ./resnet_digits.py.
_base_ = ['./resnet_digits.py']

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='SwinTransformer',
            arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]),
            img_size=32,
            patch_size=2,
            window_size=4,
            drop_path_rate=0.1,
            out_indices=(1, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(in_channels=64)),
    distiller=dict(branches=True))
