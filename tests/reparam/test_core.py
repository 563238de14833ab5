"""The reparameterization core on small pure-PyTorch nets: exactness, CBR, errors,
gradients of the hard strategy."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmgpd.reparam import (BranchConv2d, HardStudent, IRVerificationError,
                           UnsupportedModuleError, derive_student_state,
                           extract_student, get_plan, inverse_reparameterize,
                           max_relative_deviation, soft_pair)

from .nets import GatedNet, TinyNet, randomize_norms

TOL = 1e-5
RATIOS = [1, 2, 3, 4, 1.5, 2.5, 1.25]
BRANCH_SETS = [None, True, ('1x1', '1x1_avg', '1x1_kxk')]


def make_net(seed=0, width=8):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return randomize_norms(TinyNet(width), g)


def run(model, x, train):
    model.train(train)
    with torch.no_grad():
        return model(x)


@settings(max_examples=25, deadline=None)
@given(ratio=st.sampled_from(RATIOS), branches=st.sampled_from(BRANCH_SETS),
       init=st.sampled_from(['preserve', 'scratch']), train=st.booleans(),
       size=st.integers(5, 20), batch=st.integers(2, 4), width=st.integers(3, 12))
def test_ir_cbr_exact_on_tiny_net(ratio, branches, init, train, size, batch, width):
    net = make_net(width=width)
    teacher = inverse_reparameterize(net, ratio, branches=branches, init=init)
    x = torch.randn(batch, 3, size, size)
    student_out = run(net, x, train)
    assert max_relative_deviation(run(teacher, x, train), student_out) <= TOL
    view = HardStudent(teacher).train(train)
    with torch.no_grad():
        view_out = view(x)
    assert max_relative_deviation(view_out, student_out) <= TOL
    extracted = extract_student(teacher)
    assert max_relative_deviation(run(extracted, x, train), view_out) <= TOL


@pytest.mark.parametrize('ratio', RATIOS)
@pytest.mark.parametrize('branches', BRANCH_SETS)
def test_extraction_reproduces_student_weights(ratio, branches):
    net = make_net()
    extracted = extract_student(inverse_reparameterize(net, ratio,
                                                       branches=branches))
    assert type(extracted) is type(net)
    ref, got = net.state_dict(), extracted.state_dict()
    assert list(ref) == list(got)
    for key in ref:
        assert got[key].shape == ref[key].shape, key
        assert torch.allclose(got[key].float(), ref[key].float(), rtol=1e-6,
                              atol=1e-7), key


def test_teacher_is_wider_and_student_untouched():
    net = make_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    teacher = inverse_reparameterize(net, 3, branches=True)
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert teacher.conv1.weight.shape == (24, 3, 3, 3)  # stem: output only
    assert teacher.conv2.weight.shape == (24, 24, 3, 3)
    assert isinstance(teacher.conv2, BranchConv2d)
    assert isinstance(teacher.conv1, BranchConv2d)  # a 3x3 stride-1 stem too
    assert teacher.dw.groups == 24 and teacher.dw.weight.shape == (24, 1, 3, 3)
    assert teacher.fc.weight.shape == (5, 24)  # classifier: input only
    assert teacher.ln.normalized_shape == (24, )
    assert type(teacher) is TinyNet


def test_ratio_one_gives_the_student():
    net = make_net()
    teacher = inverse_reparameterize(net, 1)
    ref = net.state_dict()
    for k, v in teacher.state_dict().items():
        if k in ref:
            assert torch.equal(v, ref[k]), k


@pytest.mark.parametrize('bad', [0.5, 0, -2, float('nan'), float('inf'), 'two',
                                 None, True])
def test_bad_ratio_is_a_value_error(bad):
    with pytest.raises(ValueError, match='ratio'):
        inverse_reparameterize(make_net(), bad)


def test_ratio_the_model_cannot_take():
    class Grouped(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.gn = nn.GroupNorm(2, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.gn(self.gconv(self.conv(x))).mean((2, 3)))

    inverse_reparameterize(Grouped(), 1.5)  # 12 channels: 3 groups of 4
    with pytest.raises(ValueError) as err:
        inverse_reparameterize(Grouped(), 1.25)  # 10 channels
    assert 'gconv' in str(err.value) and 'gn' in str(err.value)


def test_gates_and_products_of_hidden_tensors_are_exact():
    # an SE gate (exact conv output into a sigmoid), x * x (factor 1/n²) and a
    # functional sigmoid: the planner makes their inputs exact
    net = GatedNet().eval()
    teacher = inverse_reparameterize(net, 2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert max_relative_deviation(teacher(x), net(x)) <= 1e-5


def test_unsupported_ops_are_all_listed():

    class Odd(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            y = torch.fft.fft(y, dim=1).real  # mixes channels: no rule
            return self.fc(F.glu(y, 1).mean((2, 3)))

    with pytest.raises(UnsupportedModuleError) as err:
        inverse_reparameterize(Odd(), 2)
    found = [why for _, typ, why in err.value.modules if typ == 'op']
    assert any('fft' in why for why in found)


def test_self_check_catches_an_inexact_rule(monkeypatch):
    from mmgpd.reparam import kinds

    class FakeGELU(nn.Module):  # given a rule that does not hold for it

        def forward(self, x):
            pos = torch.arange(x.shape[1], dtype=x.dtype).reshape(1, -1, 1, 1)
            return torch.relu(x) * pos  # depends on the channel position

    monkeypatch.setitem(kinds._NAMED_KINDS,
                        f'{FakeGELU.__module__}.{FakeGELU.__qualname__}',
                        'nonhomogeneous')
    net = make_net()
    net.relu = FakeGELU()
    with pytest.raises(IRVerificationError, match='deviates') as err:
        inverse_reparameterize(net, 2)
    # the first module whose output deviates is named
    assert 'relu' in err.value.where


@pytest.mark.parametrize('ratio', [2, 2.5])
@pytest.mark.parametrize('mode,bound', [('iid', 1e-4), ('zero_sum', 1e-5)])
def test_noise_breaks_symmetry_within_tolerance(ratio, mode, bound):
    net = make_net()
    g = torch.Generator().manual_seed(1)
    teacher = inverse_reparameterize(net, ratio, noise=1e-6, noise_mode=mode,
                                     generator=g)
    dev = get_plan(teacher).ir_deviation
    assert dev <= bound
    if mode == 'iid':
        assert dev > 0
    w = teacher.conv2.weight
    assert not torch.equal(w[:8, :8], w[8:16, :8])  # replicas differ
    x = torch.randn(3, 3, 12, 12)
    for train in (False, True):
        assert max_relative_deviation(run(teacher, x, train),
                                      run(net, x, train)) <= bound


def test_zero_sum_noise_cancels_over_input_replicas():
    net = make_net()
    teacher = inverse_reparameterize(net, 3, noise=1e-3, tol=1e-5,
                                     generator=torch.Generator().manual_seed(0))
    w = teacher.conv2.weight.detach().double()  # (24, 24, 3, 3), input g = j mod 8
    summed = w.reshape(24, 3, 8, 3, 3).sum(1)
    expected = net.conv2.weight.detach().double().repeat(3, 1, 1, 1)
    assert torch.allclose(summed, expected, atol=1e-6)
    assert (w[:8] - w[8:16]).abs().max() > 1e-4  # but the replicas differ


@pytest.mark.parametrize('n', [2, 3, 4])
def test_zero_sum_noise_law_both_constructions(n):
    """The fast cyclic construction (Helmert, n - 1 draws per n values) and
    the generic centring give the same law: zero sum over each student
    channel's replicas, per-value variance (n - 1)/n, replicas correlated
    -1/(n - 1)."""
    from mmgpd.reparam.noise import (_add_cyclic_zero_sum, _cyclic_replicas,
                                     _shape_noise)
    from mmgpd.reparam.parammap import DimMap
    c, out = 16, 4000
    index = torch.arange(n * c) % c
    dim = DimMap(index, None, torch.arange(c))

    def draws(count, seed=0):
        return torch.randn(count, generator=torch.Generator().manual_seed(seed))

    fast = torch.zeros(out, n * c)
    assert _cyclic_replicas(fast, dim) == n
    _add_cyclic_zero_sum(fast, n, 1.0, draws(out * c * (n - 1)))
    slow = _shape_noise((out, n * c), dim, draws(out * n * c))
    for e in (fast, slow):
        e = e.double().reshape(out, n, c)
        assert e.sum(1).abs().max() < 1e-5
        var = e.var(dim=(0, 2)).mean()
        assert abs(float(var) - (n - 1) / n) < 0.03
        cov = (e[:, 0] * e[:, 1]).mean()
        assert abs(float(cov) + 1 / n) < 0.03
    # any other layout (a permuted map, a fractional width) is refused by
    # the fast path and centred by the generic one
    perm = DimMap(index.flip(0), None, torch.arange(c))
    assert _cyclic_replicas(torch.zeros(3, n * c), perm) is None
    e = _shape_noise((3, n * c), perm, draws(3 * n * c)).double()
    summed = torch.zeros(3, c, dtype=torch.float64).index_add_(1, perm.index, e)
    assert summed.abs().max() < 1e-5


def test_hard_student_keeps_its_own_running_stats():
    net = make_net()
    teacher = inverse_reparameterize(net, 2)
    view = HardStudent(teacher).train()
    t_mean = teacher.bn1.running_mean.clone()
    s_mean = teacher.bn1.student_running_mean.clone()
    view(torch.randn(4, 3, 8, 8) + 3)
    assert torch.equal(teacher.bn1.running_mean, t_mean)
    assert not torch.equal(teacher.bn1.student_running_mean, s_mean)
    s_mean = teacher.bn1.student_running_mean.clone()
    teacher.train()(torch.randn(4, 3, 8, 8) - 3)
    assert not torch.equal(teacher.bn1.running_mean, t_mean)
    assert torch.equal(teacher.bn1.student_running_mean, s_mean)
    # the extracted student carries the student's statistics
    extracted = extract_student(teacher)
    assert torch.equal(extracted.bn1.running_mean, s_mean)


def test_hard_student_owns_no_parameters():
    teacher = inverse_reparameterize(make_net(), 2)
    view = HardStudent(teacher)
    assert list(view.parameters()) == [] and view.state_dict() == {}


def test_soft_strategy_keeps_separate_parameters():
    net = make_net()
    student, teacher = soft_pair(net, 2)
    with torch.no_grad():
        student.conv2.weight.add_(1.0)
    assert torch.allclose(extract_student(teacher).conv2.weight,
                          net.conv2.weight)


# --------------------------------------------------------------------------- #
# Gradients of the hard strategy
# --------------------------------------------------------------------------- #
def _losses(teacher, view, x, y):
    lt = nn.functional.cross_entropy(teacher(x), y)
    ls = nn.functional.cross_entropy(view(x), y)
    return lt, ls


def _manual_student_grads(teacher, x, y, rescale=False):
    """dL_S/dθ by the chain rule through each CBR map, computed by hand."""
    plan = get_plan(teacher)
    student = extract_student(teacher).double().train(teacher.training)
    # run with the teacher's own student statistics (same as the view)
    ls = nn.functional.cross_entropy(student(x), y)
    grads_s = dict(zip([n for n, _ in student.named_parameters()],
                       torch.autograd.grad(ls, list(student.parameters()))))
    out = {n: torch.zeros_like(p) for n, p in teacher.named_parameters()}
    for rule in plan.rules:
        if not rule.is_param:
            continue
        g = grads_s[rule.student_name]
        if rule.pmap is not None:
            dims = rule.pmap.dims
            inv = torch.ones_like(g)
            for d, m in dims.items():
                f = m.factor[m.first] if m.factor is not None else \
                    torch.ones(m.student_size)
                shape = [1] * g.dim()
                shape[d] = -1
                inv = inv * (1.0 / f).double().reshape(shape)
            g = g / inv if rescale else g * inv
            full = torch.zeros(rule.pmap.teacher_shape, dtype=g.dtype)
            index = torch.meshgrid(*[dims[d].first if d in dims else
                                     torch.arange(g.shape[d])
                                     for d in range(g.dim())], indexing='ij')
            full[index] = g
            g = full
        if rule.merged:
            bconv = teacher.get_submodule(rule.teacher_name)
            names = [n for n, _ in bconv.named_parameters()]
            merged = torch.autograd.grad(bconv.merged_weight(),
                                         list(bconv.parameters()),
                                         grad_outputs=g, allow_unused=True)
            for n, gm in zip(names, merged):
                if gm is not None:
                    out[f'{rule.teacher_name}.{n}'] += gm
        else:
            out[rule.teacher_name] += g
    return out


@pytest.mark.parametrize('ratio,branches,rescale', [(2, None, False),
                                                    (2.5, None, False),
                                                    (2, True, False),
                                                    (3, None, True),
                                                    (1.5, True, True)])
def test_hard_strategy_gradient_is_teacher_plus_chain_ruled_student(
        ratio, branches, rescale):
    torch.manual_seed(0)
    net = make_net().double()
    teacher = inverse_reparameterize(net, ratio, branches=branches,
                                     init='scratch', noise=1e-3,
                                     example_inputs=torch.randn(2, 3, 8, 8).double(),
                                     tol=1e-2,
                                     generator=torch.Generator().manual_seed(0))
    teacher.double().eval()
    view = HardStudent(teacher, grad_rescale=rescale).eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    params = dict(teacher.named_parameters())

    lt, ls = _losses(teacher, view, x, y)
    total = torch.autograd.grad(lt + ls, list(params.values()))
    only_t = torch.autograd.grad(nn.functional.cross_entropy(teacher(x), y),
                                 list(params.values()))
    manual_s = _manual_student_grads(teacher, x, y, rescale)
    for (name, _), g_all, g_t in zip(params.items(), total, only_t):
        assert torch.allclose(g_all, g_t + manual_s[name], rtol=1e-9,
                              atol=1e-12), name
    assert any(manual_s[n].abs().sum() > 0 for n in params)


def test_hard_strategy_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = make_net(width=4).double()
    teacher = inverse_reparameterize(
        net, 2, branches=True, init='scratch', noise=1e-3, tol=1e-2,
        example_inputs=torch.randn(2, 3, 6, 6).double(),
        generator=torch.Generator().manual_seed(0)).double().eval()
    view = HardStudent(teacher).eval()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 4])
    params = list(teacher.parameters())
    lt, ls = _losses(teacher, view, x, y)
    grads = torch.autograd.grad(lt + ls, params)
    g = torch.Generator().manual_seed(3)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction)).item()
    eps = 1e-6

    def total_at(sign):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            val = sum(_losses(teacher, view, x, y)).item()
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return val

    numeric = (total_at(1) - total_at(-1)) / (2 * eps)
    assert math.isclose(analytic, numeric, rel_tol=1e-6, abs_tol=1e-9)


def test_derived_state_covers_the_student_exactly():
    net = make_net()
    teacher = inverse_reparameterize(net, 2, branches=True)
    state = derive_student_state(teacher)
    expected = dict(net.named_parameters()) | dict(net.named_buffers())
    assert set(state) == set(expected)
    for k, v in state.items():
        assert v.shape == expected[k].shape, k


def test_hard_student_moves_with_its_module():
    """``.to()`` / ``.double()`` of a model holding the view reach the template."""
    import torch.nn as nn

    from mmgpd.reparam import HardStudent, inverse_reparameterize
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    teacher = inverse_reparameterize(student, 2, example_inputs=torch.randn(2, 3, 8, 8))
    holder = nn.Module()
    holder.teacher, holder.student = teacher, HardStudent(teacher)
    holder.double()
    assert all(t.dtype == torch.float64 for t in holder.student.template.state_dict().values()
               if t.is_floating_point())
    out = holder.student(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64


class _SqueezeNet(TinyNet):
    """``squeeze()`` drops the batch dim for one image: a forward whose ops
    depend on the batch size."""

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.pool(self.act(self.dw(y))).squeeze()
        if y.dim() == 1:  # one image: (C,) -> a different op sequence
            y = y.unsqueeze(0).expand(2, -1)[:1].contiguous()
        y = self.ln(self.gelu(self.fc0(y))) + y
        return self.fc(y)


def test_ir_plans_on_one_image_and_verifies_on_the_whole_probe(monkeypatch):
    import mmgpd.reparam.ir as ir
    seen = []
    plan = ir.plan_layouts

    def spy(student, inputs, *args, **kwargs):
        seen.append(inputs.shape[0])
        return plan(student, inputs, *args, **kwargs)

    monkeypatch.setattr(ir, 'plan_layouts', spy)
    x = torch.randn(3, 3, 8, 8)
    net = make_net()
    teacher = inverse_reparameterize(net, 2, example_inputs=x)
    assert seen == [1]
    assert get_plan(teacher).ir_deviation <= TOL
    # whatever fails on one image is planned again on the whole probe
    seen.clear()
    calls = []
    build = ir._build_teacher

    def failing_once(student, plan_inputs, **kw):
        calls.append(plan_inputs.shape[0])
        if len(calls) == 1:
            raise IRVerificationError('planned on one image only', where='x')
        return build(student, plan_inputs, **kw)

    monkeypatch.setattr(ir, '_build_teacher', failing_once)
    teacher = inverse_reparameterize(make_net(), 2, example_inputs=x)
    assert calls == [1, 3]
    assert get_plan(teacher).ir_deviation <= TOL
    monkeypatch.setattr(ir, '_build_teacher', build)
    # a batch-dependent forward still gets an exact teacher
    torch.manual_seed(0)
    net = randomize_norms(_SqueezeNet(8), torch.Generator().manual_seed(0))
    teacher = inverse_reparameterize(net, 2, example_inputs=x)
    assert max_relative_deviation(run(teacher, x, False),
                                  run(net, x, False)) <= TOL


class _FFTNet(nn.Module):
    """An op with no rule (fft over the channels); ``only_one_image``: only
    for a batch of one (the forward's ops depend on the batch size)."""

    def __init__(self, only_one_image=False):
        super().__init__()
        self.only_one_image = only_one_image
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        if not self.only_one_image or y.shape[0] == 1:
            y = torch.fft.fft(y, dim=1).real
        return self.fc(y.mean((2, 3)))


def test_a_refusal_on_one_image_is_not_planned_again(monkeypatch):
    """A refusal found on one image stands when the forward runs the same
    ops on the whole probe (trace.op_signature); a forward whose ops change
    with the batch size is planned again on the whole probe."""
    import mmgpd.reparam.ir as ir
    from mmgpd.reparam.trace import op_signature
    calls = []
    build = ir._build_teacher

    def spy(student, plan_inputs, **kw):
        calls.append(plan_inputs.shape[0])
        return build(student, plan_inputs, **kw)

    monkeypatch.setattr(ir, '_build_teacher', spy)
    x = torch.randn(3, 3, 8, 8)
    with pytest.raises(UnsupportedModuleError, match='fft'):
        inverse_reparameterize(_FFTNet(), 2, example_inputs=x)
    assert calls == [1]
    calls.clear()
    net = _FFTNet(only_one_image=True)
    assert op_signature(net, x[:1], ir.default_forward) != op_signature(
        net, x, ir.default_forward)
    teacher = inverse_reparameterize(net, 2, example_inputs=x)
    assert calls == [1, 3]
    assert max_relative_deviation(run(teacher, x, False),
                                  run(net, x, False)) <= TOL


@pytest.mark.parametrize('ratio', [2, 1.5])
def test_merge_once_shares_one_kernel_per_conv(ratio):
    """Inside merge_once a hard step merges each branch conv once (S reads
    the leading block of T_d's kernel) and gives S's and T_d's outputs and
    T_d's gradients of the step merged twice."""
    from mmgpd.reparam.layers import merge_once
    teacher = inverse_reparameterize(make_net(3), ratio, branches=(
        '1x1', '1x1_avg', '1x1_kxk'), init='scratch')
    view = HardStudent(teacher).train()
    convs = [m for m in teacher.modules() if isinstance(m, BranchConv2d)]
    assert convs
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))

    def step(once):
        teacher.zero_grad()
        calls = []
        for c in convs:  # count the merges
            c._merge = (lambda f: lambda *a, **k: calls.append(1) or f(
                *a, **k))(BranchConv2d._merge.__get__(c))
        try:
            with merge_once(teacher) if once else torch.enable_grad():
                out_s, out_t = view(x), teacher(x)
            (out_s.square().sum() + out_t.square().sum()).backward()
        finally:
            for c in convs:
                del c._merge
        grads = [p.grad.clone() for p in teacher.parameters()
                 if p.grad is not None]
        return out_s.detach(), out_t.detach(), grads, len(calls)

    s1, t1, g1, n1 = step(False)
    s2, t2, g2, n2 = step(True)
    assert n1 == 2 * len(convs) and n2 == len(convs)
    assert max_relative_deviation(s2, s1) <= TOL
    assert max_relative_deviation(t2, t1) <= TOL
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(a.abs().max()))
    assert all('_merge_once' not in c.__dict__ for c in convs)  # dropped
