"""PESF-KD: Parameter-Efficient and Student-Friendly Knowledge Distillation
(Rao et al., IEEE TMM 2023, arXiv 2205.15308).

The abstract: the student learns badly from a teacher whose predictive
distribution is much *sharper* than its own; a small trainable **adapter** on
the frozen teacher softens the teacher's soft labels to a sharpness the
student can follow, and "only the adapter" is updated (no backward through
the teacher). Sharpness is ``log Σ_k exp(z_k)`` (the released code's
``sharpness``); ``GPDHook`` logs it for T_s, the adapted T_s, T_d and S.

With ``z_S`` the distilled model's logits, ``z_T`` the frozen teacher's,
``f_T`` its pooled feature (N, d), ``y`` the labels, ``T`` the temperature,
``sg`` stop-gradient and ``KL_T(p ‖ q) = T² · KL(softmax(p/T) ‖ softmax(q/T))``
(per sample, averaged over the batch)::

    z_T' = z_T + sign · A(f_T)                         (the adapted teacher)
    L    = α · KL_T(sg(target) ‖ z_S)                  (reaches S only)
         + λ_ce · CE(z_T', y)                           (reaches A only)
         + λ_kd · KL_T(z_T' ‖ sg(z_S*))                 (reaches A only)

* ``target='adapted'`` (default, the abstract's form): ``target = z_T'``,
  ``z_S* = z_S``; with ``swap_correction``, ``target = swap(z_T', y)`` and
  ``z_S* = swap(z_S, y)`` (``swap``, below).
* ``target='swap'`` (the released CV code, ``cv/helper/loops.py``):
  ``target = swap(z_T, y)`` — the *raw* teacher, so the adapter never reaches
  the student's loss — and ``z_S* = swap(z_S, y)``.

``swap(z, y)`` exchanges, per sample, the largest logit with the label's (a
no-op where the argmax is right). In the adapter's KD term the gradient flows
into ``z_T'``, the target side of the KL, as in the released code.

**Adapter** ``A`` (:class:`TeacherAdapter`): the CV code's
``Linear(d→K) → Linear(K→h) → ReLU → Linear(h→K)`` (``form='code_cv'``) or
the NLP code's residual ``Linear(d→K)(f) + [Linear(d→h) → ReLU →
Linear(h→K)](f)`` (``'code_nlp'``). Zero-initialised output layer(s)
(``zero_init``, ours: the released code uses PyTorch's default init), so
``z_T' = z_T`` at step 0. ``sign = -1`` is the CV code's training sign
(its validation adds; the NLP code adds).

**Defaults** (the paper's ImageNet values could not be read; reconstructed
from the paper's description and the released code): ``T = 4`` (this
repository's KD baseline, so PESF-KD and KD differ only by the adapter; the
CV code's CIFAR default is 6), ``α = λ_ce = λ_kd = 1``, ``hidden = 32`` (CV
code). The CV code's adapter learning rate is 2e-5 against the student's 0.05
(``lr_mult = 4e-4``); set it with ``paramwise_cfg.custom_keys=
{'distiller.methods': dict(lr_mult=...)}``.

With all of ``A = 0``, ``λ_ce = λ_kd = 0`` and ``target='adapted'``,
``swap_correction=False``, ``L`` is exactly Hinton's KD at ``T`` (tested).
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmgpd.registry import MODELS

from ..losses.kd import kl_per_sample
from .base import DistillMethod

__all__ = ['TeacherAdapter', 'PESFKD', 'swap_label']

FORMS = ('code_cv', 'code_nlp')
TARGETS = ('adapted', 'swap')


def swap_label(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Exchange each row's largest logit with its label's: (N, K) -> (N, K)."""
    top = logits.argmax(dim=1, keepdim=True)
    gt = gt.view(-1, 1).to(top.device)
    v_top, v_gt = logits.gather(1, top), logits.gather(1, gt)
    return logits.scatter(1, top, v_gt).scatter(1, gt, v_top)


