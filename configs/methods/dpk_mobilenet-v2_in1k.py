# DPK alone on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2 student,
# no dynamic teacher (enable_dynamic_teacher=False); the DPK term, teacher and
# schedule of ./dpk-gpd_mobilenet-v2_in1k.py beside the student's
# cross-entropy; no logit KD. Reconstructed from the paper's description;
# no number of the paper's is claimed.
_base_ = ['./dpk-gpd_mobilenet-v2_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        gap_loss=None,
        kd_targets=('student', )))
