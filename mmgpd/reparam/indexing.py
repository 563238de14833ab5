"""``index_select`` along any dim, the fast way (pure PyTorch).

IR replicates channels with an index map along one dim of every widened
tensor (a parameter, or the tags that the layout planner carries beside each
activation).  On the CPU ``Tensor.index_select`` along an *inner* dim copies
one element at a time: widening (1, 1024, 96) float64 to (1, 1024, 192) takes
~0.9 ms, against ~0.05 ms for ``repeat`` and ~0.08 ms for ``gather``; a
(2304, 768) weight selected along dim 1 then dim 0 takes 26 ms, along dim 0
of the already widened rows last 2.7 ms.  :func:`select_along` returns
exactly ``x.index_select(dim, index)`` (same values, dtype, strides and
autograd; tested), computed as

* ``repeat`` (+ ``narrow``) when ``index`` is cyclic, ``index[j] = j mod C``
  with ``C = x.shape[dim]`` (IR's replica layout at any ratio);
* ``gather`` with the index broadcast over the other dims, along an inner
  dim otherwise;
* ``index_select`` along dim 0 (row copies, already fast), on CUDA, under
  ``torch.compile`` (the cyclic test reads the index's values) and for a
  non-contiguous ``x`` (e.g. channels_last weights: the output keeps
  ``index_select``'s memory format).
"""
import torch

__all__ = ['select_along', 'is_cyclic']


def is_cyclic(index: torch.Tensor, size: int) -> bool:
    """Whether ``index[j] == j mod size`` for every j (and len >= size)."""
    n = index.numel()
    if size <= 0 or n < size or index.dim() != 1:
        return False
    ref = torch.arange(n, device=index.device, dtype=index.dtype) % size
    return torch.equal(index, ref)


def select_along(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(dim, index)`` (``index``: 1-D int64) without the
    element-wise copy loop of an inner-dim ``index_select`` on the CPU.

    Returns:
        Tensor: ``x.shape`` with ``index.numel()`` entries along ``dim``;
        contiguous for a contiguous ``x``.
    """
    index = index.to(x.device)
    if x.dim() == 0 or torch.compiler.is_compiling() or not x.is_contiguous():
        # no data-dependent branch in a graph; other strides (channels_last)
        # keep index_select's output format
        return x.index_select(dim, index)
    dim = dim % x.dim()
    size, n = x.shape[dim], index.numel()
    if is_cyclic(index, size):
        reps = -(-n // size)
        out = x.repeat(*[reps if d == dim else 1 for d in range(x.dim())])
        if reps * size != n:
            out = out.narrow(dim, 0, n).contiguous()
        return out
    if dim == 0 or x.is_cuda:
        return x.index_select(dim, index)
    shape = list(x.shape)
    shape[dim] = n
    view = [1] * x.dim()
    view[dim] = n
    return torch.gather(x, dim, index.view(view).expand(shape))
