# PESF-KD alone on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2.
# pesf-gpd_mobilenet-v2_in1k.py without GPD; the same protocol.
_base_ = ['./pesf-gpd_mobilenet-v2_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        kd_targets=('student', ),
        gap_loss=None))
