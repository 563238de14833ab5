"""Layouts: how one teacher tensor carries one student tensor along one dimension.

A :class:`Layout` of a student channel space of width ``C`` is

* an index map ``g`` (``index``, LongTensor (C',)): the student channel that
  teacher channel ``j`` replicates — any map that hits every student channel;
* a factor ``f`` (``factor``, float64 (C',)): teacher = student · f, per teacher
  channel.  ``f_j = 1 / n_{g(j)}`` is GPD's *carried* space (``n_i = |g⁻¹(i)|``),
  ``f_j = 1`` an *exact* one (plain Net2Net widening); products of carried
  tensors give other factors (``1/n²``), which every linear rule handles.

``â = expand(a) = a[..., g, ...] · f`` and, at initialisation, every hidden tensor
of the dynamic teacher is ``expand`` of the student's.  ``fold`` is the inverse
(``a_i = Σ_{g(j)=i} â_j / (f_j · n_i)``), exact at init and differentiable.

Hidden spaces are built in one of two orders (:func:`hidden`):

* ``'cyclic'`` — ``g(j) = j mod C``: the student's channels first, then the
  replicas; GPD's own map (the first ``C`` teacher channels are the student's).
  Whole attention heads stay whole when ``C'`` is a multiple of the head size.
* ``'grouped'`` with a block ``b`` — every block of ``b`` consecutive student
  channels keeps its replicas together, so a channel split at a multiple of
  ``b`` falls on a teacher segment border.  When ``r·b`` is an integer each block
  is widened on its own (cyclic within the block: equal teacher segments, e.g.
  q | k | v); otherwise whole blocks are replicated ``⌊r⌋`` or ``⌈r⌉`` times.
"""
import math
from dataclasses import dataclass
import torch

from .indexing import select_along
from .replica import teacher_width

__all__ = ['Layout', 'hidden', 'fixed']


def _as(t: torch.Tensor, dtype) -> torch.Tensor:
    """``t`` detached, on the CPU, of ``dtype`` (itself when it is)."""
    if t.dtype == dtype and t.device.type == 'cpu' and not t.requires_grad:
        return t
    return t.detach().to('cpu', dtype)


