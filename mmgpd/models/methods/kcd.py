"""KCD: Knowledge Consistent Distillation (Han et al., arXiv 2103.16844).

The paper's abstract: a teacher and a student — different networks, or the same
network from different initialisations — encode different things in their
channels ("the high activated channel for different categories"), the
*knowledge discrepancy*; KCD makes the teacher's knowledge consistent with the
student before distilling it. No method section or code was readable here:
**everything below is reconstructed from the paper's description** (see
``shared/reference/seed_methods_dpk_kcd_pesf.md`` §2) and every such choice is
an option with a named default.

Per tapped feature (a stage of a classifier, an FPN level of a detector), a
teacher-side channel transform ``T`` is fitted to the student, then any
channel-aligned feature loss distils ``T(F_t)`` into ``F_s``::

    L_KCD = loss(F_s[:, matched], T(F_t))            (FeatureMSELoss by default)

**Statistics.** Over the samples and positions of ``num_batches`` batches
(:class:`~mmgpd.engine.KCDHook`), with both maps flattened to rows
``z_t ∈ R^{C_t}``, ``z_s ∈ R^{C_s}`` (one row per image and position; a larger
map is average-pooled to the smaller one's size first), the cross-correlation
of standardised channels::

    R[i, j] = cov(z_t,i, z_s,j) / (std(z_t,i) · std(z_s,j))        (C_t × C_s)

accumulated as float64 sums (count, Σz, Σz², Σ z_t z_sᵀ). Under DDP the sums
are all-reduced before solving, so every rank solves the same problem and
holds the same transform (no broadcast). A dead channel (zero variance) has
correlation 0 with everything.

**Transform** (``mode``):

* ``'permute'`` (default): the assignment ``perm`` maximising
  ``Σ_j R[perm(j), j]`` over injective matchings, by the Hungarian method
  (``scipy.optimize.linear_sum_assignment``); ``T(F_t)[:, j] =
  F_t[:, perm(j)]``. It moves the teacher's channels without changing any of
  them: the teacher's knowledge is kept exactly.
* ``'orthogonal'``: the orthogonal Procrustes solution ``Q = U Vᵀ`` of
  ``Rᵀ = U Σ Vᵀ`` (thin SVD), the (semi-)orthogonal ``C_s × C_t`` map that
  maximises ``tr(Q R)``; ``T(F_t) = Q · F_t`` along the channels (a 1×1 conv).
  A permutation is the special case where ``R`` is a permuted positive-definite
  matrix, and it is recovered exactly there too.

**Different widths** (``C_s ≠ C_t``; also GPD's dynamic teacher, C' wide):

* permute, ``C_t > C_s``: every student channel gets a distinct teacher
  channel; the ``C_t − C_s`` teacher channels matched to no student channel
  are dropped from the loss.
* permute, ``C_t < C_s``: every teacher channel goes to a distinct student
  channel; the ``C_s − C_t`` unmatched student channels get no loss
  (``perm[j] = −1``; the loss sees only the matched ones).
* orthogonal: ``Q`` has orthonormal rows (``C_s <= C_t``: the teacher is
  projected onto a ``C_s``-dimensional subspace) or orthonormal columns
  (``C_s > C_t``: the teacher is embedded isometrically); every student
  channel is in the loss.

**Offline / online** (the hook's ``mode``): solved once before training from
the initial student (offline), or also re-solved every ``interval`` epochs
(online). A re-solve keeps the previous assignment unless the new one improves
the matched correlation ``Σ_j R[perm(j), j]`` by more than ``margin`` per
matched channel (to avoid flipping targets; permute mode only).

**State.** ``perm`` (permute) / ``transform`` (orthogonal), ``solved`` and the
last matched correlation are persistent buffers: they travel in checkpoints, so
``--resume`` continues with the same transform and the hook does not re-solve.
The running sums are non-persistent: they live only inside one refresh pass.
The transform is teacher-side and training-only; the extracted student never
contains it.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce

from mmgpd.registry import MODELS

from .base import DistillMethod

__all__ = ['KCD', 'ChannelMatch', 'align_spatial', 'MODES']

MODES = ('permute', 'orthogonal')


def align_spatial(s: torch.Tensor, t: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two (N, C, H, W) maps to the other's size.

    (N, C) vectors pass unchanged. Raises if the batch sizes, ranks or the
    direction of the size difference (one larger in H, the other in W) differ.
    """
    if s.shape[0] != t.shape[0] or s.dim() != t.dim():
        raise ValueError(f'student {tuple(s.shape)} and teacher '
                         f'{tuple(t.shape)}: same batch and rank needed')
    if s.dim() == 2 or s.shape[2:] == t.shape[2:]:
        return s, t
    if s.dim() != 4:
        raise ValueError(f'expected (N, C, H, W) or (N, C), got {tuple(s.shape)}')
    hs, ws = s.shape[2:]
    ht, wt = t.shape[2:]
    if hs >= ht and ws >= wt:
        return F.adaptive_avg_pool2d(s, (ht, wt)), t
    if hs <= ht and ws <= wt:
        return s, F.adaptive_avg_pool2d(t, (hs, ws))
    raise ValueError(f'student {tuple(s.shape)} and teacher {tuple(t.shape)}: '
                     'one is not larger than the other in both H and W')


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, C) -> (N·H·W, C) float64."""
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    return x.reshape(-1, x.shape[-1]).double()


class ChannelMatch(nn.Module):
    """Channel statistics and the fitted transform of one tap.

    Args:
        student_channels (int): C_s.
        teacher_channels (int): C_t.
        mode (str): ``'permute'`` or ``'orthogonal'``.
        eps (float): Variance floor of the standardisation. Defaults to 1e-12.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 mode: str = 'permute', eps: float = 1e-12):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'KCD mode must be one of {MODES}, got {mode!r}')
        self.student_channels = cs = int(student_channels)
        self.teacher_channels = ct = int(teacher_channels)
        self.mode = mode
        self.eps = eps
        f64 = torch.float64
        for name, shape in (('count', ()), ('sum_s', (cs, )), ('sum_t', (ct, )),
                            ('sq_s', (cs, )), ('sq_t', (ct, )),
                            ('cross', (ct, cs))):
            self.register_buffer(name, torch.zeros(shape, dtype=f64),
                                 persistent=False)
        self.register_buffer('solved', torch.zeros((), dtype=torch.long))
        self.register_buffer('score', torch.zeros((), dtype=f64))
        if mode == 'permute':
            self.register_buffer('perm', torch.full((cs, ), -1, dtype=torch.long))
        else:
            self.register_buffer('transform', torch.zeros(cs, ct))

    def extra_repr(self) -> str:
        return (f'student_channels={self.student_channels}, '
                f'teacher_channels={self.teacher_channels}, mode={self.mode!r}')

    # ------------------------------------------------------------ statistics
    def reset(self) -> None:
        for name in ('count', 'sum_s', 'sum_t', 'sq_s', 'sq_t', 'cross'):
            getattr(self, name).zero_()

    @torch.no_grad()
    def accumulate(self, f_s: torch.Tensor, f_t: torch.Tensor) -> None:
        """Add one batch: ``f_s`` (N, C_s[, H, W]), ``f_t`` (N, C_t[, H', W'])."""
        self._check(f_s, f_t)
        f_s, f_t = align_spatial(f_s.detach(), f_t.detach())
        zs, zt = _rows(f_s), _rows(f_t)
        self.count += zs.shape[0]
        self.sum_s += zs.sum(0)
        self.sum_t += zt.sum(0)
        self.sq_s += (zs * zs).sum(0)
        self.sq_t += (zt * zt).sum(0)
        self.cross += zt.t() @ zs

    def _reduced(self) -> Dict[str, torch.Tensor]:
        """The sums, all-reduced over the ranks (a no-op in one process)."""
        names = ('count', 'sum_s', 'sum_t', 'sq_s', 'sq_t', 'cross')
        flat = torch.cat([getattr(self, n).reshape(-1) for n in names])
        all_reduce(flat, op='sum')
        out, i = {}, 0
        for n in names:
            buf = getattr(self, n)
            out[n] = flat[i:i + buf.numel()].view(buf.shape)
            i += buf.numel()
        return out

    def correlation(self, stats: Optional[Dict[str, torch.Tensor]] = None
                    ) -> torch.Tensor:
        """R (C_t × C_s, float64) from ``stats`` (default: this rank's sums)."""
        if stats is None:
            stats = {n: getattr(self, n) for n in
                     ('count', 'sum_s', 'sum_t', 'sq_s', 'sq_t', 'cross')}
        n = float(stats['count'])
        if n < 2:
            raise RuntimeError('KCD: no channel statistics accumulated (fewer '
                               'than 2 rows); run KCDHook over some batches')
        mean_s, mean_t = stats['sum_s'] / n, stats['sum_t'] / n
        var_s = (stats['sq_s'] / n - mean_s**2).clamp_min(0)
        var_t = (stats['sq_t'] / n - mean_t**2).clamp_min(0)
        cov = stats['cross'] / n - torch.outer(mean_t, mean_s)
        inv_s = torch.where(var_s > self.eps, var_s.rsqrt(), torch.zeros_like(var_s))
        inv_t = torch.where(var_t > self.eps, var_t.rsqrt(), torch.zeros_like(var_t))
        return cov * inv_t[:, None] * inv_s[None, :]

    # --------------------------------------------------------------- solving
    @torch.no_grad()
    def solve(self, margin: float = 0.0) -> Dict[str, float]:
        """Fit the transform to the all-reduced statistics.

        Returns:
            dict: ``matched_corr`` (mean of the matched correlations, permute;
            ``tr(Q R) / min(C_s, C_t)``, orthogonal), ``changed`` (fraction of
            student channels whose teacher channel changed; permute) and
            ``kept`` (1.0 if the previous assignment was kept by ``margin``).
        """
        corr = self.correlation(self._reduced())
        if self.mode == 'orthogonal':
            u, _, vh = torch.linalg.svd(corr.t(), full_matrices=False)
            q = u @ vh  # (C_s, C_t)
            score = float((q * corr.t()).sum()) / min(corr.shape)
            self.transform.copy_(q.to(self.transform.dtype))
            self.score.fill_(score)
            self.solved.fill_(1)
            return dict(matched_corr=score)
        from scipy.optimize import linear_sum_assignment
        r = corr.cpu().numpy()
        rows, cols = linear_sum_assignment(r, maximize=True)
        new = torch.full((self.student_channels, ), -1, dtype=torch.long)
        new[torch.from_numpy(cols)] = torch.from_numpy(rows)
        score = float(r[rows, cols].sum())
        old = self.perm.cpu()
        kept = 0.0
        if bool(self.solved):
            j = (old >= 0).nonzero().view(-1).numpy()
            old_score = float(r[old.numpy()[j], j].sum())
            if score <= old_score + margin * len(cols):
                new, score, kept = old, old_score, 1.0
        changed = float((new != old).float().mean()) if bool(self.solved) else 1.0
        self.perm.copy_(new)
        self.score.fill_(score / len(cols))
        self.solved.fill_(1)
        return dict(matched_corr=score / len(cols), changed=changed, kept=kept)

    # ------------------------------------------------------------- applying
    def _check(self, f_s: torch.Tensor, f_t: torch.Tensor) -> None:
        if f_s.shape[1] != self.student_channels or \
                f_t.shape[1] != self.teacher_channels:
            raise ValueError(
                f'KCD tap built for {self.student_channels} student / '
                f'{self.teacher_channels} teacher channels got '
                f'{f_s.shape[1]} / {f_t.shape[1]}')

    def align(self, f_s: torch.Tensor, f_t: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(F_s[:, matched], T(F_t))``, channel-aligned, same shape."""
        if not bool(self.solved):
            raise RuntimeError(
                'KCD: the channel transform has not been solved yet; add '
                "dict(type='mmgpd.KCDHook') to custom_hooks (it solves before "
                'training)')
        self._check(f_s, f_t)
        f_s, f_t = align_spatial(f_s, f_t)
        if self.mode == 'orthogonal':
            q = self.transform.to(f_t.dtype)
            t = torch.einsum('oc,nc...->no...', q, f_t)
            return f_s, t
        perm = self.perm
        if bool((perm >= 0).all()):
            return f_s, f_t.index_select(1, perm)
        matched = (perm >= 0).nonzero().view(-1)
        return f_s.index_select(1, matched), f_t.index_select(1, perm[matched])


@MODELS.register_module()
class KCD(DistillMethod):
    """Knowledge Consistent Distillation on tapped features (see the module
    docstring; the transform and its statistics are reconstructed from the
    paper's description).

    Args:
        taps (Sequence[str]): Tap names read on both sides (classification:
            ``'stage1'…'stageN'`` or ``'pooled'``; detection ``'fpn0'…``).
            Defaults to ``('stage4', )``.
        mode (str): ``'permute'`` (Hungarian assignment on the
            cross-correlation of standardised channels) or ``'orthogonal'``
            (Procrustes). Defaults to ``'permute'``.
        margin (float): A re-solve keeps the old assignment unless the mean
            matched correlation improves by more than this (permute).
            Defaults to 0.0.
        loss (dict): Channel-aligned feature loss taking ``(student_seq,
            teacher_seq)``, one tensor per tap. Defaults to
            ``dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0)``.
        init_cfg (dict, optional): Unused.

    Shapes: ``forward`` reads ``student[tap]`` (N, C_s, H, W) or (N, C_s) and
    ``teacher[tap]`` (N, C_t, H', W'); C_s may differ from C_t and the larger
    spatial map is average-pooled to the smaller.
    """

    def __init__(self,
                 taps: Sequence[str] = ('stage4', ),
                 mode: str = 'permute',
                 margin: float = 0.0,
                 loss: dict = dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if mode not in MODES:
            raise ValueError(f'model.distiller.method (KCD).mode must be one of '
                             f'{MODES}, got {mode!r}')
        if isinstance(taps, str):
            taps = (taps, )
        if not taps:
            raise ValueError('model.distiller.method (KCD).taps is empty')
        self.taps = tuple(taps)
        self.student_taps = self.teacher_taps = self.taps
        self.mode = mode
        self.margin = float(margin)
        try:
            self.loss = MODELS.build(copy.deepcopy(loss))
        except KeyError as exc:
            raise KeyError(f'model.distiller.method (KCD).loss: unknown type '
                           f'{loss.get("type")!r} ({exc})') from None
        self.matches = nn.ModuleDict()

    # ------------------------------------------------------------ interface
    def prepare(self, student_shapes: Dict[str, torch.Size],
                teacher_shapes: Dict[str, torch.Size]) -> None:
        """One :class:`ChannelMatch` per tap, sized from a probe pass."""
        super().prepare(student_shapes, teacher_shapes)
        self.check_taps(student_shapes, self.student_taps, 'student')
        self.check_taps(teacher_shapes, self.teacher_taps, 'teacher')
        for tap in self.taps:
            self.matches[tap] = ChannelMatch(
                student_shapes[tap][1], teacher_shapes[tap][1], self.mode)

    def _match(self, tap: str) -> ChannelMatch:
        if tap not in self.matches:
            raise RuntimeError('KCD.prepare() was not called (the distiller '
                               'sizes the transforms from a probe pass)')
        return self.matches[tap]

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``{'loss_kcd': loss(F_s[:, matched], T(sg(F_t)))}`` over the taps."""
        s_list, t_list = [], []
        for tap in self.taps:
            s, t = self._match(tap).align(student[tap], teacher[tap].detach())
            s_list.append(s)
            t_list.append(t)
        return dict(loss_kcd=self.loss(s_list, t_list))

    # ------------------------------------------------- state (KCDHook calls)
    @property
    def solved(self) -> bool:
        """Whether every tap's transform has been fitted."""
        return len(self.matches) > 0 and all(
            bool(m.solved) for m in self.matches.values())

    def reset_statistics(self) -> None:
        for m in self.matches.values():
            m.reset()

    @torch.no_grad()
    def accumulate(self, student: Dict[str, torch.Tensor],
                   teacher: Dict[str, torch.Tensor]) -> None:
        """Add one batch of tapped features to every tap's statistics."""
        for tap in self.taps:
            self._match(tap).accumulate(student[tap], teacher[tap])

    @torch.no_grad()
    def update(self) -> Dict[str, Dict[str, float]]:
        """Solve every tap from its (all-reduced) statistics, then reset them.

        Every rank must call it (it all-reduces). Returns per-tap reports
        (:meth:`ChannelMatch.solve`).
        """
        report = {tap: self._match(tap).solve(self.margin) for tap in self.taps}
        self.reset_statistics()
        return report

