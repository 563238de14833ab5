# DPK + GPD for detection on the generated shapes set: GPD* of
# retinanet_r18_fpn_shapes.py (2x dynamic teacher, gap term, T_d -> S feature
# term) plus DPK from a frozen static teacher as the static-teacher term, into
# S and T_d, per FPN level ('fpn0' ... 'fpn4'; at 64x64 input 8x8 ... 1x1
# tokens, patch 1): one encoder-decoder and one pi = 1 - CKA per level and
# target. The detector's per-GPU batch is small, so CKA takes one row per
# image and position (C columns) with the biased HSIC estimator (n >= 2; the
# 1x1 levels give one row per image). DPK's structure is reconstructed from
# the paper's description (mmgpd/models/methods/dpk.py); the paper stacked DPK
# on FGD for COCO, which is not here.
#
# Static teacher: the baseline detector (configs/baselines/
# retinanet_r18_fpn_shapes.py) trained alone, e.g.
#   python tools/train.py configs/baselines/retinanet_r18_fpn_shapes.py
# (writes the teacher_ckpt below); or set model.teacher_ckpt with
# --cfg-options.
_base_ = ['./retinanet_r18_fpn_shapes.py']

fpn_levels = ('fpn0', 'fpn1', 'fpn2', 'fpn3', 'fpn4')
model = dict(
    teacher={{_base_.model.architecture}},
    teacher_ckpt='work_dirs/retinanet_r18_fpn_shapes/epoch_30.pth',
    distiller=dict(
        kd_targets=('student', 'dynamic_teacher'),
        method=dict(
            type='mmgpd.DPK',
            taps=fpn_levels,
            embed_dim=64,
            patch_size=1,
            enc_depth=1,
            dec_depth=1,
            num_heads=4,
            ratio='cka',
            ratio_clip=(0.0, 0.95),
            cka_rows='positions',
            cka_estimator='biased',
            loss_weight=1.0)))

# The encoder-decoders' learning rate: 0.1x the detector's (ours).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)}))
