# GPD* (from scratch, no static teacher): configs/gpd/resnet_digits.py unchanged
# (ratio 2, hard strategy, gap term 3 * SCE(sg(T_d) -> S)).
_base_ = ['../gpd/resnet_digits.py']
