"""Classic knowledge distillation loss (Hinton et al., 2015)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS


def check_arg(ok: bool, name: str, value, requirement: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``ok``."""
    if not ok:
        raise ValueError(f'{name} must be {requirement}, got {value!r}')


def check_logits(student_logits: torch.Tensor,
                 teacher_logits: torch.Tensor) -> None:
    """Check that both logits are (N, C) tensors of the same shape."""
    for name, logits in (('student_logits', student_logits),
                         ('teacher_logits', teacher_logits)):
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(getattr(logits, 'shape', ()))
            raise ValueError(
                f'{name} must be a tensor of shape (N, C), got shape {shape}')
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f'teacher_logits shape {tuple(teacher_logits.shape)} does not '
            f'match student_logits shape {tuple(student_logits.shape)}')


def kl_per_sample(student_log_probs: torch.Tensor,
                  teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each row, from log-probabilities: (N, C) -> (N,)."""
    return F.kl_div(student_log_probs, teacher_log_probs, reduction='none',
                    log_target=True).sum(dim=1)


@MODELS.register_module()
class KDLoss(nn.Module):
    """Hinton's knowledge distillation loss.

    ``loss = loss_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
    the ``T^2`` factor keeping the gradient scale independent of ``T``. The
    teacher logits are a fixed target: they are detached inside :meth:`forward`
    (stop-gradient), so no gradient reaches the teacher.

    Args:
        temperature (float): Softening temperature ``T``, > 0. Defaults to 1.0.
        loss_weight (float): Weight of the loss, >= 0. Defaults to 1.0.
        reduction (str): ``'batchmean'`` (mean over the batch of the per-sample
            KL), ``'sum'`` (sum over the batch) or ``'none'`` (per-sample loss
            of shape (N,)). Defaults to ``'batchmean'``.
    """

    REDUCTIONS = ('batchmean', 'sum', 'none')

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 reduction: str = 'batchmean') -> None:
        super().__init__()
        check_arg(temperature > 0, 'temperature', temperature, '> 0')
        check_arg(loss_weight >= 0, 'loss_weight', loss_weight, '>= 0')
        check_arg(reduction in self.REDUCTIONS, 'reduction', reduction,
                  f'one of {self.REDUCTIONS}')
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self,
                student_logits: torch.Tensor,
                teacher_logits: torch.Tensor,
                gt_label: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the KD loss.

        Args:
            student_logits (torch.Tensor): Student logits of shape (N, C).
            teacher_logits (torch.Tensor): Teacher logits of shape (N, C);
                detached (no gradient flows into them).
            gt_label (torch.Tensor, optional): Unused; accepted so that all
                distillation losses share one signature. Defaults to None.

        Returns:
            torch.Tensor: A scalar, or shape (N,) with ``reduction='none'``.
        """
        check_logits(student_logits, teacher_logits)
        t = self.temperature
        loss = kl_per_sample(
            F.log_softmax(student_logits / t, dim=1),
            F.log_softmax(teacher_logits.detach() / t, dim=1)) * t**2
        if self.reduction == 'batchmean':
            loss = loss.mean()
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss
