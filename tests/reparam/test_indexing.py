"""select_along == index_select: values, dtype, contiguity, gradients."""
import pytest
import torch

from mmgpd.reparam.indexing import is_cyclic, select_along


def _indices(size):
    g = torch.Generator().manual_seed(size)
    return {
        'cyclic_x2': torch.arange(2 * size) % size,
        'cyclic_x1.5': torch.arange(size + size // 2) % size,
        'identity': torch.arange(size),
        'permutation': torch.randperm(size, generator=g),
        'grouped': torch.arange(2 * size) // 2,  # [0, 0, 1, 1, ...]
        'random': torch.randint(size, (3 * size,), generator=g),
    }


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize('shape', [(6,), (4, 6), (2, 6, 5), (2, 3, 6, 4)])
def test_select_along_equals_index_select(shape, dtype):
    x = (torch.randn(shape) * 100).to(dtype)
    for dim in range(len(shape)):
        for kind, index in _indices(shape[dim]).items():
            for src in (x, x.transpose(0, -1).contiguous().transpose(0, -1)):
                ref = src.index_select(dim, index)
                got = select_along(src, dim - len(shape), index)  # negative dim
                assert got.dtype == ref.dtype, (kind, dim)
                assert got.stride() == ref.stride(), (kind, dim)
                assert torch.equal(got, ref), (kind, dim, shape)


def test_select_along_keeps_channels_last():
    x = torch.randn(4, 6, 3, 5).contiguous(memory_format=torch.channels_last)
    for index in (torch.arange(12) % 6, torch.tensor([5, 0, 2])):
        got, ref = select_along(x, 1, index), x.index_select(1, index)
        assert torch.equal(got, ref) and got.stride() == ref.stride()


def test_select_along_gradient_equals_index_select():
    x = torch.randn(3, 5, 4, requires_grad=True)
    w = torch.randn(3, 9, 4)
    for index in (torch.arange(9) % 5, torch.tensor([4, 0, 0, 2, 1, 3, 3, 3, 1])):
        ref, = torch.autograd.grad((x.index_select(1, index) * w).sum(), x)
        got, = torch.autograd.grad((select_along(x, 1, index) * w).sum(), x)
        assert torch.equal(got, ref)


def test_is_cyclic():
    assert is_cyclic(torch.arange(10) % 4, 4)
    assert is_cyclic(torch.arange(4), 4)
    assert not is_cyclic(torch.arange(3), 4)  # shorter than one cycle
    assert not is_cyclic(torch.arange(8) // 2, 4)
    assert not is_cyclic(torch.arange(8) % 4, 0)
