"""GPD under mixed precision, on the CPU: ``torch.autocast('cpu', bfloat16)``.

bf16 keeps 8 significant bits: unit roundoff ``u = 2**-8``, machine epsilon
``eps = 2**-7``. The claims tested here:

* IR at init: T_d and S compute the same function (fp32 deviation <= 1e-4), so
  under autocast each differs from the exact output only by its own rounding.
  ``|T_d16 - S16| <= |T_d16 - exact| + |S16 - exact|``, each of the size of the
  student's own bf16 floor ``|S16 - S32|`` (T_d runs the same layers, each
  channel's sum over r x more terms of 1/r the size): bound 3 x the floor.
* The hard view's gradients (into T_d's parameters) are finite and, tensor by
  tensor, as close to fp32 as the plain CBR student's own gradients are (the
  same forward runs; CBR's transpose is fp32), whose total relative error is
  below ``8 eps``.
* CBR (contract / rescale / branch merges) runs in fp32 under autocast: the
  derived student tensors are fp32 and bit-identical to those without it.
* Carried norms / activations round once, like the student's: with a carry
  scale that is not a power of two (ratio 3) their bf16 output is within
  ``u`` of the exact value (the carry in bf16 would round the input first).
* The optimizer wrapper holds T_d's one parameter set: each tensor in one param
  group once, so the loss scaler unscales and ``clip_grad`` clips it once.
"""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from mmgpd.registry import MODELS
from mmgpd.reparam import (derive_student_state, extract_student,
                           max_relative_deviation)
from mmgpd.reparam.layers import CarriedActivation, CarriedBatchNorm2d

from .test_gpd import batch, gpd_cfg

U_BF16 = 2.0**-8
EPS_BF16 = 2.0**-7
BF16 = dict(device_type='cpu', dtype=torch.bfloat16)

SETTINGS = {
    'r2': dict(),
    'r3': dict(ratio=3),
    'r1.5': dict(ratio=1.5),
    'r2_branches': dict(branches=('1x1', '1x1_avg', '1x1_kxk')),
}


def _build(**distiller):
    torch.manual_seed(0)
    return MODELS.build(gpd_cfg(**distiller))


@pytest.mark.parametrize('setting', list(SETTINGS))
def test_ir_at_init_within_the_students_bf16_floor(setting):
    model = _build(**SETTINGS[setting]).eval()
    x = model.data_preprocessor(batch(16), False)['inputs']
    with torch.no_grad():
        s32 = model.student(x, mode='tensor')
        t32 = model.dynamic_teacher(x, mode='tensor')
        with torch.autocast(**BF16):
            s16 = model.student(x, mode='tensor')
            t16 = model.dynamic_teacher(x, mode='tensor')
    assert s16.dtype == t16.dtype == torch.bfloat16
    floor = max_relative_deviation(s16.float(), s32)
    assert 1e-4 < floor < 8 * EPS_BF16  # a bf16 run, not fp32, not broken
    assert max_relative_deviation(t32, s32) < floor / 20  # fp32: ~exact
    assert max_relative_deviation(t16.float(), s16.float()) <= 3 * floor


def _grads(model, data, amp, keys=('loss_student', )):
    model.zero_grad()
    with torch.autocast(**BF16, enabled=amp):
        losses = model(data['inputs'], data['data_samples'], mode='loss')
    sum(v for k, v in losses.items() if k in keys).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize('setting', ['r2', 'r3'])
