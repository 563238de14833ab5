"""Layouts and the layout planner: channel split / concat / shuffle, gates,
layer scales, token mixing, flatten — exact, or refused by name."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.reparam import (UnsupportedModuleError, extract_student,
                           inverse_reparameterize, max_relative_deviation)
from mmgpd.reparam.layout import Layout, fixed, hidden

from .nets import randomize_norms


# ----------------------------------------------------------------- Layout
@pytest.mark.parametrize('width,ratio,order,block', [
    (8, 2, 'cyclic', 1), (8, 1.5, 'cyclic', 1), (12, 2, 'grouped', 4),
    (12, 1.5, 'grouped', 4), (12, 1.5, 'grouped', 1), (6, 3, 'grouped', 2),
    (16, 4 / 3, 'grouped', 4)])
def test_hidden_layouts_are_complete_and_fold_inverts_expand(
        width, ratio, order, block):
    lay = hidden(width, ratio, order, block)
    assert lay.complete and lay.is_carried
    x = torch.randn(3, width, 5)
    assert torch.allclose(lay.fold(lay.expand(x, 1), 1), x, atol=1e-6)
    ex = lay.exact()
    assert torch.allclose(ex.fold(ex.expand(x, 1), 1), x, atol=1e-6)
    first = lay.first()
    assert torch.equal(lay.index[first], torch.arange(width))


def test_grouped_layout_keeps_segments_together():
    lay = hidden(12, 2, 'grouped', 4)
    # each block of 4 student channels occupies one contiguous teacher segment
    seg = lay.index.reshape(3, 8) // 4
    assert torch.equal(seg, torch.arange(3)[:, None].expand(3, 8))
    assert hidden(12, 1.5, 'grouped', 4).teacher_width == 18


def test_fixed_layout_is_identity():
    lay = fixed(5)
    assert lay.is_identity and lay.is_exact
    x = torch.randn(2, 5)
    assert torch.equal(lay.expand(x, 1), x) and torch.equal(lay.fold(x, 1), x)


def test_layout_rejects_an_out_of_range_index():
    with pytest.raises(ValueError):
        Layout(torch.tensor([0, 3]), torch.ones(2, dtype=torch.float64), 3)


# ------------------------------------------------------------------ nets
class ShuffleNet(nn.Module):
    """ShuffleNetV2-style units: chunk, branch, cat, channel shuffle."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.BatchNorm2d(c // 2),
                          nn.ReLU(), nn.Conv2d(c // 2, c // 2, 3, padding=1,
                                               groups=c // 2))
            for _ in range(3))
        self.fc = nn.Linear(c, 5)

    @staticmethod
    def shuffle(x, groups=2):
        n, c, h, w = x.shape
        return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(
            n, c, h, w)

    def forward(self, x):
        x = self.bn(self.stem(x))
        for branch in self.branches:
            a, b = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat([a, branch(b)], 1))
        return self.fc(x.mean((2, 3)))


class GateScaleNet(nn.Module):
    """An SE gate (x * sigmoid(conv(pool(x)))), a layer-scale parameter, a
    hard-swish written out, and a dense-net concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.se1 = nn.Conv2d(8, 4, 1)
        self.se2 = nn.Conv2d(4, 8, 1)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.grow = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        gate = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3),
                                                             keepdim=True)))))
        x = x + self.gamma.view(1, -1, 1, 1) * (x * gate)
        y = self.grow(x)
        y = y * F.relu6(y + 3) / 6
        x = torch.cat([x, y], 1)
        return self.fc(x.flatten(2).mean(-1))


class SplitNet(nn.Module):
    """Res2Net-style: torch.split by an attribute read in forward."""

    def __init__(self, width=4, scales=3):
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(3, width * scales, 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1) for _ in range(scales - 1))
        self.fc = nn.Linear(width * scales, 5)

    def forward(self, x):
        spx = torch.split(self.stem(x), self.width, 1)
        outs, sp = [], None
        for i, conv in enumerate(self.convs):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = F.relu(conv(sp))
            outs.append(sp)
        outs.append(spx[-1])
        return self.fc(torch.cat(outs, 1).mean((2, 3)))


class MixerNet(nn.Module):
    """MLP-Mixer-style token mixing: a linear over the token dim."""

    def __init__(self, c=8, tokens=16):
        super().__init__()
        self.embed = nn.Conv2d(3, c, 4, 4)
        self.norm = nn.LayerNorm(c)
        self.token_mix = nn.Linear(tokens, tokens)
        self.channel_mix = nn.Linear(c, c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # (N, L, C)
        y = self.token_mix(self.norm(x).transpose(1, 2)).transpose(1, 2)
        x = x + y
        x = x + self.channel_mix(F.gelu(self.norm(x)))
        return self.fc(x.mean(1))


class FlattenNet(nn.Module):
    """A linear on the flattened C×H×W map (VGG/AlexNet classifier style)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=4, padding=1)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        return self.fc(F.relu(self.fc1(self.flatten(F.relu(self.conv(x))))))


