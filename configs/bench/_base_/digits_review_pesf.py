# ReviewKD and PESF-KD on the digits benchmark, as variables so that a method
# config and its + GPD variant share them (two bases may not both define
# `model`). See mmgpd/models/methods/review_kd.py / pesf_kd.py.

# ReviewKD: the student's four stages + pooled feature (16..128 channels; T_d
# kept 2x wide) fused deepest-first by ABFs (mid width min(512, deepest) = 128
# for S, 256 for T_d) and regressed to the teacher's (32..256 channels) with
# HCL; weight 1.0, no warm-up (the ImageNet recipe of the released code).
bench_reviewkd = dict(type='mmgpd.ReviewKD', loss_weight=1.0)
# The ABFs train with the student, at its learning rate (as in the released
# code: one optimizer, one lr).
bench_reviewkd_lr = dict(custom_keys={'distiller.methods': dict(lr_mult=1.0)})

# PESF-KD: a zero-initialised adapter (256 -> 10 -> 32 -> 10, the released CV
# code's form) on the teacher's pooled feature softens its logits; the
# student distils from the adapted logits (T 4, alpha 1, the abstract's form),
# the adapter learns from CE(adapted, y) + KL(adapted || sg(student)).
bench_pesf = dict(
    type='mmgpd.PESFKD',
    temperature=4.0,
    alpha=1.0,
    adapter_ce_weight=1.0,
    adapter_kd_weight=1.0,
    target='adapted',
    hidden=32)
# The adapter's learning rate: 0.1x the student's (ours; the released code's
# 4e-4 ratio would leave a zero-initialised adapter at ~0 over 30 epochs).
bench_pesf_lr = dict(custom_keys={'distiller.methods': dict(lr_mult=0.1)})
