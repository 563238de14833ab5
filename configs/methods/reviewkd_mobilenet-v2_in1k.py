# ReviewKD alone on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2
# (the paper's MobileNet v1 result, 72.56, does not transfer).
# reviewkd-gpd_mobilenet-v2_in1k.py without GPD; the same protocol.
_base_ = ['./reviewkd-gpd_mobilenet-v2_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        kd_targets=('student', ),
        gap_loss=None))
