"""Distillation losses on a detector's dense outputs (one tensor per FPN level).

* :class:`DenseKDLoss` — KD on the dense classification maps of a sigmoid head
  (RetinaNet, FCOS, ATSS ...): binary KL per class and location.
* :class:`SoftmaxDenseKDLoss` — KD on the dense maps of a softmax head (SSD):
  KL over the K + 1 classes (background included) of each anchor.
* :class:`FeatureMSELoss` — feature distillation on the FPN levels, both sides
  in the student's space (a dynamic teacher's levels are folded back by
  :func:`mmgpd.reparam.fold_to_student` before they get here).

Both take ``(student, teacher, gt=None)`` like the classification losses, with
``student`` / ``teacher`` a sequence of same-shape tensors (one per level), and
detach the teacher side (stop-gradient).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS

from .kd import check_arg


def check_levels(student: Sequence[torch.Tensor],
                 teacher: Sequence[torch.Tensor]) -> None:
    """Same number of levels, each ``(N, C, H, W)`` of the same shape."""
    if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
        raise ValueError('dense losses take one tensor per level (a list / '
                         'tuple), got a single tensor')
    if len(student) != len(teacher):
        raise ValueError(f'student has {len(student)} levels, teacher '
                         f'{len(teacher)}')
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f'level {i}: student {tuple(s.shape)} and teacher '
                             f'{tuple(t.shape)} differ (same anchors / classes / '
                             'FPN width needed)')


class _DenseKD(nn.Module):
    """Shared by the dense KD losses: ``w · T² · Σ KL / Σ units`` over the
    levels, the teacher detached. A subclass sets ``rank`` and ``wrong_rank``
    (the error for maps of another rank) and implements :meth:`kl` (the
    summed KL of one level) and :meth:`units` (what it averages over)."""
    rank = 4
    wrong_rank = ''

    def __init__(self, temperature: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        check_arg(temperature > 0, 'temperature', temperature, '> 0')
        check_arg(loss_weight >= 0, 'loss_weight', loss_weight, '>= 0')
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor],
                gt=None) -> torch.Tensor:
        check_levels(student, teacher)
        if any(s.dim() != self.rank for s in student):
            raise ValueError(self.wrong_rank.format(
                [tuple(s.shape) for s in student]))
        t = self.temperature
        total, units = 0.0, 0
        for s, q in zip(student, teacher):
            total = total + self.kl(s / t, q.detach() / t)
            units += self.units(s)
        return self.loss_weight * t**2 * total / max(units, 1)

    def kl(self, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def units(self, s: torch.Tensor) -> int:
        raise NotImplementedError


@MODELS.register_module()
class DenseKDLoss(_DenseKD):
    """KD on dense sigmoid classification maps.

    For each level, class channel and location, the binary KL between the
    teacher's and the student's ``sigmoid(z / T)``; summed over the channels
    (anchors × classes), averaged over the locations of all levels, times T²::

        loss = w · T² · Σ_{levels, c, h, w} KL_bin(σ(t/T) ‖ σ(s/T)) / Σ_levels N·H·W

    Zero when the maps are equal (a dynamic teacher at init).

    Args:
        temperature (float): T > 0. Defaults to 1.0.
        loss_weight (float): w >= 0. Defaults to 1.0.
    """
    rank = 4
    wrong_rank = ('DenseKDLoss takes sigmoid maps (N, A·K, H, W) per level, '
                  "got {}; a softmax head's (N, K + 1, A, H, W) maps need "
                  'mmgpd.SoftmaxDenseKDLoss')

    def kl(self, s, q):
        # KL(Bern(p_q) || Bern(p_s)) with log-sigmoids (stable)
        log_ps, log_1ps = F.logsigmoid(s), F.logsigmoid(-s)
        log_pq, log_1pq = F.logsigmoid(q), F.logsigmoid(-q)
        return (log_pq.exp() * (log_pq - log_ps) +
                log_1pq.exp() * (log_1pq - log_1ps)).sum()

    def units(self, s):
        return s.shape[0] * s[0, 0].numel()  # N·H·W


@MODELS.register_module()
class SoftmaxDenseKDLoss(_DenseKD):
    """KD on the dense classification maps of a softmax head (SSD-style).

    Each level comes as ``(N, K + 1, A, H, W)``: per anchor ``a`` at location
    ``(h, w)`` one distribution over the K classes and the background (what
    :class:`~mmgpd.models.tasks.DetectionTask` gives for a head with
    ``use_sigmoid_cls=False``: the head's ``(N, A·(K + 1), H, W)`` map, whose
    channels are anchor-major, viewed as ``(N, A, K + 1, H, W)`` and
    transposed). The KL of the teacher's ``softmax(t / T)`` from the student's
    over the class dim, averaged over all anchors of all levels, times T²::

        loss = w · T² · Σ_{levels, n, a, h, w} KL(softmax(t/T) ‖ softmax(s/T))
               / Σ_levels N·A·H·W

    Zero when the maps are equal (a dynamic teacher at init).

    Args:
        temperature (float): T > 0. Defaults to 1.0.
        loss_weight (float): w >= 0. Defaults to 1.0.
    """
    rank = 5
    wrong_rank = ('SoftmaxDenseKDLoss takes (N, K + 1, A, H, W) maps per '
                  'level (a softmax head, e.g. SSDHead), got {}; sigmoid '
                  'heads need mmgpd.DenseKDLoss')

    def kl(self, s, q):
        log_ps, log_pq = F.log_softmax(s, dim=1), F.log_softmax(q, dim=1)
        return (log_pq.exp() * (log_pq - log_ps)).sum()

    def units(self, s):
        return s[:, 0].numel()  # N·A·H·W


@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """Mean squared error between feature maps, averaged over the levels.

    Args:
        loss_weight (float): Weight >= 0. Defaults to 1.0.
        normalize (bool): Standardise each teacher / student map over its
            channels first (scale-free; avoids the loss dominating early).
            Defaults to False.
    """

    def __init__(self, loss_weight: float = 1.0, normalize: bool = False):
        super().__init__()
        check_arg(loss_weight >= 0, 'loss_weight', loss_weight, '>= 0')
        self.loss_weight = float(loss_weight)
        self.normalize = normalize

    @staticmethod
    def _standardize(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=1, keepdim=True)) / (
            x.std(dim=1, keepdim=True) + 1e-6)

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_levels(student, teacher)
        total = 0.0
        for s, q in zip(student, teacher):
            q = q.detach()
            if self.normalize:
                s, q = self._standardize(s), self._standardize(q)
            total = total + F.mse_loss(s, q)
        return self.loss_weight * total / len(student)
