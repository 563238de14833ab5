# "Student alone": the plain mmpretrain student of configs/baselines/resnet_digits.py
# (ResNet_CIFAR-18, width 16), unchanged. The benchmark's regime (data size,
# resolution, schedule) is applied by benchmarks/accuracy.py with the same
# --cfg-options for every method.
_base_ = ['../baselines/resnet_digits.py']