def test_hard_view_gradients_as_close_to_fp32_as_the_students(setting):
    model = _build(**SETTINGS[setting]).train()
    data = model.data_preprocessor(batch(16), True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g32 = _grads(model, data, False)
    model.load_state_dict(state)  # BN statistics as before the fp32 pass
    g16 = _grads(model, data, True)
    assert set(g16) == set(g32) and len(g32) > 20
    assert all(torch.isfinite(g).all() for g in g16.values())
    assert all(g.dtype == torch.float32 for g in g16.values())

    student = extract_student(model.dynamic_teacher).train()
    s_state = {k: v.clone() for k, v in student.state_dict().items()}
    p32 = _grads(student, data, False, keys=('loss', ))
    student.load_state_dict(s_state)
    p16 = _grads(student, data, True, keys=('loss', ))
    prefix = 'distiller.dynamic_teacher.'
    for name in g32:
        if not g32[name].any():  # behind a zero-initialised residual BN
            assert not g16[name].any(), name
            continue
        plain = _rel(p16[name[len(prefix):]], p32[name[len(prefix):]])
        assert _rel(g16[name], g32[name]) == pytest.approx(plain, rel=1e-4,
                                                           abs=1e-7), name
    total = (sum(((p16[n] - p32[n])**2).sum() for n in p32) /
             sum((p32[n]**2).sum() for n in p32))**0.5
    assert 1e-4 < float(total) < 8 * EPS_BF16


def test_cbr_and_branch_merges_stay_fp32_under_autocast():
    model = _build(**SETTINGS['r2_branches']).train()
    teacher = model.dynamic_teacher
    ref = derive_student_state(teacher)
    with torch.autocast(**BF16):
        derived = derive_student_state(teacher)
        merged = {n: m.merged_weight() for n, m in teacher.named_modules()
                  if hasattr(m, 'merged_weight')}
    assert any('1x1_kxk' in m.branch_names for m in teacher.modules()
               if hasattr(m, 'branch_names'))  # the merge with a matmul
    for name, value in ref.items():
        assert derived[name].dtype == value.dtype, name
        assert torch.equal(derived[name], value), name
    for name, value in merged.items():
        assert value.dtype == torch.float32
        assert torch.equal(value, teacher.get_submodule(name).merged_weight())


def _carried(kind, scale):
    c = len(scale)
    if kind == 'bn':
        m = CarriedBatchNorm2d(c)
        m._init_carry(scale)
        with torch.no_grad():
            m.weight.uniform_(0.5, 2.0)
            m.bias.uniform_(-1.0, 1.0)
        return m.train()
    return CarriedActivation(torch.nn.GELU(), scale)


@pytest.mark.parametrize('kind', ['bn', 'gelu'])
def test_carried_layers_round_once_in_bf16(kind):
    torch.manual_seed(0)
    scale = torch.tensor([3.0, 1.0, 6.0, 2.0] * 4)  # ratio-3 / mixed counts
    m = _carried(kind, scale)
    assert not m.carry_exact
    x = torch.randn(8, len(scale), 6, 6).bfloat16()
    with torch.no_grad():
        with torch.autocast(**BF16):
            y = m(x)
        exact = m.double()(x.double())
    assert y.dtype == torch.bfloat16
    err = (y.double() - exact).abs() / exact.abs().clamp_min(1e-3)
    assert float(err.max()) <= U_BF16 + 1e-5
    # powers of two: the carry is exact in bf16, no fp32 detour
    assert _carried(kind, torch.tensor([2.0, 1.0, 4.0, 0.5])).carry_exact


def test_optim_wrapper_holds_each_tensor_once_and_clips_it_once():
    model = _build().train()
    assert list(model.student.parameters()) == []  # S owns no weights
    data = batch(8)
    seen = []

    def run(loss_scale):
        torch.manual_seed(0)
        m = _build().train()
        ow = build_optim_wrapper(m, dict(
            type='mmgpd.AmpOptimWrapper', loss_scale=loss_scale,
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
            clip_grad=dict(max_norm=1e9)))
        assert ow.cast_dtype == torch.bfloat16
        clip = ow.clip_func

        def recording_clip(params, **kwargs):
            params = list(params)
            seen.append([id(p) for p in params])
            return clip(params, **kwargs)

        ow.clip_func = recording_clip
        ids = [id(p) for g in ow.optimizer.param_groups for p in g['params']]
        trainable = [id(p) for p in m.parameters() if p.requires_grad]
        assert len(ids) == len(set(ids)) == len(trainable)
        assert set(ids) == set(trainable)
        log = m.train_step(data, ow)
        assert all(torch.isfinite(v) for v in log.values())
        assert len(seen[-1]) == len(set(seen[-1])) == len(trainable)
        return m, ow

    scaled, ow = run(2.0**16)
    plain, _ = run(1.0)
    assert ow.loss_scaler.get_scale() == 2.0**16  # finite grads: kept
    # unscaled exactly once: the updated weights equal those of scale 1
    for (n, a), (_, b) in zip(scaled.named_parameters(),
                              plain.named_parameters()):
        assert torch.equal(a, b), n


def test_cpu_amp_refuses_float16_naming_the_key():
    if torch.cuda.is_available():
        pytest.skip('fp16 autocast is valid with a GPU')
    model = _build()
    with pytest.raises(ValueError, match='optim_wrapper.dtype'):
        build_optim_wrapper(model, dict(
            type='mmgpd.AmpOptimWrapper', dtype='float16',
            optimizer=dict(type='SGD', lr=0.1)))