@dataclass(eq=False)
class Layout:
    """The layout of one channel space (see the module docstring).

    Attributes:
        index (LongTensor): (C',) student channel of each teacher channel.
        factor (Tensor): (C',) float64, teacher = student[index] * factor.
        width (int): Student width ``C``.
    """
    index: torch.Tensor
    factor: torch.Tensor
    width: int

    def __post_init__(self):
        # (layouts are made by the thousand while IR plans: no conversion
        # when there is nothing to convert, one reduction for the range)
        self.index = _as(self.index, torch.long)
        self.factor = _as(self.factor, torch.float64)
        if self.index.dim() != 1 or self.index.shape != self.factor.shape:
            raise ValueError('a layout needs 1-D index and factor of one size')
        if self.index.numel():
            lo, hi = torch.aminmax(self.index)
            if int(lo) < 0 or int(hi) >= self.width:
                raise ValueError('layout index out of range for width '
                                 f'{self.width}')

    # ------------------------------------------------------------ properties
    @property
    def teacher_width(self) -> int:
        return len(self.index)

    def counts(self) -> torch.Tensor:
        """``n``: (C,) replicas of each student channel."""
        return torch.bincount(self.index, minlength=self.width)

    @property
    def complete(self) -> bool:
        """Whether every student channel has at least one replica."""
        return bool((self.counts() > 0).all())

    def first(self) -> torch.Tensor:
        """(C,) teacher position of each student channel's first replica."""
        pos = torch.arange(len(self.index))
        out = torch.full((self.width, ), len(self.index), dtype=torch.long)
        return out.scatter_reduce(0, self.index, pos, 'amin')

    @property
    def is_identity(self) -> bool:
        return self.teacher_width == self.width and bool(
            torch.equal(self.index, torch.arange(self.width))) and bool(
                (self.factor == 1).all())

    @property
    def is_exact(self) -> bool:
        return bool((self.factor == 1).all())

    @property
    def is_carried(self) -> bool:
        return bool(torch.allclose(
            self.factor, 1.0 / self.counts()[self.index].double()))

    def same(self, other: 'Layout') -> bool:
        """Equal maps and factors."""
        return self.width == other.width and torch.equal(
            self.index, other.index) and torch.allclose(
                self.factor, other.factor, rtol=1e-12, atol=0)

    def same_map(self, other: 'Layout') -> bool:
        return self.width == other.width and torch.equal(self.index, other.index)

    def with_factor(self, factor) -> 'Layout':
        if not torch.is_tensor(factor):
            factor = torch.full_like(self.factor, float(factor))
        return Layout(self.index, factor, self.width)

    def exact(self) -> 'Layout':
        return self.with_factor(1.0)

    def carried(self) -> 'Layout':
        return self.with_factor(1.0 / self.counts()[self.index].double())

    # ------------------------------------------------------------- tensors
    def expand(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """IR: the teacher tensor of ``x`` (``width`` entries along ``dim``)."""
        dim = dim % x.dim()
        if x.shape[dim] != self.width:
            raise ValueError(f'{self}: cannot expand {x.shape[dim]} entries '
                             f'along dim {dim}')
        out = select_along(x, dim, self.index)
        shape = [1] * x.dim()
        shape[dim] = -1
        return out * self.factor.to(device=x.device,
                                    dtype=x.dtype).reshape(shape)

    def fold(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """The inverse of :meth:`expand` (differentiable, parameter-free)."""
        dim = dim % x.dim()
        if x.shape[dim] != self.teacher_width:
            raise ValueError(f'{self}: cannot fold {x.shape[dim]} entries '
                             f'along dim {dim}')
        if self.is_identity:
            return x
        w = 1.0 / (self.factor * self.counts()[self.index].double())
        shape = [1] * x.dim()
        shape[dim] = -1
        x = x * w.to(device=x.device, dtype=x.dtype).reshape(shape)
        out_shape = list(x.shape)
        out_shape[dim] = self.width
        return x.new_zeros(out_shape).index_add(dim, self.index.to(x.device), x)

    def __repr__(self):
        kind = 'fixed' if self.is_identity else (
            'exact' if self.is_exact else
            'carried' if self.is_carried else 'scaled')
        return f'Layout({self.width} -> {self.teacher_width}, {kind})'


def fixed(width: int) -> Layout:
    """The layout of a space that keeps its size (model input, outputs)."""
    return Layout(torch.arange(width), torch.ones(width, dtype=torch.float64),
                  width)


def hidden(width: int, ratio: float, order: str = 'cyclic', block: int = 1,
           exact: bool = False) -> Layout:
    """The layout of a widened space (see the module docstring).

    Args:
        width (int): Student width ``C``.
        ratio (float): Width ratio r >= 1.
        order (str): ``'cyclic'`` or ``'grouped'``.
        block (int): Block size of the ``'grouped'`` order (divides ``width``).
        exact (bool): Factor 1 instead of the carried ``1/n``.
    """
    if order == 'cyclic':
        index = torch.arange(teacher_width(width, ratio)) % width
    elif order == 'grouped':
        if block < 1 or width % block:
            raise ValueError(f'block {block} does not divide width {width}')
        m = width // block
        if abs(ratio * block - round(ratio * block)) < 1e-9:
            seg = torch.arange(teacher_width(block, ratio)) % block
            index = torch.cat([seg + k * block for k in range(m)])
        else:
            total = teacher_width(m, ratio)
            reps = [math.floor((k + 1) * total / m) - math.floor(k * total / m)
                    for k in range(m)]
            index = torch.cat([
                (torch.arange(block) + k * block).repeat(n)
                for k, n in enumerate(reps)
            ])
    else:
        raise ValueError(f"order must be 'cyclic' or 'grouped', got {order!r}")
    lay = Layout(index, torch.ones(len(index), dtype=torch.float64), width)
    return lay if exact else lay.carried()
