# ReviewKD + GPD on ImageNet-1k: static ResNet-50 teacher -> MobileNetV2
# student. The GPD paper's student is MobileNet v1 (ReviewKD 72.56 ->
# ReviewKD + GPD 73.21 top-1); mmpretrain has no v1, so these numbers do not
# transfer.
#
# configs/gpd/mobilenet-v2_in1k.py (the GPD paper's 100-epoch CNN protocol)
# with ReviewKD instead of DKD as the static-teacher term, into S and T_d:
#   * levels: MobileNetV2's last layer at strides 4 / 8 / 16 / 32 (layer2 24
#     ch, layer3 32, layer5 96, conv2 1280) + the pooled feature (1280), to the
#     ResNet-50's stages (256 / 512 / 1024 / 2048) + pooled (2048);
#   * weight 8.0, mid width 256: the authors' ResNet-50 -> MobileNet recipe
#     (dvlab-research/ReviewKD Paddle/Classification/configs/
#     r50_mv1_reviewkd.yaml: S_T_HCLLoss weight 8.0, mid_channel 256; the same
#     weight in mdistiller's configs/imagenet/r50_mv2/reviewkd.yaml).
_base_ = ['../gpd/mobilenet-v2_in1k.py']

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=dict(type='mmgpd.ReviewKD', loss_weight=8.0, mid_channels=256)))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=1.0)}))
