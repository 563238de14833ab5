# Plain mmdet RetinaNet-RegNetX-800MF-FPN on the generated shapes set
# (mmgpd.ShapesDataset, written on first use): the student of
# configs/gpd_det/retinanet_regnetx-800MF_fpn_shapes.py and the config an
# extracted student is tested with. The detector of mmdet's
# regnet/retinanet_regnetx-800MF_fpn_1x_coco.py (backbone, RegNet data
# preprocessor, FPN inputs) at the sizes of ./retinanet_r18_fpn_shapes.py, whose
# dataset, schedule and runtime it keeps: from scratch (no ImageNet weights, no
# frozen stage, BN in train mode), a 64-wide FPN and a 2-conv head, anchors from
# 16 px, the set at 64x64. On 2 CPU cores a GPD step (batch 8) takes ~0.9 s,
# ~3x the half-width R18's.
_base_ = ['./retinanet_r18_fpn_shapes.py']

model = dict(
    # mmdet's RegNet configs: the pycls mean / std, BGR input
    data_preprocessor=dict(
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='RegNet',
        arch='regnetx_800mf',  # stage widths 64, 128, 288, 672; groups of 16
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 288, 672], out_channels=64))
