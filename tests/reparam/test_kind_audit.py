"""Rule-table audit (issue 18): every class / op either gives an exact teacher
or is refused by name.

For each class of the issue — and each functional op acting on the CHANNEL
dimension of a hidden tensor — the smallest net that uses it between two convs
(or linears) goes through ``inverse_reparameterize`` at a whole and a
fractional ratio.  The outcome must be one of:

* a teacher T_d with ``max|T_d(x) − S(x)| / max|S(x)| <= 1e-5`` on a fresh
  random batch, in eval mode and in train mode (``torch.manual_seed`` set
  before each forward);
* ``UnsupportedModuleError`` / ``ValueError`` whose message names the module
  path (``under_test...``) and, for a functional op, the op.

Anything else — a silently inexact teacher, an ``IRVerificationError``, any
other exception — fails.  All parameters (and batch-norm statistics) are
random, so that no rule can hide behind a zero-initialised layer.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.reparam import (UnsupportedModuleError, inverse_reparameterize,
                           max_relative_deviation)

TOL = 1e-5
RATIOS = [2, 1.5]
PATH = 'under_test'


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter ~ U(-1, 1) (norm weights U(0.5, 1.5)), BN statistics random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and name.endswith('weight') and 'conv' not in name \
                    and 'fc' not in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(2 * torch.rand(p.shape, generator=g) - 1)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape,
                                                generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape,
                                               generator=g) + 0.5)
    return net


class ConvSandwich(nn.Module):
    """conv(3 → c_in) → ``under_test`` → conv(c_out → 5)."""

    def __init__(self, module: nn.Module, c_in: int = 8, c_out: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c_in, 3, padding=1)
        self.under_test = module
        self.conv_out = nn.Conv2d(c_out, 5, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.under_test(self.conv_in(x)))


# --------------------------------------------------------------------------- #
# Modules
# --------------------------------------------------------------------------- #
def _glu():
    return ConvSandwich(nn.GLU(dim=1), 8, 4)


def _layernorm2d():
    from mmpretrain.models.utils.norm import LayerNorm2d
    return ConvSandwich(LayerNorm2d(8))


def _conv_ws2d():
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    return ConvSandwich(ConvWS2d(8, 8, 3, padding=1))


def _batchnorm_xd():
    from mmengine.model.utils import _BatchNormXd
    return ConvSandwich(_BatchNormXd(8))


class FlattenNet(nn.Module):
    """conv(3 → 8) on 2×2 maps → Flatten (channel-major) → linear(32 → 5)."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.under_test = nn.Flatten(1)
        self.fc_out = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc_out(self.under_test(self.conv_in(x)))


class UnflattenNet(nn.Module):
    """linear(6 → 32) → Unflatten to (8, 2, 2) → conv(8 → 5)."""

    def __init__(self):
        super().__init__()
        self.fc_in = nn.Linear(6, 32)
        self.under_test = nn.Unflatten(1, (8, 2, 2))
        self.conv_out = nn.Conv2d(8, 5, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.under_test(self.fc_in(x)))


def _constant_pad():
    return ConvSandwich(nn.ConstantPad2d(1, 0.5))


def _alpha_dropout():
    return ConvSandwich(nn.AlphaDropout(0.5))


def _context_block():
    from mmcv.cnn.bricks.context_block import ContextBlock
    block = ContextBlock(8, ratio=0.5)  # default: 'att' pooling, channel_add
    assert block.fusion_types == ('channel_add', )
    return ConvSandwich(block)


