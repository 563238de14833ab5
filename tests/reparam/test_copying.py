"""copy_structure: a deep copy of the module tree that shares the tensors."""
import copy

import torch
import torch.nn as nn

from mmgpd.reparam.copying import copy_structure, own_tensors


class _Block(nn.Module):

    def __init__(self, shared):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.tied = shared               # one module reached twice
        self.widths = [2, 4]             # mutable: copied
        self.kernel = (3, 3)             # immutable: shared
        self.lookup = {'a': [1]}         # nested mutable
        self.plain = torch.arange(3.0)   # a plain tensor attribute
        self.register_forward_hook(lambda m, a, o: None)

    def forward(self, x):
        return self.tied(self.bn(self.conv(x)))


class _Custom(nn.Linear):
    """Changes the copy protocol: copied by copy.deepcopy itself."""
    copies = 0

    def __deepcopy__(self, memo):
        type(self).copies += 1
        new = nn.Linear.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


def _net():
    shared = nn.ReLU()
    return nn.Sequential(_Block(shared), _Block(shared), _Custom(2, 2))


def test_copy_shares_tensors_and_copies_everything_else():
    net = _net()
    for buffers in (True, False):
        c = copy_structure(net, buffers=buffers)
        a, b = dict(net.named_modules()), dict(c.named_modules())
        assert a.keys() == b.keys()
        for k in a:
            assert type(a[k]) is type(b[k]) and a[k] is not b[k], k
        for p, q in zip(net.parameters(), c.parameters()):
            assert p is q
        for p, q in zip(net.buffers(), c.buffers()):
            assert (p is q) == buffers
            assert torch.equal(p, q)
        assert c[0].tied is c[1].tied and c[0].tied is not net[0].tied
        assert c[0].widths == [2, 4] and c[0].widths is not net[0].widths
        assert c[0].lookup == {'a': [1]} and \
            c[0].lookup['a'] is not net[0].lookup['a']
        assert c[0].kernel is net[0].kernel
        assert torch.equal(c[0].plain, net[0].plain) and \
            c[0].plain is not net[0].plain
        assert len(c[0]._forward_hooks) == 1
        assert c[0]._forward_pre_hooks is not net[0]._forward_pre_hooks
        c[0].widths.append(8)
        c[0].kernel = (5, 5)
        assert net[0].widths == [2, 4] and net[0].kernel == (3, 3)
        x = torch.randn(1, 2, 3, 3)
        net.eval(), c.eval()
        assert torch.equal(net[:2](x), c[:2](x))


def test_a_class_with_its_own_copy_protocol_is_deep_copied():
    _Custom.copies = 0
    net = _net()
    c = copy_structure(net)
    assert _Custom.copies == 1
    assert c[2].weight is net[2].weight  # still shared, through the memo


def test_own_tensors_unshares_what_no_rule_replaced():
    net = _net()
    c = own_tensors(copy_structure(net), net)
    for p, q in zip(net.parameters(), c.parameters()):
        assert p is not q and torch.equal(p, q)
