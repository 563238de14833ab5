"""Replica maps: how a student channel space of width C is carried by the teacher.

Every hidden activation ``a`` (C channels) of the student S is carried in the
dynamic teacher T_d by ``C'`` channels with

    â_j = a_{g(j)} / s_j,        g(j) = j mod C,        s_j = n_{g(j)},

where ``n_i = |g⁻¹(i)|`` is the number of replicas of student channel ``i``.  The
first ``C`` teacher channels are the student's own (``g(j) = j`` for ``j < C``).
An integer ratio ``r`` gives ``C' = rC`` and ``n_i = r``; a fractional one gives
``C' = round(rC)`` and ``n_i ∈ {⌊r⌋, ⌈r⌉}``.  Because ``g`` and ``n`` depend only on
``(C, C')`` and ``C'`` only on ``(C, ratio)``, two spaces of equal width are
carried identically, so residual additions and concatenations stay consistent
with no graph analysis.

A *fixed* space (the model's input, its outputs) keeps its size: ``C' = C``,
``g = id``, ``n = 1``.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ['ReplicaMap', 'check_ratio', 'teacher_width', 'fold_to_student']


def check_ratio(ratio) -> float:
    """Validate an expansion ratio and return it as a float.

    Raises:
        ValueError: If ``ratio`` is not a real number, is NaN / inf, or is < 1.
    """
    if isinstance(ratio, bool):
        raise ValueError(f'ratio must be a real number >= 1, got {ratio!r}')
    if not isinstance(ratio, (int, float)):
        try:
            ratio = float(ratio)
        except (TypeError, ValueError):
            raise ValueError(
                f'ratio must be a real number >= 1, got {ratio!r}') from None
    ratio = float(ratio)
    if math.isnan(ratio) or math.isinf(ratio):
        raise ValueError(f'ratio must be finite, got {ratio}')
    if ratio < 1:
        raise ValueError(
            f'ratio must be >= 1 (the dynamic teacher is at least as wide as '
            f'the student), got {ratio}')
    return ratio


def teacher_width(width: int, ratio: float) -> int:
    """Teacher width ``C' = round(ratio * C)`` of a hidden space of width ``C``."""
    return int(math.floor(ratio * width + 0.5))


@dataclass(frozen=True)
class ReplicaMap:
    """The replica map of one channel space.

    Attributes:
        width (int): Student width ``C``.
        teacher_width (int): Teacher width ``C' >= C``.
    """
    width: int
    teacher_width: int

    def __post_init__(self):
        if self.width < 1 or self.teacher_width < self.width:
            raise ValueError(f'invalid replica map {self.width} -> '
                             f'{self.teacher_width}')

    @classmethod
    def hidden(cls, width: int, ratio: float) -> 'ReplicaMap':
        """The map of a hidden (widened) space of student width ``width``."""
        return cls(width, teacher_width(width, ratio))

    @classmethod
    def fixed(cls, width: int) -> 'ReplicaMap':
        """The map of a space that keeps its size (model input / output)."""
        return cls(width, width)

    @property
    def is_fixed(self) -> bool:
        return self.teacher_width == self.width

    def index(self, device=None) -> torch.Tensor:
        """``g``: LongTensor (C',), the student channel of each teacher channel."""
        return torch.arange(self.teacher_width, device=device) % self.width

    def counts(self, device=None) -> torch.Tensor:
        """``n``: LongTensor (C,), the number of replicas of each student channel."""
        return torch.bincount(self.index(device), minlength=self.width)

    def scale(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``s = n[g]``: (C',), the divisor each teacher channel carries."""
        return self.counts(device)[self.index(device)].to(dtype)

    @property
    def uniform(self) -> Optional[int]:
        """The common replica count if every channel has the same, else None."""
        if self.teacher_width % self.width == 0:
            return self.teacher_width // self.width
        return None

    def fold(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """The inverse of IR's carry: a teacher activation back in the
        student's space, ``a_i = Σ_{j: g(j) = i} â_j``.

        Parameter-free and exact at init (``â_j = a_{g(j)} / n_{g(j)}``);
        differentiable. ``x`` has ``teacher_width`` entries along ``dim``; the
        result has ``width``.
        """
        if x.shape[dim] != self.teacher_width:
            raise ValueError(f'{self}: cannot fold a tensor with {x.shape[dim]} '
                             f'entries along dim {dim}')
        if self.is_fixed:
            return x
        shape = list(x.shape)
        shape[dim] = self.width
        return x.new_zeros(shape).index_add(dim, self.index(x.device), x)

    def __repr__(self):
        return f'ReplicaMap({self.width} -> {self.teacher_width})'


def fold_to_student(x: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    """``ReplicaMap(width, x.shape[dim]).fold(x, dim)``: a dynamic teacher's
    activation (e.g. an FPN level, ``(N, C', H, W)``) in the student's space
    ``(N, width, H, W)``."""
    return ReplicaMap(width, x.shape[dim]).fold(x, dim)
