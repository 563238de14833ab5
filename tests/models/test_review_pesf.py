"""ReviewKD (ABF fusion, HCL) and PESF-KD (adapter, loss forms): formulas
checked by hand on small tensors, gradient routing, and the methods inside
GPD (alone and + GPD): frozen teacher, adapter-only updates, loss keys."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmgpd  # noqa: F401
from mmgpd.models.losses import KDLoss, hcl
from mmgpd.models.methods import ABF, PESFKD, ReviewKD, TeacherAdapter
from mmgpd.models.methods.pesf_kd import swap_label
from mmgpd.registry import MODELS

from ..conftest import REPO_ROOT

GPD_CFG = f'{REPO_ROOT}/configs/gpd/resnet_digits.py'
TEACHER_CFG = f'{REPO_ROOT}/configs/bench/_base_/digits_teacher_model.py'


# --------------------------------------------------------------------- HCL
def test_hcl_by_hand():
    # 4x4 maps: the 4x4 level is skipped; 2x2 weighs 1/2, 1x1 1/4 (total 1.75)
    fs = torch.zeros(1, 1, 4, 4)
    ft = torch.zeros(1, 1, 4, 4)
    ft[0, 0, 0, 0] = 4.0  # one pixel off by 4
    full = 16.0 / 16  # MSE over 16 pixels
    two = (4.0 / 4) ** 2 / 4  # the top-left 2x2 cell averages to 1
    one = (4.0 / 16) ** 2  # the whole map averages to 0.25
    expect = (full + 0.5 * two + 0.25 * one) / 1.75
    assert hcl([fs], [ft]).item() == pytest.approx(expect)
    # 8x8: levels 4, 2, 1 with 1/2, 1/4, 1/8 (total 1.875)
    fs8, ft8 = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    ft8[0, 0, :2, :2] = 1.0  # exactly one 4x4 cell
    four = 1.0 / 16
    two = (4 / 16) ** 2 / 4
    one = (4 / 64) ** 2
    expect8 = (4 / 64 + 0.5 * four + 0.25 * two + 0.125 * one) / 1.875
    assert hcl([fs8], [ft8]).item() == pytest.approx(expect8)
    # every H >= 5 uses all three levels (7x7: an ImageNet ResNet's stage 4);
    # at H = 2 only 1x1 is added, at 1/2 (total 1.5)
    g = torch.Generator().manual_seed(0)
    a7, b7 = (torch.randn(2, 3, 7, 7, generator=g) for _ in range(2))

    def pooled(lvl):
        return F.mse_loss(F.adaptive_avg_pool2d(a7, lvl),
                          F.adaptive_avg_pool2d(b7, lvl)).item()
    expect7 = (F.mse_loss(a7, b7).item() + 0.5 * pooled(4) + 0.25 * pooled(2) +
               0.125 * pooled(1)) / 1.875
    assert hcl([a7], [b7]).item() == pytest.approx(expect7, rel=1e-6)
    fs2, ft2 = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    ft2[0, 0, 0, 0] = 2.0
    expect2 = (4.0 / 4 + 0.5 * (2.0 / 4) ** 2) / 1.5
    assert hcl([fs2], [ft2]).item() == pytest.approx(expect2)
    # a 1x1 map is a plain MSE; pairs are summed
    a, b = torch.randn(3, 5, 1, 1), torch.randn(3, 5, 1, 1)
    assert hcl([a, fs], [b, ft]).item() == pytest.approx(
        F.mse_loss(a, b).item() + expect, rel=1e-6)
    with pytest.raises(ValueError, match='differ'):
        hcl([a], [torch.randn(3, 5, 2, 2)])


# --------------------------------------------------------------------- ABF
def _identity_abf(c, fuse, att_bias=(0.0, 0.0)):
    """An ABF whose convs are identities (BN in eval at default statistics,
    up to 1/sqrt(1 + eps)) and whose attention is the constant
    sigmoid(att_bias)."""
    abf = ABF(c, c, c, fuse).eval()
    with torch.no_grad():
        abf.conv1[0].weight.copy_(torch.eye(c)[:, :, None, None])
        w = torch.zeros(c, c, 3, 3)
        w[range(c), range(c), 1, 1] = 1.0
        abf.conv2[0].weight.copy_(w)
        if fuse:
            abf.att_conv[0].weight.zero_()
            abf.att_conv[0].bias.copy_(torch.tensor(att_bias))
    return abf


def test_abf_fusion_by_hand():
    bn = 1 / math.sqrt(1 + 1e-5)  # BN(eval, mean 0, var 1)
    abf = _identity_abf(2, fuse=True, att_bias=(0.0, math.log(3.0)))
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)
    residual = torch.tensor([[[[1.0]], [[-2.0]]]]).repeat(2, 1, 1, 1)  # 1x1
    out, fused = abf(x, residual)
    # att = (sigmoid(0), sigmoid(log 3)) = (1/2, 3/4); residual upsampled 1->2
    expect = x * bn * 0.5 + residual.expand(2, 2, 2, 2) * 0.75
    assert torch.allclose(fused, expect, atol=1e-6)
    assert torch.allclose(out, expect * bn, atol=1e-6)  # 3x3 centre tap
    # the deepest level does not fuse; resizing to the teacher's size (nearest)
    top = _identity_abf(2, fuse=False)
    out, fused = top(x, out_size=(4, 4))
    assert fused.shape == (2, 2, 4, 4)
    assert torch.allclose(fused[:, :, ::2, ::2], x * bn, atol=1e-6)
    with pytest.raises(ValueError, match='fused map'):
        abf(x)


def test_reviewkd_loss_is_the_hcl_of_the_review_chain():
    torch.manual_seed(0)
    s_shapes = dict(stage1=torch.Size([2, 3, 4, 4]), stage2=torch.Size([2, 5, 2, 2]),
                    pooled=torch.Size([2, 5]), logits=torch.Size([2, 4]))
    t_shapes = dict(stage1=torch.Size([2, 6, 4, 4]), stage2=torch.Size([2, 8, 2, 2]),
                    pooled=torch.Size([2, 8]), logits=torch.Size([2, 4]))
    m = ReviewKD(stages=('stage1', 'stage2'), loss_weight=2.0)
    m.prepare(s_shapes, t_shapes)
    assert [a.att_conv is None for a in m.abfs] == [False, False, True]
    assert [a.conv1[0].out_channels for a in m.abfs] == [5, 5, 5]  # min(512, 5)
    assert [a.conv2[0].out_channels for a in m.abfs] == [6, 8, 8]
    s = {k: torch.randn(v) for k, v in s_shapes.items()}
    t = {k: torch.randn(v) for k, v in t_shapes.items()}
    loss = m(s, t)['loss_reviewkd']
    # by hand: deepest (pooled, 1x1) first, each level fuses the deeper one
    y3, r3 = m.abfs[2](s['pooled'][:, :, None, None], None, (1, 1))
    y2, r2 = m.abfs[1](s['stage2'], r3, (2, 2))
    y1, _ = m.abfs[0](s['stage1'], r2, (4, 4))
    expect = 2.0 * (hcl([y1], [t['stage1']]) + hcl([y2], [t['stage2']]) +
                    hcl([y3], [t['pooled'][:, :, None, None]]))
    assert torch.allclose(loss, expect)
    loss.backward()
    assert all(p.grad is not None for p in m.abfs[0].parameters())
    # a ReviewKD that was never prepared, or misses a tap, is an error
    with pytest.raises(RuntimeError, match='prepare'):
        ReviewKD()(s, t)
    with pytest.raises(KeyError, match='stage4'):
        ReviewKD().prepare(s_shapes, t_shapes)


def test_reviewkd_warmup_counts_in_a_buffer():
    m = ReviewKD(stages=(), warmup_iters=4).train()
    m.prepare(dict(pooled=torch.Size([2, 3]), logits=torch.Size([2, 2])),
              dict(pooled=torch.Size([2, 3]), logits=torch.Size([2, 2])))
    s, t = dict(pooled=torch.randn(2, 3)), dict(pooled=torch.randn(2, 3))
    full = ReviewKD(stages=()).train()
    full.prepare(dict(pooled=(2, 3)), dict(pooled=(2, 3)))
    full.load_state_dict(m.state_dict())
    ref = full(s, t)['loss_reviewkd'].item()
    got = [m(s, t)['loss_reviewkd'].item() for _ in range(5)]
    # the BN in train mode sees the same batch: same loss, scaled k/4
    assert got == pytest.approx([ref * k / 4 for k in (1, 2, 3, 4, 4)], rel=1e-5)
    assert int(m.state_dict()['iter']) == 5


# ------------------------------------------------------------------ PESF-KD
def _pesf(**kw):
    m = PESFKD(**kw)
    m.prepare(dict(logits=torch.Size([4, 5])),
              dict(logits=torch.Size([4, 5]), pooled=torch.Size([4, 6])))
    return m


def _io(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = dict(logits=torch.randn(4, 5, generator=g, requires_grad=True))
    t = dict(logits=3 * torch.randn(4, 5, generator=g),
             pooled=torch.randn(4, 6, generator=g))
    return s, t, torch.tensor([0, 1, 2, 3])


def test_pesf_equals_kd_with_a_zero_adapter_and_its_terms_off():
    s, t, gt = _io()
    m = _pesf(temperature=3.0, adapter_ce_weight=0, adapter_kd_weight=0)
    out = m(s, t, gt)
    assert set(k for k in out if 'loss' in k) == {'loss_pesf_kd'}
    kd = KDLoss(temperature=3.0)(s['logits'], t['logits'])
    assert torch.allclose(out['loss_pesf_kd'], kd)
    # zero-initialised: the adapted teacher is T_s (all forms)
    for form in ('code_cv', 'code_nlp'):
        a = TeacherAdapter(6, 5, 8, form)
        assert torch.equal(a(t['pooled']), torch.zeros(4, 5))
    assert torch.equal(m.adapt_teacher(t), t['logits'])


def test_pesf_terms_by_hand_and_gradient_routing():
    s, t, gt = _io()
    m = _pesf(temperature=2.0, alpha=0.5, adapter_ce_weight=0.3,
              adapter_kd_weight=0.7, zero_init=False)
    adapted = t['logits'] - m.adapter(t['pooled'])  # sign -1
    out = m(s, t, gt)

    def kl(p_logits, q_logits, T):  # KL(softmax(p/T) || softmax(q/T)) * T^2
        p = F.softmax(p_logits / T, 1)
        return (p * (F.log_softmax(p_logits / T, 1) -
                     F.log_softmax(q_logits / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(out['loss_pesf_kd'], 0.5 * kl(adapted, s['logits'], 2.0))
    assert torch.allclose(out['loss_pesf_adapter_ce'],
                          0.3 * F.cross_entropy(adapted, gt))
    assert torch.allclose(out['loss_pesf_adapter_kd'],
                          0.7 * kl(adapted, s['logits'], 2.0))
    # the student term reaches S only; the adapter terms reach A only
    out['loss_pesf_kd'].backward(retain_graph=True)
    assert s['logits'].grad.abs().sum() > 0
    assert all(p.grad is None for p in m.adapter.parameters())
    s['logits'].grad = None
    (out['loss_pesf_adapter_ce'] + out['loss_pesf_adapter_kd']).backward()
    assert s['logits'].grad is None
    assert all(p.grad.abs().sum() > 0 for p in m.adapter.parameters())


@pytest.mark.parametrize('form', [dict(), dict(swap_correction=True),
                                  dict(target='swap')])
def test_pesf_sends_no_gradient_into_the_teacher(form):
    """PESF-KD itself stops the gradient at the teacher's outputs: a teacher
    run with autograd on (outside GPD's no_grad) gets none from any term, nor
    from the adapted logits, while S and the adapter get theirs."""
    g = torch.Generator().manual_seed(0)
    body, head = nn.Linear(3, 6), nn.Linear(6, 5)  # T's trunk and its head
    x = torch.randn(4, 3, generator=g)
    pooled = torch.relu(body(x))
    t = dict(pooled=pooled, logits=head(pooled))
    assert t['logits'].requires_grad and t['pooled'].requires_grad
    s = dict(logits=torch.randn(4, 5, generator=g, requires_grad=True))
    m = _pesf(zero_init=False, **form)
    out = m(s, t, torch.tensor([0, 1, 2, 3]))
    total = sum(v for k, v in out.items() if k.startswith('loss'))
    total = total + m.adapt_teacher(t).sum()
    total.backward()
    teacher = [*body.parameters(), *head.parameters()]
    assert all(p.grad is None for p in teacher)
    assert s['logits'].grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in m.adapter.parameters())


def test_pesf_swap_forms():
    z = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 1.0]])
    y = torch.tensor([2, 0])  # wrong top-1 (1 vs 2), right top-1 (0)
    assert torch.equal(swap_label(z, y),
                       torch.tensor([[1.0, 2.0, 5.0], [4.0, 0.0, 1.0]]))
    s, t, gt = _io()
    code = _pesf(target='swap', zero_init=False, temperature=2.0)
    out = code(s, t, gt)
    # the released code: the student learns from the swapped *raw* teacher
    kd = KDLoss(temperature=2.0)(s['logits'], swap_label(t['logits'], gt))
    assert torch.allclose(out['loss_pesf_kd'], kd)
    adapted = code.adapt_teacher(t)
    kd_a = KDLoss(temperature=2.0)(swap_label(s['logits'].detach(), gt),
                                   adapted.detach())
    assert torch.allclose(out['loss_pesf_adapter_kd'], kd_a)
    corrected = _pesf(swap_correction=True, zero_init=False, temperature=2.0)
    corrected.load_state_dict(code.state_dict())
    out = corrected(s, t, gt)
    kd = KDLoss(temperature=2.0)(s['logits'], swap_label(adapted, gt))
    assert torch.allclose(out['loss_pesf_kd'], kd)
    with pytest.raises(ValueError, match='target'):
        PESFKD(target='nope')


# ------------------------------------------------------------ inside GPD
@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    arch = Config.fromfile(TEACHER_CFG).bench_teacher_model
    init_default_scope('mmpretrain')
    torch.manual_seed(1)
    teacher = MODELS.build(copy.deepcopy(arch))
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path), arch


def _gpd(teacher_ckpt, **distiller):
    cfg = Config.fromfile(GPD_CFG)
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    model.data_preprocessor = cfg.data_preprocessor
    model.distiller.update(distiller)
    model.teacher, model.teacher_ckpt = copy.deepcopy(teacher_ckpt[1]), \
        teacher_ckpt[0]
    torch.manual_seed(0)
    return MODELS.build(model)


def _batch(n=4):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 255, (3, 32, 32), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    return dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def _step(model):
    from mmengine.optim import OptimWrapper
    optim = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1))
    return model.train_step(_batch(), optim)


def test_pesf_in_gpd_freezes_the_teacher_and_trains_only_the_adapter(teacher_ckpt):
    model = _gpd(teacher_ckpt, method=dict(type='mmgpd.PESFKD'),
                 enable_dynamic_teacher=False, gap_loss=None).train()
    adapter = model.distiller.methods['student'].adapter
    assert adapter.proj.in_features == 256 and adapter.mlp[2].out_features == 10
    t_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    a_before = {k: v.clone() for k, v in adapter.state_dict().items()}
    # T_s is frozen; unfreeze it so that a gradient could reach it and the
    # step's SGD (over every parameter that requires grad) would move it: it
    # gets none, as GPD runs T_s under no_grad and PESF-KD reads sg(T_s)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    for p in model.teacher.parameters():
        p.requires_grad_(True)
    log = _step(model)
    assert {'loss_pesf_kd_to_student', 'loss_pesf_adapter_ce_to_student',
            'loss_pesf_adapter_kd_to_student'} <= set(log)
    assert all(p.grad is None for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    changed = [k for k, v in adapter.state_dict().items()
               if not torch.equal(v, a_before[k])]
    assert 'mlp.2.weight' in changed  # the zero-initialised output layer moved


def test_reviewkd_and_pesf_stack_with_gpd(teacher_ckpt):
    model = _gpd(teacher_ckpt, method=[dict(type='mmgpd.ReviewKD'),
                                       dict(type='mmgpd.PESFKD')]).train()
    review_s = model.distiller.methods['student'][0]
    review_d = model.distiller.methods['dynamic_teacher'][0]
    # connectors sized for each: S's stages 16..128, T_d's 32..256 (kept wide)
    assert [a.conv1[0].in_channels for a in review_s.abfs] == [16, 32, 64, 128, 128]
    assert [a.conv1[0].in_channels for a in review_d.abfs] == [32, 64, 128, 256, 256]
    assert [a.conv2[0].out_channels for a in review_s.abfs] == [32, 64, 128, 256, 256]
    log = _step(model)
    for key in ('loss_reviewkd', 'loss_pesf_kd', 'loss_pesf_adapter_ce'):
        for target in ('student', 'dynamic_teacher'):
            assert f'{key}_to_{target}' in log
    assert 'loss_gap' in log
    out = model.eval().val_step(_batch())
    for name in ('student', 'dynamic_teacher', 'static_teacher',
                 'adapted_static_teacher',
                 'adapted_static_teacher_to_dynamic_teacher'):
        assert f'sharpness_{name}' in out[0], name
    # zero-initialised adapters moved one step: adapted != raw teacher
    assert not torch.allclose(out[0].sharpness_adapted_static_teacher,
                              out[0].sharpness_static_teacher)