# --------------------------------------------------------------------------- #
# Functional ops on the channel dimension: in the forward of ``under_test``, a
# block that holds the convs around the op (so that an engine that traces
# containers sees the op itself, not an unknown leaf module)
# --------------------------------------------------------------------------- #
class Wrapped(nn.Module):
    """The student: ``under_test`` as its only child."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.under_test = block

    def forward(self, x):
        return self.under_test(x)


class OpBlock(nn.Module):
    """conv_in(3 → 8) → ``fn`` → conv_out(c_out → 5) (or a linear head, 2-D)."""

    def __init__(self, fn, c_out: int, head: str = 'conv'):
        super().__init__()
        self.fn = fn
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_out = nn.Conv2d(c_out, 5, 3, padding=1) if head == 'conv' \
            else nn.Linear(c_out, 5)

    def forward(self, x):
        return self.conv_out(self.fn(self.conv_in(x)))


class JoinBlock(nn.Module):
    """conv_a(x), conv_b(x) → ``fn(a, b)`` → conv_out(c_out → 5)."""

    def __init__(self, fn, c_out: int):
        super().__init__()
        self.fn = fn
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_out = nn.Conv2d(c_out, 5, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.fn(self.conv_a(x), self.conv_b(x)))


class SplitBlock(nn.Module):
    """conv_in → ``a, b = fn(y)`` → conv_a(a) + conv_b(b)."""

    def __init__(self, fn, c_a: int, c_b: int):
        super().__init__()
        self.fn = fn
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(c_a, 5, 3, padding=1)
        self.conv_b = nn.Conv2d(c_b, 5, 3, padding=1)

    def forward(self, x):
        a, b = self.fn(self.conv_in(x))
        return self.conv_a(a) + self.conv_b(b)


def _op(fn, c_out, head='conv'):
    return lambda: Wrapped(OpBlock(fn, c_out, head))


def _select_index(y):
    return y.index_select(1, torch.tensor([0, 3, 5, 6, 7], device=y.device))


def _channel_max(y):
    return y.max(1, keepdim=True)[0]


IMG = (3, 6, 6)
#: name -> (builder, input shape, op names one of which a refusal must name)
CASES = {
    'GLU': (_glu, IMG, None),
    'LayerNorm2d': (_layernorm2d, IMG, None),
    'ConvWS2d': (_conv_ws2d, IMG, None),
    '_BatchNormXd': (_batchnorm_xd, IMG, None),
    'Flatten': (FlattenNet, (3, 2, 2), None),
    'Unflatten': (UnflattenNet, (6, ), None),
    'ConstantPad2d(0.5)': (_constant_pad, IMG, None),
    'AlphaDropout': (_alpha_dropout, IMG, None),
    'ContextBlock': (_context_block, IMG, None),
    'cat(dim=1)': (lambda: Wrapped(JoinBlock(lambda a, b: torch.cat([a, b], 1),
                                             16)), IMG, ('cat', 'concat')),
    'split(dim=1)': (lambda: Wrapped(SplitBlock(
        lambda y: torch.split(y, [3, 5], 1), 3, 5)), IMG, ('split', )),
    'chunk(dim=1)': (lambda: Wrapped(SplitBlock(lambda y: y.chunk(2, 1), 4, 4)),
                     IMG, ('chunk', )),
    'x[:, a:b]': (_op(lambda y: y[:, 2:6], 4), IMG, ('getitem', 'slice')),
    'narrow(dim=1)': (_op(lambda y: y.narrow(1, 2, 4), 4), IMG, ('narrow', )),
    'index_select(dim=1)': (_op(_select_index, 5), IMG, ('index_select', )),
    'roll(dim=1)': (_op(lambda y: torch.roll(y, 3, 1), 8), IMG, ('roll', )),
    'mean(dim=1)': (_op(lambda y: y.mean(1, keepdim=True), 1), IMG, ('mean', )),
    'max(dim=1)': (_op(_channel_max, 1), IMG, ('max', )),
    'F.pad(channels)': (_op(lambda y: F.pad(y, (0, 0, 0, 0, 1, 2)), 11), IMG,
                        ('pad', )),
}


def _deviations(student, teacher, shape):
    """max relative deviation T_d vs S in eval and in train mode (fresh batch)."""
    x = torch.randn((4, ) + shape, generator=torch.Generator().manual_seed(7))
    out = {}
    for mode in ('eval', 'train'):
        student.train(mode == 'train')
        teacher.train(mode == 'train')
        with torch.no_grad():
            torch.manual_seed(0)
            s = student(x)
            torch.manual_seed(0)
            t = teacher(x)
        out[mode] = max_relative_deviation(t, s)
    return out


def check_exact_or_named_refusal(name, ratio):
    build, shape, ops = CASES[name]
    torch.manual_seed(0)
    student = _randomize(build()).eval()
    probe = torch.randn((2, ) + shape, generator=torch.Generator().manual_seed(1))
    try:
        teacher = inverse_reparameterize(student, ratio, example_inputs=probe)
    except (UnsupportedModuleError, ValueError) as exc:
        msg = str(exc)
        assert PATH in msg, f'{name}: refused without naming {PATH!r}: {msg}'
        if ops is not None:
            assert any(op in msg for op in ops), \
                f'{name}: refused without naming the op {ops}: {msg}'
        return None
    dev = _deviations(student, teacher, shape)
    assert dev['eval'] <= TOL and dev['train'] <= TOL, \
        f'{name} at ratio {ratio}: silently inexact teacher, max relative ' \
        f'deviation eval {dev["eval"]:.3g}, train {dev["train"]:.3g}'
    return teacher


@pytest.mark.parametrize('ratio', RATIOS)
@pytest.mark.parametrize('name', list(CASES))
def test_exact_or_refused_by_name(name, ratio):
    check_exact_or_named_refusal(name, ratio)


@pytest.mark.parametrize('ratio', RATIOS)
def test_context_block_refusal_gives_the_right_reason(ratio):
    """ContextBlock's default fusion is additive (``channel_add``): if it is
    refused, the reason must not be that it is a multiplicative gate."""
    build, shape, _ = CASES['ContextBlock']
    torch.manual_seed(0)
    student = _randomize(build()).eval()
    probe = torch.randn((2, ) + shape, generator=torch.Generator().manual_seed(1))
    try:
        inverse_reparameterize(student, ratio, example_inputs=probe)
    except (UnsupportedModuleError, ValueError) as exc:
        assert 'multiplicative' not in str(exc) and 'SE)' not in str(exc), str(exc)


#: Controls: the same ops OFF the channel dimension must stay exact (GAP,
#: Swin's shifted windows, spatial crops and joins are in every zoo model).
CONTROLS = {
    'mean(spatial)': (_op(lambda y: y.mean((2, 3)), 8, head='linear'), IMG),
    'roll(spatial)': (_op(lambda y: torch.roll(y, (1, 2), (2, 3)), 8), IMG),
    'x[:, :, 1:]': (_op(lambda y: y[:, :, 1:], 8), IMG),
    'cat(dim=2)': (lambda: Wrapped(JoinBlock(lambda a, b: torch.cat([a, b], 2),
                                             8)), IMG),
}


@pytest.mark.parametrize('ratio', RATIOS)
@pytest.mark.parametrize('name', list(CONTROLS))
def test_ops_off_the_channel_dim_stay_exact(name, ratio):
    build, shape = CONTROLS[name]
    torch.manual_seed(0)
    student = _randomize(build()).eval()
    probe = torch.randn((2, ) + shape, generator=torch.Generator().manual_seed(1))
    teacher = inverse_reparameterize(student, ratio, example_inputs=probe)
    dev = _deviations(student, teacher, shape)
    assert dev['eval'] <= TOL and dev['train'] <= TOL, dev