class TeacherAdapter(nn.Module):
    """A logit offset from the teacher's pooled feature: (N, d) -> (N, K).

    Args:
        in_channels (int): ``d``.
        num_classes (int): ``K``.
        hidden (int): ``h``. Defaults to 32.
        form (str): ``'code_cv'`` or ``'code_nlp'`` (module docstring).
        zero_init (bool): Zero the output layer(s) (A ≡ 0 at init).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 32,
                 form: str = 'code_cv', zero_init: bool = True):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f'PESFKD.adapter_form must be one of {FORMS}, '
                             f'got {form!r}')
        self.form = form
        if form == 'code_cv':
            self.proj = nn.Linear(in_channels, num_classes)
            self.mlp = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, num_classes))
            zeroed = [self.mlp[2]]
        else:
            self.proj = nn.Linear(in_channels, num_classes)
            self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(),
                                     nn.Linear(hidden, num_classes))
            zeroed = [self.proj, self.mlp[2]]
        if zero_init:
            for layer in zeroed:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.form == 'code_cv':
            return self.mlp(self.proj(f))
        return self.proj(f) + self.mlp(f)


def _kl(student_logits: torch.Tensor, target_logits: torch.Tensor,
        t: float) -> torch.Tensor:
    """``T² · KL(softmax(target/T) ‖ softmax(student/T))``, batch mean."""
    return (kl_per_sample(F.log_softmax(student_logits / t, dim=1),
                          F.log_softmax(target_logits / t, dim=1)) *
            t**2).mean()


@MODELS.register_module()
class PESFKD(DistillMethod):
    """PESF-KD as a static-teacher method (see the module docstring).

    Args:
        temperature (float): ``T``. Defaults to 4.0.
        alpha (float): Weight of the student's KD term. Defaults to 1.0.
        adapter_ce_weight (float): ``λ_ce``. Defaults to 1.0.
        adapter_kd_weight (float): ``λ_kd``. Defaults to 1.0.
        target (str): ``'adapted'`` or ``'swap'``. Defaults to ``'adapted'``.
        swap_correction (bool): Label-correct the adapted target and the
            student in the adapter term (``target='adapted'`` only).
            Defaults to False.
        hidden (int): Adapter width ``h``. Defaults to 32.
        adapter_form (str): ``'code_cv'`` or ``'code_nlp'``.
        sign (int): ``+1`` or ``-1``. Defaults to -1.
        zero_init (bool): Defaults to True.
    """
    student_taps = ()
    teacher_taps = ('pooled', )
    adapts_teacher = True

    def __init__(self,
                 temperature: float = 4.0,
                 alpha: float = 1.0,
                 adapter_ce_weight: float = 1.0,
                 adapter_kd_weight: float = 1.0,
                 target: str = 'adapted',
                 swap_correction: bool = False,
                 hidden: int = 32,
                 adapter_form: str = 'code_cv',
                 sign: int = -1,
                 zero_init: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if target not in TARGETS:
            raise ValueError(f'PESFKD.target must be one of {TARGETS}, got '
                             f'{target!r}')
        if sign not in (1, -1):
            raise ValueError(f'PESFKD.sign must be +1 or -1, got {sign!r}')
        if temperature <= 0:
            raise ValueError(f'PESFKD.temperature must be > 0, got {temperature}')
        if adapter_form not in FORMS:
            raise ValueError(f'PESFKD.adapter_form must be one of {FORMS}, got '
                             f'{adapter_form!r}')
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.adapter_ce_weight = float(adapter_ce_weight)
        self.adapter_kd_weight = float(adapter_kd_weight)
        self.target = target
        self.swap_correction = swap_correction
        self.hidden, self.adapter_form = hidden, adapter_form
        self.sign, self.zero_init = sign, zero_init
        self.adapter = None

    def prepare(self, student_shapes: Dict[str, torch.Size],
                teacher_shapes: Dict[str, torch.Size]) -> None:
        self.check_taps(teacher_shapes, self.teacher_taps, 'static teacher')
        if student_shapes['logits'][1:] != teacher_shapes['logits'][1:]:
            raise ValueError(f'PESFKD: student logits {tuple(student_shapes["logits"])} '
                             f'and teacher logits {tuple(teacher_shapes["logits"])}')
        self.adapter = TeacherAdapter(teacher_shapes['pooled'][1],
                                      teacher_shapes['logits'][1], self.hidden,
                                      self.adapter_form, self.zero_init)
        super().prepare(student_shapes, teacher_shapes)

    def adapt_teacher(self, teacher: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``z_T' = z_T + sign · A(f_T)`` (gradient only into A)."""
        if self.adapter is None:
            raise RuntimeError('PESFKD.prepare was not called')
        f = teacher['pooled'].detach()
        return teacher['logits'].detach() + self.sign * self.adapter(f)

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        z_s = student['logits']
        z_t = teacher['logits'].detach()
        adapted = self.adapt_teacher(teacher)
        needs_gt = self.target == 'swap' or self.swap_correction or \
            self.adapter_ce_weight > 0
        if needs_gt and gt is None:
            raise ValueError('PESFKD needs the labels (adapter CE / swap)')
        t = self.temperature
        if self.target == 'swap':
            target, s_star = swap_label(z_t, gt), swap_label(z_s.detach(), gt)
        elif self.swap_correction:
            target, s_star = swap_label(adapted, gt), swap_label(z_s.detach(), gt)
        else:
            target, s_star = adapted, z_s.detach()
        out = dict(loss_pesf_kd=self.alpha * _kl(z_s, target.detach(), t))
        if self.adapter_ce_weight > 0:
            out['loss_pesf_adapter_ce'] = self.adapter_ce_weight * \
                F.cross_entropy(adapted, gt)
        if self.adapter_kd_weight > 0:
            out['loss_pesf_adapter_kd'] = self.adapter_kd_weight * \
                _kl(s_star, adapted, t)
        with torch.no_grad():  # logged: the sharpness gap the adapter closes
            out['pesf_sharpness_gap'] = (torch.logsumexp(adapted, 1) -
                                         torch.logsumexp(z_s, 1)).mean()
        return out
