# Static teacher of the digits benchmark: the larger ResNet_CIFAR-34 (width 32)
# trained plainly with the student's recipe (configs/baselines/resnet_digits.py).
# benchmarks/accuracy.py trains it once per regime (data size, resolution and
# schedule come from its --cfg-options, the same for every method) and passes
# its checkpoint to the KD / DKD / DKD+GPD configs as model.teacher_ckpt.
_base_ = ['../baselines/resnet_digits.py', './_base_/digits_teacher_model.py']

model = {{_base_.bench_teacher_model}}
