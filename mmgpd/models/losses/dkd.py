"""Decoupled knowledge distillation loss (Zhao et al., CVPR 2022)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS
from .kd import check_arg, check_logits, kl_per_sample


def _decouple(logits: torch.Tensor, target: torch.Tensor):
    """Split (N, C) logits by a boolean one-hot ``target`` mask.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: Log-probabilities of the binary
        [target, non-target] distribution, shape (N, 2), and of the
        distribution over the non-target classes, shape (N, C - 1).
    """
    n, c = logits.shape
    others = logits[~target].view(n, c - 1)
    binary = torch.stack([logits[target], others.logsumexp(dim=1)], dim=1)
    return F.log_softmax(binary, dim=1), F.log_softmax(others, dim=1)


@MODELS.register_module()
class DKDLoss(nn.Module):
    """Decoupled knowledge distillation (DKD) loss.

    Splits the KD loss into target-class KD (TCKD) and non-target-class KD
    (NCKD), as in mdistiller's formulation::

        loss = loss_weight * (alpha * TCKD + beta * NCKD)
        TCKD = T^2 * KL(b_teacher || b_student)
        NCKD = T^2 * KL(p~_teacher || p~_student)

    where ``b = [p_target, 1 - p_target]`` is the binary target / non-target
    distribution of ``softmax(logits / T)`` and ``p~`` is the softmax at
    temperature ``T`` over the non-target classes only (the target class
    removed). Both terms are averaged over the batch. The target class is
    dropped exactly rather than masked with a large negative offset, which is
    the same up to ``exp(-1000)``. The teacher logits are a fixed target: they
    are detached inside :meth:`forward` (stop-gradient).

    mdistiller additionally ramps the loss up linearly over the first epochs;
    that schedule belongs to the distiller, not to this module.

    Args:
        alpha (float): Weight of TCKD, >= 0. Defaults to 1.0.
        beta (float): Weight of NCKD, >= 0. Defaults to 8.0.
        temperature (float): Softening temperature ``T``, > 0. Defaults to 4.0.
        loss_weight (float): Weight of the loss, >= 0. Defaults to 1.0.
    """

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = 4.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        check_arg(alpha >= 0, 'alpha', alpha, '>= 0')
        check_arg(beta >= 0, 'beta', beta, '>= 0')
        check_arg(temperature > 0, 'temperature', temperature, '> 0')
        check_arg(loss_weight >= 0, 'loss_weight', loss_weight, '>= 0')
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)

    def forward(self, student_logits: torch.Tensor,
                teacher_logits: torch.Tensor,
                gt_label: torch.Tensor) -> torch.Tensor:
        """Compute the DKD loss.

        Args:
            student_logits (torch.Tensor): Student logits of shape (N, C),
                C >= 2.
            teacher_logits (torch.Tensor): Teacher logits of shape (N, C);
                detached (no gradient flows into them).
            gt_label (torch.Tensor): Integer class indices in [0, C) of
                shape (N,).

        Returns:
            torch.Tensor: The scalar loss.
        """
        check_logits(student_logits, teacher_logits)
        n, c = student_logits.shape
        if gt_label is None:
            raise ValueError('DKDLoss needs gt_label (class indices of shape '
                             '(N,)), got None')
        if (not isinstance(gt_label, torch.Tensor) or gt_label.shape != (n, )
                or gt_label.is_floating_point() or gt_label.is_complex()):
            raise ValueError(
                f'gt_label must be an integer tensor of shape ({n},), got '
                f'{getattr(gt_label, "dtype", type(gt_label))} of shape '
                f'{tuple(getattr(gt_label, "shape", ()))}')
        if c < 2:
            raise ValueError(f'student_logits must have C >= 2 classes, got {c}')

        t = self.temperature
        target = F.one_hot(gt_label.long(), c).bool()
        binary_s, others_s = _decouple(student_logits / t, target)
        binary_t, others_t = _decouple(teacher_logits.detach() / t, target)
        tckd = kl_per_sample(binary_s, binary_t).mean() * t**2
        nckd = kl_per_sample(others_s, others_t).mean() * t**2
        return self.loss_weight * (self.alpha * tckd + self.beta * nckd)
