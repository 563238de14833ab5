# PESF-KD alone on ImageNet-1k: static ResNet-34 teacher -> ResNet-18.
# pesf-gpd_resnet18_in1k.py without GPD (no dynamic teacher, no gap term);
# the same protocol, so the two differ only by GPD.
_base_ = ['./pesf-gpd_resnet18_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        kd_targets=('student', ),
        gap_loss=None))
