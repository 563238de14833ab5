# GPD* from scratch on ImageNet-1k, no static teacher: ResNet-18 grows a 2x-wide
# dynamic teacher and trains with it (paper: 70.07 -> 71.87 top-1).
#
# The same recipe as resnet18_in1k.py (100 epochs, SGD lr 0.1, batch 512,
# clip 5, EMA) with the static teacher and its DKD removed:
#   L = CE(S) + CE(T_d) + 3 * SCE(sg(T_d) -> S)
_base_ = ['./resnet18_in1k.py']

model = dict(
    teacher=None,
    teacher_ckpt=None,
    distiller=dict(kd_loss=None))
