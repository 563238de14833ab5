# ReviewKD alone on ImageNet-1k: static ResNet-34 teacher -> ResNet-18
# student (ReviewKD paper / GPD Table 1: 71.61 top-1).
#
# reviewkd-gpd_resnet18_in1k.py without GPD (no dynamic teacher, no gap term):
# the plain student trains its own weights with its cross-entropy + ReviewKD
# (weight 1.0). The protocol is kept the GPD paper's (batch 512, clip 5, EMA)
# so that the two configs differ only by GPD; the ReviewKD paper itself used
# batch 256 at lr 0.1, no EMA, no clipping.
_base_ = ['./reviewkd-gpd_resnet18_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        kd_targets=('student', ),
        gap_loss=None))
