# GPD* fine-tuning of a pretrained ResNet-18 on ImageNet-1k, no static teacher
# (paper: fine-tuning with longer training 70.23 -> GPD* 71.12 top-1).
#
# IR with init='preserve': the new branches start at scale 0, so T_d starts as
# exactly the pretrained student. 50 epochs at lr 0.01, no warm-up, x0.1 at
# epoch 30 (the reference code's 30/60/90 steps within 50 epochs).
_base_ = ['./resnet18_in1k_scratch.py']

model = dict(
    # The whole classifier (backbone + fc) from mmpretrain's ResNet-18 (69.90
    # top-1). The paper started from torchvision's (69.75); note that
    # `backbone.init_cfg=dict(type='Pretrained', checkpoint='torchvision://
    # resnet18')` would load the backbone only and leave the fc random.
    architecture=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'resnet/resnet18_8xb32_in1k_20210831-fbbb1da6.pth')),
    distiller=dict(init='preserve'))

optim_wrapper = dict(optimizer=dict(lr=0.01))

param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True, milestones=[30],
    gamma=0.1)

train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
