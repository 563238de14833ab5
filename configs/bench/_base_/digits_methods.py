# The feature-level static-teacher methods of the digits benchmark, as
# variables so that a method config and its + GPD variant share them (two bases
# may not both define `model`). Both read the last stage ('stage4': 128 student
# vs 256 teacher channels, 4x4 at 32x32 input). Every choice the papers leave
# open is reconstructed from their descriptions and named in
# mmgpd/models/methods/kcd.py / dpk.py.

# KCD: the teacher's channels matched to the student's (Hungarian on the
# cross-correlation of standardised channels; KCDHook solves it before
# training from the initial student), MSE on the matched channels, each
# position standardised over its channels (scale-free; ours).
bench_kcd = dict(
    type='mmgpd.KCD',
    taps=('stage4', ),
    mode='permute',
    loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0, normalize=True))
bench_kcd_hook = dict(type='mmgpd.KCDHook', mode='offline', num_batches=10)

# DPK: 16 tokens (patch 1) of width 64, a random share pi = 1 - CKA (clipped
# to [0, 0.95]) of the student's tokens replaced by the teacher's, a 2 + 1
# block encoder-decoder reconstructing the teacher's 'stage4'.
bench_dpk = dict(
    type='mmgpd.DPK',
    taps=('stage4', ),
    embed_dim=64,
    patch_size=1,
    enc_depth=2,
    dec_depth=1,
    num_heads=4,
    ratio='cka',
    ratio_clip=(0.0, 0.95),
    loss_weight=1.0)
# The encoder-decoder's learning rate: 0.1x the student's (ours; SGD at the
# student's 0.1 is too fast for the transformer).
bench_dpk_lr = dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)})
