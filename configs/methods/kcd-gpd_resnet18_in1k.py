# KCD + GPD on ImageNet-1k: static ResNet-34 teacher -> ResNet-18 student.
# configs/gpd/resnet18_in1k.py (GPD's recipe: 2x multi-branch dynamic teacher,
# hard strategy, gap term, batch 512, 100 epochs, clip 5, EMA) with KCD instead
# of DKD as the static-teacher term, into S and T_d, on the last stage
# ('stage4': 512 vs 512 channels, 7x7): the teacher's channels matched to the
# student's (Hungarian on the cross-correlation of standardised channels over
# 40 batches per rank = 20k images, as MGD's matching pass; solved by KCDHook
# before training from the initial student, all-reduced so every rank holds
# the same assignment) and an MSE on the matched channels. T_d's stage4 is
# folded back to the student's width (its replicas summed: exactly S's at
# init) and gets its own assignment from its own statistics.
#
# KCD is reconstructed from the paper's description (arXiv 2103.16844: only
# the abstract could be read); the loss weight and the standardised MSE are
# ours. No number of the paper's is claimed.
_base_ = ['../gpd/resnet18_in1k.py']

kcd = dict(
    type='mmgpd.KCD',
    taps=('stage4', ),
    mode='permute',
    loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0, normalize=True))

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=kcd,
        fold_dynamic_teacher_taps=True))

custom_hooks = [
    dict(type='mmgpd.GPDHook'),
    dict(type='EMAHook', momentum=4e-5, priority='NORMAL'),
    dict(type='mmgpd.KCDHook', mode='offline', num_batches=40),
]
