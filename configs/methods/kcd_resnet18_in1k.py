# KCD alone on ImageNet-1k: static ResNet-34 teacher -> ResNet-18 student, no
# dynamic teacher (mmgpd.GPD as the distillation harness:
# enable_dynamic_teacher=False). The KCD term, the teacher and the schedule of
# ./kcd-gpd_resnet18_in1k.py (batch 512, 100 epochs, clip 5, EMA), beside the
# student's cross-entropy; no logit KD. Reconstructed from the paper's
# description; no number of the paper's is claimed.
_base_ = ['./kcd-gpd_resnet18_in1k.py']

model = dict(
    distiller=dict(
        enable_dynamic_teacher=False,
        gap_loss=None,
        kd_targets=('student', ),
        fold_dynamic_teacher_taps=False))
