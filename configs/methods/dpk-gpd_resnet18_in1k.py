# DPK + GPD on ImageNet-1k: static ResNet-34 teacher -> ResNet-18 student.
# configs/gpd/resnet18_in1k.py (GPD's recipe: 2x multi-branch dynamic teacher,
# hard strategy, gap term, batch 512, 100 epochs, clip 5, EMA) with DPK
# instead of DKD as the static-teacher term, into S and T_d, on the last stage
# ('stage4': 512 vs 512 channels, 7x7 = 49 tokens at patch 1): a random share
# pi of the distilled model's tokens replaced by the teacher's, pi = 1 - CKA
# (minibatch linear CKA of the raw stage-4 maps, all-reduced over the ranks,
# clipped to [0, 0.95]), a 4 + 2 block encoder-decoder of width 256
# reconstructing the teacher's stage 4 (MSE). One encoder-decoder and one pi
# per target; T_d's side stays 1024 wide. The encoder-decoders train at 0.1x
# the student's learning rate (their parameters: distiller.methods.*).
#
# DPK is reconstructed from the paper's description (arXiv 2206.06067: only
# the abstract and secondary summaries could be read; no official code); the
# sizes, the loss weight and the learning rate are ours. No number of the
# paper's is claimed (it reports 72.51 top-1 for DPK alone on this pair,
# unverified here).
_base_ = ['../gpd/resnet18_in1k.py']

dpk = dict(
    type='mmgpd.DPK',
    taps=('stage4', ),
    embed_dim=256,
    patch_size=1,
    enc_depth=4,
    dec_depth=2,
    num_heads=8,
    ratio='cka',
    ratio_clip=(0.0, 0.95),
    loss_weight=1.0)

model = dict(
    distiller=dict(
        kd_loss=None,
        kd_targets=('student', 'dynamic_teacher'),
        method=dpk))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)}))
