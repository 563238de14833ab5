"""ReviewKD: Distilling Knowledge via Knowledge Review (Chen et al., CVPR 2021).

The student's features of *every* level review the teacher's features of the
same and shallower levels: a residual fusion path runs from the deepest
student feature to the shallowest, and each level's fused map is regressed to
the teacher's feature of that level with the hierarchical context loss
(:func:`~mmgpd.models.losses.hcl`).

Levels (deepest last): the backbone stages ``stage1`` … ``stageN`` and the
pooled feature as a 1 × 1 map — the five levels of the paper's ImageNet code
for ResNets. Going from the deepest level i = L to the shallowest, with
``F_i`` the student's feature and ``R_{i+1}`` the fused map of the level
below::

    X_i = BN(Conv1x1(F_i))                                   (C_i -> mid)
    A_i = σ(Conv1x1([X_i, up(R_{i+1})]))                     (2·mid -> 2, bias)
    R_i = X_i · A_i[:, 0] + up(R_{i+1}) · A_i[:, 1]          (ABF; R_L = X_L)
    Y_i = BN(Conv3x3(resize(R_i, teacher size)))             (mid -> C_i^T)
    L   = w · Σ_i HCL(Y_i, T_i)

``up`` is nearest upsampling to ``F_i``'s size; ``resize`` (nearest) only acts
where the teacher's map has another size. ``mid`` is ``min(512, C_L)`` (the
student's deepest width; mdistiller) unless set (the official ImageNet code
uses 512 for ResNet-18 and 256 for MobileNet). Conv weights are Kaiming-uniform
with ``a = 1`` as in the released code.

Defaults follow the ImageNet recipe of the released code (``ImageNet/
imagenet_amp.py``: ``--review-kd-loss-weight 1.0``, no warm-up, beside the
student's cross-entropy) and mdistiller's ImageNet configs (ResNet-34 →
ResNet-18: weight 1.0; ResNet-50 → MobileNetV2: weight 8.0, mid 256; warm-up
1 epoch counted from epoch 1, i.e. none). The CIFAR-100 recipe uses larger
weights with a linear warm-up (``warmup_iters``).

The ABFs' batch norms train on the batch: the 1 × 1 pooled level needs at
least two images per process (as in the released code).

**Deviation (named):** the released code reads *pre-activation* stage features
(before each stage's last ReLU) of both networks; mmpretrain's stage outputs,
which the taps record without re-implementing the forward, are
post-activation. Name other modules with ``model.distiller.taps`` to change
what is read.
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS

from ..losses.hcl import hcl
from .base import DistillMethod

__all__ = ['ABF', 'ReviewKD']


class ABF(nn.Module):
    """Attention-based fusion of one level (see the module docstring).

    Args:
        in_channels (int): Width of the student's feature at this level.
        mid_channels (int): Width of the fused (residual) path.
        out_channels (int): Width of the teacher's feature at this level.
        fuse (bool): Whether a deeper level's fused map is fused in (False at
            the deepest level).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int,
                 fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(
            nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                out_size=None):
        """``(Y_i, R_i)``: the output regressed to the teacher (N, C^T, h, w)
        and the fused map passed to the next shallower level (N, mid, h, w)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError('ABF: a fusing level needs the deeper level\'s '
                                 'fused map')
            residual = F.interpolate(residual, size=x.shape[-2:], mode='nearest')
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode='nearest')
        return self.conv2(x), x


def _as_map(x: torch.Tensor) -> torch.Tensor:
    """(N, C) pooled features as (N, C, 1, 1); maps unchanged."""
    return x[:, :, None, None] if x.dim() == 2 else x


@MODELS.register_module()
class ReviewKD(DistillMethod):
    """ReviewKD as a static-teacher method (see the module docstring).

    Args:
        stages (Sequence[str]): Stage taps, shallowest first (read on both
            sides). Defaults to ``('stage1', 'stage2', 'stage3', 'stage4')``.
        use_pooled (bool): Add the pooled feature as the deepest (1 × 1)
            level. Defaults to True.
        mid_channels (int, optional): Width of the fusion path. Defaults to
            None: ``min(max_mid_channels, deepest student width)``.
        max_mid_channels (int): Defaults to 512.
        loss_weight (float): ``w``. Defaults to 1.0 (ImageNet, ResNet-34 →
            ResNet-18).
        levels (Sequence[int]): HCL's pooled sizes. Defaults to (4, 2, 1).
        warmup_iters (int): Linear ramp of ``w`` over this many training
            iterations (CIFAR-100 recipe; 0: none). Counted in a buffer, so
            ``--resume`` continues it. Defaults to 0.
    """

    def __init__(self,
                 stages: Sequence[str] = ('stage1', 'stage2', 'stage3',
                                          'stage4'),
                 use_pooled: bool = True,
                 mid_channels: Optional[int] = None,
                 max_mid_channels: int = 512,
                 loss_weight: float = 1.0,
                 levels: Sequence[int] = (4, 2, 1),
                 warmup_iters: int = 0,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not stages and not use_pooled:
            raise ValueError('ReviewKD: no level to distil (stages empty and '
                             'use_pooled False)')
        self.stages = tuple(stages)
        self.use_pooled = use_pooled
        self.student_taps = self.teacher_taps = self.stages + (
            ('pooled', ) if use_pooled else ())
        self.mid_channels = mid_channels
        self.max_mid_channels = max_mid_channels
        self.loss_weight = float(loss_weight)
        self.levels = tuple(levels)
        self.warmup_iters = int(warmup_iters)
        self.register_buffer('iter', torch.zeros((), dtype=torch.long))
        self.abfs = nn.ModuleList()  # shallowest first; built in prepare

    def prepare(self, student_shapes: Dict[str, torch.Size],
                teacher_shapes: Dict[str, torch.Size]) -> None:
        self.check_taps(student_shapes, self.student_taps, 'student')
        self.check_taps(teacher_shapes, self.teacher_taps, 'static teacher')
        s_ch = [student_shapes[t][1] for t in self.student_taps]
        t_ch = [teacher_shapes[t][1] for t in self.teacher_taps]
        mid = self.mid_channels or min(self.max_mid_channels, s_ch[-1])
        last = len(s_ch) - 1
        self.abfs = nn.ModuleList(
            ABF(c, mid, ct, fuse=i < last)
            for i, (c, ct) in enumerate(zip(s_ch, t_ch)))
        super().prepare(student_shapes, teacher_shapes)

    def fuse(self, student: Sequence[torch.Tensor],
             teacher_sizes: Sequence) -> list:
        """The regressed maps ``Y_i`` of every level, shallowest first."""
        out, residual = [None] * len(student), None
        for i in reversed(range(len(student))):
            out[i], residual = self.abfs[i](student[i], residual,
                                            teacher_sizes[i])
        return out

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if not self.prepared:
            raise RuntimeError('ReviewKD.prepare was not called (GPD.__init__ '
                               'does it from a probe pass)')
        s = [_as_map(student[t]) for t in self.student_taps]
        t = [_as_map(teacher[k]).detach() for k in self.teacher_taps]
        y = self.fuse(s, [x.shape[-2:] for x in t])
        weight = self.loss_weight
        if self.warmup_iters > 0:
            # the k-th training iteration (1-based) weighs k / warmup_iters
            weight *= min((float(self.iter) + 1) / self.warmup_iters, 1.0)
        if self.training:
            self.iter += 1
        return dict(loss_reviewkd=weight * hcl(y, t, self.levels))
