# ReviewKD + GPD on ImageNet-1k: static ResNet-34 teacher -> ResNet-18 student
# (GPD paper Table 1: ReviewKD 71.61 -> ReviewKD + GPD 72.50 top-1).
#
# configs/gpd/resnet18_in1k.py (the GPD paper's 100-epoch CNN protocol: SGD lr
# 0.1 at batch 512, momentum 0.9, wd 1e-4, x0.1 at 30 / 60 / 90, clip 5, EMA;
# 2x dynamic teacher, hard strategy, OREPA-style branches, gap term
# 3 * SCE(sg(T_d) -> S)) with ReviewKD instead of DKD as the static-teacher
# term, into both S and T_d:
#   * levels: the four stages + the pooled feature (1x1), fused deepest-first
#     by ABFs and regressed to the ResNet-34's with HCL (pyramid 4 / 2 / 1);
#   * weight 1.0, no warm-up, mid width 512: the released ImageNet code's
#     recipe for ResNet-34 -> ResNet-18 (dvlab-research/ReviewKD
#     ImageNet/imagenet_amp.py, --review-kd-loss-weight 1.0; mdistiller's
#     configs/imagenet/r34_r18/reviewkd.yaml likewise);
#   * S's ABFs read 64..512 channels, T_d's its 2x-wide stages (128..1024),
#     both regress to the teacher's 64..512; they train at the student's lr.
# Deviation: the released code reads pre-ReLU stage features; mmpretrain's
# stage outputs are post-ReLU (mmgpd/models/methods/review_kd.py).
_base_ = ['../gpd/resnet18_in1k.py']

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=dict(type='mmgpd.ReviewKD', loss_weight=1.0)))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=1.0)}))