def _check(net, ratio, size=16, train=False):
    net = randomize_norms(net).eval()
    probe = torch.randn(2, 3, size, size)
    teacher = inverse_reparameterize(net, ratio, example_inputs=probe)
    x = torch.randn(3, 3, size, size)
    net.train(train)
    teacher.train(train)
    with torch.no_grad():
        assert max_relative_deviation(teacher(x), net(x)) <= 1e-5
        student = extract_student(teacher)
        assert max_relative_deviation(student(x), net(x)) <= 1e-5
    for (k, v), (k2, v2) in zip(student.state_dict().items(),
                                net.state_dict().items()):
        assert k == k2 and v.shape == v2.shape
    return teacher


@pytest.mark.parametrize('ratio', [2, 1.5])
@pytest.mark.parametrize('cls', [GateScaleNet, MixerNet, FlattenNet])
def test_gates_scales_token_mixing_and_flatten_are_exact(cls, ratio):
    _check(cls(), ratio, train=False)
    _check(cls(), ratio, train=True)


@pytest.mark.parametrize('ratio', [2, 3])
def test_channel_split_and_shuffle_are_exact(ratio):
    teacher = _check(ShuffleNet(), ratio)
    # the stem feeds the channel splits: its replicas are kept together
    dim, lay = teacher.gpd_plan.layout_of('stem')
    assert dim == 1 and not torch.equal(
        lay.index, torch.arange(lay.teacher_width) % lay.width)


def test_split_by_attribute_is_exact_when_the_attribute_is_widened(monkeypatch):
    from mmgpd.reparam import attrs
    key = f'{SplitNet.__module__}.{SplitNet.__qualname__}'
    monkeypatch.setitem(attrs.ATTRIBUTES, key, {'width': 'width'})
    _check(SplitNet(), 2)
    _check(SplitNet(), 1.5)


def test_split_by_an_unwidened_attribute_is_refused_by_name():
    with pytest.raises((UnsupportedModuleError, ValueError)) as err:
        _check(SplitNet(), 2)
    assert 'split' in str(err.value) or 'convs.' in str(err.value)


class _ChannelMean(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.std(1, keepdim=True).mean((2, 3)) * y.mean((2, 3)))


class _Glu(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.glu = nn.GLU(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.glu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize('cls,needle', [(_ChannelMean, 'std'),
                                        (_Glu, 'glu')])
def test_channel_ops_without_rule_are_refused_by_name(cls, needle):
    with pytest.raises(UnsupportedModuleError) as err:
        inverse_reparameterize(cls().eval(), 2,
                               example_inputs=torch.randn(2, 3, 4, 4))
    assert needle in str(err.value)


class _Knn(nn.Module):
    """Neighbours chosen by a normalised feature (refused), then gathered and
    subtracted: the ops after the refusal only repeat it."""

    def forward(self, y):
        n = F.normalize(y, dim=1)
        idx = (n * n.roll(1, 2)).sum(1).flatten(1).argsort(dim=1)
        g = y.flatten(2).gather(2, idx[:, None].expand(-1, y.shape[1], -1))
        return g.view_as(y) - y


class _TwoKnn(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1, self.knn1 = nn.Conv2d(3, 8, 1), _Knn()
        self.conv2, self.knn2 = nn.Conv2d(8, 8, 1), _Knn()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.knn1(self.conv1(x))
        y = self.knn2(self.conv2(y))  # a refusal of its own, after a conv
        return self.fc(y.mean((2, 3)))


def test_a_refusal_names_its_causes_not_what_follows_from_them():
    """The ops computed from a refused op's output (including through the
    integer indices it selects) are not checked again: the refusal lists the
    cause in each block, and the block after a conv is still checked."""
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModuleError) as err:
        inverse_reparameterize(_TwoKnn(), 2,
                               example_inputs=torch.randn(2, 3, 6, 6))
    assert err.value.modules == [
        ('knn1', 'op', 'normalize() over the widened channels'),
        ('knn2', 'op', 'normalize() over the widened channels')]
