"""Soft-target cross-entropy with label smoothing (the GPD reference's "sce")."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS
from .kd import check_arg, check_logits


@MODELS.register_module()
class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against the teacher's soft targets, with label smoothing.

    With ``p = softmax(student / T)`` and ``q = softmax(teacher / T)`` over C
    classes::

        loss = loss_weight * mean_n[(1 - smoothing) * sum_c(-q_c * log p_c)
                                    + smoothing * mean_c(-log p_c)]

    i.e. the cross-entropy to the target ``(1 - smoothing) * q + smoothing / C``.
    The teacher logits are a fixed target: they are detached inside
    :meth:`forward` (stop-gradient).

    Args:
        smoothing (float): Label smoothing factor, in [0, 1). Defaults to 0.1.
        temperature (float): Softening temperature ``T``, > 0. Defaults to 1.0.
        loss_weight (float): Weight of the loss, >= 0. Defaults to 1.0.
    """

    def __init__(self,
                 smoothing: float = 0.1,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        check_arg(0 <= smoothing < 1, 'smoothing', smoothing, 'in [0, 1)')
        check_arg(temperature > 0, 'temperature', temperature, '> 0')
        check_arg(loss_weight >= 0, 'loss_weight', loss_weight, '>= 0')
        self.smoothing = float(smoothing)
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)

    def forward(self,
                student_logits: torch.Tensor,
                teacher_logits: torch.Tensor,
                gt_label: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the soft-target cross-entropy.

        Args:
            student_logits (torch.Tensor): Student logits of shape (N, C).
            teacher_logits (torch.Tensor): Teacher logits of shape (N, C);
                detached (no gradient flows into them).
            gt_label (torch.Tensor, optional): Unused; accepted so that all
                distillation losses share one signature. Defaults to None.

        Returns:
            torch.Tensor: The scalar loss.
        """
        check_logits(student_logits, teacher_logits)
        t = self.temperature
        log_p = F.log_softmax(student_logits / t, dim=1)
        q = F.softmax(teacher_logits.detach() / t, dim=1)
        soft = -(q * log_p).sum(dim=1)
        smooth = -log_p.mean(dim=1)
        loss = (1 - self.smoothing) * soft + self.smoothing * smooth
        return self.loss_weight * loss.mean()
