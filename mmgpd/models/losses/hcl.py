"""ReviewKD's hierarchical context loss (HCL; Chen et al., CVPR 2021).

For one pair of feature maps ``f_s, f_t`` (N, C, H, W), HCL is a weighted mean
of MSEs over a spatial pyramid: the maps themselves (weight 1) and their
adaptive average poolings to ``l × l`` for each ``l`` of ``levels`` (4, 2, 1)
smaller than ``H`` (the height alone decides; ``W`` is not looked at), the
k-th *used* level weighted ``2^-k``::

    HCL(f_s, f_t) = [ MSE(f_s, f_t) + Σ_k 2^-k MSE(P_lk(f_s), P_lk(f_t)) ]
                    / [ 1 + Σ_k 2^-k ]

so with the default levels (4, 2, 1): at every H ≥ 5 (the 7 × 7 last stage of
an ImageNet ResNet included) the weights are 1, 1/2, 1/4, 1/8 over
(H, 4, 2, 1) (total 1.875); at H = 3 or 4 the 4 × 4 level is skipped and 2, 1
get 1/2, 1/4 (total 1.75); at H = 2 only 1 × 1 is added, at 1/2 (total 1.5);
a 1 × 1 map is a plain MSE. ``MSE`` is the mean over all elements. Over several
levels of a feature pyramid the per-pair losses are **summed** (not averaged).
This is the form of the released code (``ImageNet/models/reviewkd.py`` of
dvlab-research/ReviewKD, identical in megvii-research/mdistiller).
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS

__all__ = ['hcl', 'HCLLoss']


def _hcl_one(fs: torch.Tensor, ft: torch.Tensor,
             levels: Sequence[int]) -> torch.Tensor:
    if fs.shape != ft.shape:
        raise ValueError(f'HCL: student map {tuple(fs.shape)} and teacher map '
                         f'{tuple(ft.shape)} differ')
    h = fs.shape[2]
    loss = F.mse_loss(fs, ft)
    weight, total = 1.0, 1.0
    for lvl in levels:
        if lvl >= h:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, lvl),
                                          F.adaptive_avg_pool2d(ft, lvl))
        total += weight
    return loss / total


def hcl(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
        levels: Sequence[int] = (4, 2, 1)) -> torch.Tensor:
    """HCL summed over pairs of (N, C, H, W) maps (see the module docstring).

    Args:
        student (Sequence[Tensor]): The student-side maps.
        teacher (Sequence[Tensor]): The teacher's maps, same shapes (a target:
            detach it, or compute it under no_grad).
        levels (Sequence[int]): Pooled pyramid sizes, largest first.
    """
    if len(student) != len(teacher) or not len(student):
        raise ValueError(f'HCL: {len(student)} student and {len(teacher)} '
                         'teacher maps')
    return sum(_hcl_one(s, t, levels) for s, t in zip(student, teacher))


@MODELS.register_module()
class HCLLoss(nn.Module):
    """``loss_weight · hcl(student, teacher)``; the teacher maps are detached.

    Args:
        levels (Sequence[int]): Pooled pyramid sizes. Defaults to (4, 2, 1).
        loss_weight (float): Defaults to 1.0.
    """

    def __init__(self, levels: Sequence[int] = (4, 2, 1),
                 loss_weight: float = 1.0):
        super().__init__()
        self.levels = tuple(int(x) for x in levels)
        self.loss_weight = float(loss_weight)

    def forward(self, student, teacher, gt=None):
        if isinstance(student, torch.Tensor):
            student, teacher = [student], [teacher]
        return self.loss_weight * hcl(student, [t.detach() for t in teacher],
                                      self.levels)
