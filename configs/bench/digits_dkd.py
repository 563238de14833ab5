# DKD baseline: as digits_kd.py with DKD (alpha 1.0, beta 0.5, T 1.0: the GPD
# paper's ResNet-34 -> ResNet-18 setting) instead of KD.
_base_ = ['./digits_kd.py']

model = dict(
    distiller=dict(
        kd_loss=dict(
            _delete_=True, type='mmgpd.DKDLoss', alpha=1.0, beta=0.5,
            temperature=1.0)))
