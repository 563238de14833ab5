"""How one teacher tensor is built from (IR) and folded back into (CBR) a student tensor.

A :class:`ParamMap` lists, for some dimensions of a tensor, a :class:`DimMap`:

* IR (expand):   ``T = S.index_select(d, index) * factor``   (factor broadcast on ``d``)
* CBR (contract): ``S = T.index_select(d, first) / factor[first]``

``index`` (T_d,) gives the student position of every teacher position, ``first``
(S_d,) the teacher position of each student position's first replica.  Dimensions
not listed are copied.  ``contract(expand(S)) == S`` exactly, for every map.
Contraction is differentiable; with ``grad_rescale=True`` the gradient that flows
back through it is divided by the factor once more, which undoes the factor² change
of the student's effective learning rate under the hard strategy (docs/design.md).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from .indexing import is_cyclic, select_along
from .replica import ReplicaMap

__all__ = ['DimMap', 'ParamMap']


@dataclass
class DimMap:
    """The map of one tensor dimension.

    Attributes:
        index (LongTensor): (T_d,) student position of each teacher position.
        factor (Tensor | None): (T_d,) teacher = student * factor; None means 1.
        first (LongTensor): (S_d,) teacher position of each student position's
            first replica.
    """
    index: torch.Tensor
    factor: Optional[torch.Tensor]
    first: torch.Tensor
    is_prefix: bool = field(init=False)

    def __post_init__(self):
        self.is_prefix = bool(torch.equal(
            self.first, torch.arange(len(self.first))))
        if self.factor is not None and torch.all(self.factor == 1):
            self.factor = None
        self._student_factor = None  # see student_factor

    @property
    def student_factor(self) -> Optional[torch.Tensor]:
        """(S_d,) ``g`` with ``factor == g[index]`` (every replica of a
        student position scaled alike, e.g. a carried 1/n), else None: then
        IR can scale the student tensor before replicating it."""
        if self.factor is None:
            return None
        if self._student_factor is None:
            g = self.factor[self.first]
            self._student_factor = g if torch.equal(
                g[self.index], self.factor) else False
        return self._student_factor if self._student_factor is not False \
            else None

    @property
    def student_size(self) -> int:
        return len(self.first)

    @property
    def teacher_size(self) -> int:
        return len(self.index)

    @classmethod
    def of(cls, rmap: ReplicaMap, factor=None) -> 'DimMap':
        """A map following ``rmap`` (prefix first replicas) with ``factor``."""
        return cls(rmap.index(), factor, torch.arange(rmap.width))

    @classmethod
    def concat(cls, parts) -> 'DimMap':
        """Maps of consecutive segments (e.g. q | k | v) joined along one dim."""
        index, factor, first = [], [], []
        s_off = t_off = 0
        for part in parts:
            index.append(part.index + s_off)
            factor.append(part.factor if part.factor is not None else
                          torch.ones(part.teacher_size, dtype=torch.float64))
            first.append(part.first + t_off)
            s_off += part.student_size
            t_off += part.teacher_size
        return cls(torch.cat(index), torch.cat(factor), torch.cat(first))


def _shape_for(vec: torch.Tensor, dim: int, ndim: int):
    shape = [1] * ndim
    shape[dim] = -1
    return vec.reshape(shape)


class _RescaledMul(torch.autograd.Function):
    """``y = x * a``; backward passes ``dy / a`` (instead of ``dy * a``)."""

    @staticmethod
    def forward(ctx, x, a):
        ctx.save_for_backward(a)
        return x * a

    @staticmethod
    def backward(ctx, grad):
        (a, ) = ctx.saved_tensors
        return grad / a, None


class ParamMap:
    """Per-dimension maps between a student tensor and its teacher tensor.

    Args:
        dims (dict[int, DimMap]): The mapped dimensions (non-negative).
        student_shape (tuple): Shape of the student tensor.
    """

    def __init__(self, dims: Dict[int, DimMap], student_shape):
        self.dims = {d: m for d, m in dims.items()}
        self.student_shape = tuple(student_shape)
        for d, m in self.dims.items():
            if self.student_shape[d] != m.student_size:
                raise ValueError(
                    f'dim {d} of a {self.student_shape} tensor has size '
                    f'{self.student_shape[d]}, its map {m.student_size}')
        self.teacher_shape = tuple(
            self.dims[d].teacher_size if d in self.dims else s
            for d, s in enumerate(self.student_shape))
        self._inv_cache = {}

    @property
    def identity(self) -> bool:
        return all(m.teacher_size == m.student_size and m.is_prefix
                   and m.factor is None for m in self.dims.values())

    def _whole_repeats(self):
        """Per dim the repeat count when every mapped dim is cyclic with a
        whole ratio and a per-student-position factor (the usual IR layout):
        then :meth:`expand` is one ``repeat``; else None."""
        reps = [1] * len(self.student_shape)
        for d, m in self.dims.items():
            n, rest = divmod(m.teacher_size, m.student_size)
            if rest or not is_cyclic(m.index, m.student_size) or (
                    m.factor is not None and m.student_factor is None):
                return None
            reps[d] = n
        return reps

    def expand(self, student: torch.Tensor) -> torch.Tensor:
        """IR: the teacher tensor (teacher_shape) built from ``student``."""
        if not self.dims:
            return student
        reps = self._whole_repeats() if student.is_contiguous() else None
        if reps is not None:  # scaled at S's size, then copied in one pass
            out = student
            for d, m in self.dims.items():
                if m.student_factor is not None:
                    out = out * _shape_for(m.student_factor.to(out), d,
                                           out.dim())
            return out.repeat(*reps)
        out, scale = student, None
        # inner dims first: the later, outer selections copy whole rows
        for d, m in sorted(self.dims.items(), reverse=True):
            g = m.student_factor
            if g is not None:  # scaled at the student's (smaller) size
                out = out * _shape_for(g.to(out), d, out.dim())
            out = select_along(out, d, m.index)
            if m.factor is not None and g is None:  # one product at the end
                f = _shape_for(m.factor.to(out), d, out.dim())
                scale = f if scale is None else scale * f
        if scale is not None:  # ``out`` is a fresh copy: scaled in place
            out = out.mul_(scale)
        return out

    def _inverse_factor(self, like: torch.Tensor) -> Optional[torch.Tensor]:
        """1/factor at the first replicas, as one broadcastable tensor (cached;
        under ``torch.compile`` the cache is only read, so that filling it does
        not make the compiled code recompile on the next call)."""
        key = (like.device, like.dtype)
        if key in self._inv_cache:
            return self._inv_cache[key]
        inv = None
        for d, m in self.dims.items():
            if m.factor is None:
                continue
            f = _shape_for(1.0 / m.factor[m.first], d, len(self.student_shape))
            inv = f if inv is None else inv * f
        inv = None if inv is None else inv.to(like)
        if not torch.compiler.is_compiling():
            self._inv_cache[key] = inv
        return inv

    def contract(self, teacher: torch.Tensor, grad_rescale: bool = False):
        """CBR: the student tensor folded out of ``teacher`` (differentiable).

        Args:
            teacher (Tensor): A tensor of ``teacher_shape``.
            grad_rescale (bool): Divide the gradient flowing back by the factor
                (see the module docstring). Defaults to False.
        """
        out = teacher
        for d, m in self.dims.items():
            if m.is_prefix:
                if m.student_size != m.teacher_size:
                    out = out.narrow(d, 0, m.student_size)
            else:
                out = select_along(out, d, m.first)
        return self.rescale(out, grad_rescale)

    @property
    def is_prefix_block(self) -> bool:
        """Whether the first replicas are the leading block of every dim."""
        return all(m.is_prefix for m in self.dims.values())

    def block_sizes(self):
        """``{dim: student size}``: the leading block that CBR reads."""
        return {d: m.student_size for d, m in self.dims.items()}

    def rescale(self, block: torch.Tensor, grad_rescale: bool = False):
        """The factor part of CBR, on the already selected first-replica block."""
        inv = self._inverse_factor(block)
        if inv is None:
            return block
        if grad_rescale:
            return _RescaledMul.apply(block, inv)
        return block * inv
