"""KCD: Knowledge Consistent Distillation (Han et al., arXiv 2103.16844).

The paper's abstract: a teacher and a student — different networks, or the same
network from different initialisations — encode different things in their
channels ("the high activated channel for different categories"), the
*knowledge discrepancy*; KCD makes the teacher's knowledge consistent with the
student before distilling it. No method section or code was readable here:
**everything below is reconstructed from the paper's description** (see
``shared/reference/seed_methods_dpk_kcd_pesf.md`` §2) and every such choice is
an option with a named default, except those listed below as fixed in
this reconstruction.

Per tapped feature (a stage of a classifier, an FPN level of a detector), a
teacher-side channel transform ``T`` is fitted to the student, then any
channel-aligned feature loss distils ``T(F_t)`` into ``F_s``::

    L_KCD = loss(F_s[:, matched], T(F_t))            (FeatureMSELoss by default)

**Statistics** (``statistic``). Over the samples and positions of
``num_batches`` batches (:class:`~mmgpd.engine.KCDHook`), a cost matrix
``R`` (C_t × C_s, float64):

* ``'correlation'`` (default): with both maps flattened to rows
  ``z_t ∈ R^{C_t}``, ``z_s ∈ R^{C_s}`` (one row per image and position; maps
  of different sizes aligned first, see ``spatial_align``), the
  cross-correlation of standardised channels::

      R[i, j] = cov(z_t,i, z_s,j) / (std(z_t,i) · std(z_s,j))

  accumulated as float64 sums (count, Σz, Σz², Σ z_t z_sᵀ). A dead channel
  (zero variance) has correlation 0 with everything.
* ``'class_profile'``: the reference's alternative, closer to the abstract's
  per-category wording: ``A[k, c]`` = the mean over the images of class ``k``
  of channel ``c``'s spatial mean (``num_classes`` × C per side, from the
  hook's ``(N,)`` labels: classification only), and ``R[i, j] =
  cos(A_t[:, i], A_s[:, j])`` (a zero profile: 0). Invariant to a positive
  per-channel scale, not to a shift.

Under DDP the sums are all-reduced before solving, so every rank solves the
same problem and holds the same transform (no broadcast).

**Spatial alignment** (``spatial_align``; a classifier's stages and an FPN's
levels usually agree, a ResNet-50 teacher and a MobileNet student may not):
the larger map is brought to the smaller one's size by ``'avg_pool'``
(default; adaptive average pooling) or ``'bilinear'`` interpolation
(``align_corners=False``). The same alignment feeds the statistics and the
loss.

**Across refreshes** (``stats_momentum`` μ): ``0`` (default) solves every
refresh from that pass's statistics alone; ``μ > 0`` solves from a running
average of the cost matrix, ``R̄ ← μ·R̄ + (1 − μ)·R`` (the first solve takes
``R``), kept as a persistent buffer ``corr_ema`` (checkpointed) only then.

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

**Fixed in this reconstruction** (not options): with ``C_t > C_s`` the
unmatched teacher channels are dropped, not aggregated into their best slot
as MGD does (aggregation sums teacher channels, so the teacher's knowledge
would no longer be kept channel by channel); with ``C_t < C_s`` the unmatched
student channels get no loss; the refresh schedule, the offline source and the
statistics pass are the hook's (:class:`~mmgpd.engine.KCDHook`, where they
are listed).
"""
import copy
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce

from mmgpd.registry import MODELS

from .base import DistillMethod

__all__ = ['KCD', 'ChannelMatch', 'align_spatial', 'MODES', 'STATISTICS',
           'SPATIAL_ALIGN']

MODES = ('permute', 'orthogonal')
STATISTICS = ('correlation', 'class_profile')
SPATIAL_ALIGN = ('avg_pool', 'bilinear')


def _resize(x: torch.Tensor, size: Tuple[int, int], how: str) -> torch.Tensor:
    if how == 'avg_pool':
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def align_spatial(s: torch.Tensor, t: torch.Tensor, how: str = 'avg_pool'
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bring the larger of two (N, C, H, W) maps to the other's size.

    ``how``: ``'avg_pool'`` (adaptive average pooling, the default) or
    ``'bilinear'`` (interpolation, ``align_corners=False``). (N, C) vectors
    and maps of equal size pass unchanged. Raises if the batch sizes, ranks or
    the direction of the size difference (one larger in H, the other in W)
    differ.
    """
    if how not in SPATIAL_ALIGN:
        raise ValueError(f'spatial_align must be one of {SPATIAL_ALIGN}, got '
                         f'{how!r}')
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
        return _resize(s, (ht, wt), how), t
    if hs <= ht and ws <= wt:
        return s, _resize(t, (hs, ws), how)
    raise ValueError(f'student {tuple(s.shape)} and teacher {tuple(t.shape)}: '
                     'one is not larger than the other in both H and W')


def _check_options(statistic: str, num_classes: Optional[int],
                   spatial_align: str, stats_momentum: float, key: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f'{key}.statistic must be one of {STATISTICS}, got '
                         f'{statistic!r}')
    if statistic == 'class_profile' and (num_classes is None
                                         or int(num_classes) < 2):
        raise ValueError(f"{key}.num_classes (>= 2) is required by "
                         f"statistic='class_profile', got {num_classes!r}")
    if spatial_align not in SPATIAL_ALIGN:
        raise ValueError(f'{key}.spatial_align must be one of {SPATIAL_ALIGN}, '
                         f'got {spatial_align!r}')
    if not 0.0 <= float(stats_momentum) < 1.0:
        raise ValueError(f'{key}.stats_momentum must be in [0, 1), got '
                         f'{stats_momentum}')


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
        mode (str): ``'permute'`` or ``'orthogonal'``. Defaults to
            ``'permute'``.
        eps (float): Variance floor of the standardisation (and norm floor of
            the class profiles). Defaults to 1e-12.
        statistic (str): ``'correlation'`` or ``'class_profile'`` (see the
            module docstring). Defaults to ``'correlation'``.
        num_classes (int, optional): K, the rows of the class profiles;
            required by ``statistic='class_profile'``. Defaults to None.
        spatial_align (str): ``'avg_pool'`` or ``'bilinear'``: how the larger
            map is brought to the smaller one's size. Defaults to
            ``'avg_pool'``.
        stats_momentum (float): μ of the running average of ``R`` across
            solves, in [0, 1); 0 solves from each pass alone. Defaults to 0.0.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 mode: str = 'permute', eps: float = 1e-12,
                 statistic: str = 'correlation',
                 num_classes: Optional[int] = None,
                 spatial_align: str = 'avg_pool',
                 stats_momentum: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'KCD mode must be one of {MODES}, got {mode!r}')
        _check_options(statistic, num_classes, spatial_align, stats_momentum,
                       'KCD')
        self.student_channels = cs = int(student_channels)
        self.teacher_channels = ct = int(teacher_channels)
        self.mode = mode
        self.eps = eps
        self.statistic = statistic
        self.spatial_align = spatial_align
        self.stats_momentum = float(stats_momentum)
        f64 = torch.float64
        if statistic == 'correlation':
            shapes = (('count', ()), ('sum_s', (cs, )), ('sum_t', (ct, )),
                      ('sq_s', (cs, )), ('sq_t', (ct, )), ('cross', (ct, cs)))
        else:
            k = self.num_classes = int(num_classes)
            shapes = (('class_count', (k, )), ('class_s', (k, cs)),
                      ('class_t', (k, ct)))
        self._stat_names = tuple(name for name, _ in shapes)
        for name, shape in shapes:
            self.register_buffer(name, torch.zeros(shape, dtype=f64),
                                 persistent=False)
        self.register_buffer('solved', torch.zeros((), dtype=torch.long))
        self.register_buffer('score', torch.zeros((), dtype=f64))
        if mode == 'permute':
            self.register_buffer('perm', torch.full((cs, ), -1, dtype=torch.long))
        else:
            self.register_buffer('transform', torch.zeros(cs, ct))
        if self.stats_momentum > 0:
            self.register_buffer('corr_ema', torch.zeros(ct, cs, dtype=f64))

    def extra_repr(self) -> str:
        return (f'student_channels={self.student_channels}, '
                f'teacher_channels={self.teacher_channels}, mode={self.mode!r}, '
                f'statistic={self.statistic!r}')

    # ------------------------------------------------------------ statistics
    def reset(self) -> None:
        for name in self._stat_names:
            getattr(self, name).zero_()

    @torch.no_grad()
    def accumulate(self, f_s: torch.Tensor, f_t: torch.Tensor,
                   labels: Optional[torch.Tensor] = None) -> None:
        """Add one batch: ``f_s`` (N, C_s[, H, W]), ``f_t`` (N, C_t[, H', W'])
        and, for ``statistic='class_profile'``, ``labels`` (N,) in [0, K)."""
        self._check(f_s, f_t)
        if self.statistic == 'class_profile':
            if labels is None:
                raise RuntimeError(
                    "KCD statistic='class_profile' needs (N,) class labels "
                    '(classification); this task gives none')
            labels = labels.detach().reshape(-1).long()
            if labels.numel() != f_s.shape[0] or bool(
                    (labels < 0).any() | (labels >= self.num_classes).any()):
                raise ValueError(
                    f'KCD class_profile: {labels.numel()} labels for '
                    f'{f_s.shape[0]} images, each in [0, {self.num_classes})')
            for feat, name in ((f_s, 'class_s'), (f_t, 'class_t')):
                pooled = feat.detach().flatten(2).mean(2) \
                    if feat.dim() == 4 else feat.detach()
                getattr(self, name).index_add_(0, labels.to(pooled.device),
                                               pooled.double())
            self.class_count.index_add_(
                0, labels.to(self.class_count.device),
                torch.ones_like(labels, dtype=torch.float64,
                                device=self.class_count.device))
            return
        f_s, f_t = align_spatial(f_s.detach(), f_t.detach(), self.spatial_align)
        zs, zt = _rows(f_s), _rows(f_t)
        self.count += zs.shape[0]
        self.sum_s += zs.sum(0)
        self.sum_t += zt.sum(0)
        self.sq_s += (zs * zs).sum(0)
        self.sq_t += (zt * zt).sum(0)
        self.cross += zt.t() @ zs

    def _reduced(self) -> Dict[str, torch.Tensor]:
        """The sums, all-reduced over the ranks (a no-op in one process)."""
        names = self._stat_names
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
            stats = {n: getattr(self, n) for n in self._stat_names}
        if self.statistic == 'class_profile':
            return self._profile_cosine(stats)
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

    def _profile_cosine(self, stats: Dict[str, torch.Tensor]) -> torch.Tensor:
        """cos(A_t[:, i], A_s[:, j]) of the class-mean profiles (C_t × C_s);
        classes with no image contribute nothing."""
        count = stats['class_count']
        if float(count.sum()) < 2:
            raise RuntimeError('KCD: no class profiles accumulated (fewer '
                               'than 2 images); run KCDHook over some batches')
        scale = torch.where(count > 0, 1.0 / count.clamp_min(1.0),
                            torch.zeros_like(count))[:, None]
        a_s, a_t = stats['class_s'] * scale, stats['class_t'] * scale
        n_s, n_t = a_s.norm(dim=0), a_t.norm(dim=0)
        inv_s = torch.where(n_s > self.eps, 1.0 / n_s.clamp_min(self.eps),
                            torch.zeros_like(n_s))
        inv_t = torch.where(n_t > self.eps, 1.0 / n_t.clamp_min(self.eps),
                            torch.zeros_like(n_t))
        return (a_t.t() @ a_s) * inv_t[:, None] * inv_s[None, :]

    # --------------------------------------------------------------- solving
    @torch.no_grad()
    def solve(self, margin: float = 0.0) -> Dict[str, float]:
        """Fit the transform to the all-reduced statistics (averaged with the
        previous solves' ``R`` when ``stats_momentum > 0``).

        Returns:
            dict: ``matched_corr`` (mean of the matched correlations, permute;
            ``tr(Q R) / min(C_s, C_t)``, orthogonal), ``changed`` (fraction of
            student channels whose teacher channel changed; permute) and
            ``kept`` (1.0 if the previous assignment was kept by ``margin``).
        """
        corr = self.correlation(self._reduced())
        if self.stats_momentum > 0:
            # an all-zero average: none yet (or a checkpoint solved without)
            if bool(self.solved) and bool(self.corr_ema.any()):
                mu = self.stats_momentum
                corr = mu * self.corr_ema + (1.0 - mu) * corr
            self.corr_ema.copy_(corr)
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
        f_s, f_t = align_spatial(f_s, f_t, self.spatial_align)
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
        statistic (str): The cost matrix ``R``: ``'correlation'`` (of
            standardised channels over samples × positions) or
            ``'class_profile'`` (cosine of the class-mean activation profiles;
            needs ``num_classes`` and labels: classification only). Defaults
            to ``'correlation'``.
        num_classes (int, optional): K for ``statistic='class_profile'``.
            Defaults to None.
        spatial_align (str): How the larger of two maps of different sizes
            is brought to the smaller one's size, for the statistics and the
            loss: ``'avg_pool'`` or ``'bilinear'``. Defaults to
            ``'avg_pool'``.
        stats_momentum (float): μ in [0, 1) of a running average of ``R``
            across refreshes (online); 0 solves each refresh from its own
            pass. Defaults to 0.0.
        loss (dict): Channel-aligned feature loss taking ``(student_seq,
            teacher_seq)``, one tensor per tap. Defaults to
            ``dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0)``.
        init_cfg (dict, optional): Unused.

    Shapes: ``forward`` reads ``student[tap]`` (N, C_s, H, W) or (N, C_s) and
    ``teacher[tap]`` (N, C_t, H', W'); C_s may differ from C_t and the larger
    spatial map is brought to the smaller's size (``spatial_align``).
    ``accumulate`` also takes the (N,) labels ``gt`` (used by
    ``statistic='class_profile'`` only).
    """

    def __init__(self,
                 taps: Sequence[str] = ('stage4', ),
                 mode: str = 'permute',
                 margin: float = 0.0,
                 statistic: str = 'correlation',
                 num_classes: Optional[int] = None,
                 spatial_align: str = 'avg_pool',
                 stats_momentum: float = 0.0,
                 loss: dict = dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if mode not in MODES:
            raise ValueError(f'model.distiller.method (KCD).mode must be one of '
                             f'{MODES}, got {mode!r}')
        _check_options(statistic, num_classes, spatial_align, stats_momentum,
                       'model.distiller.method (KCD)')
        self.statistic = statistic
        self.num_classes = num_classes
        self.spatial_align = spatial_align
        self.stats_momentum = float(stats_momentum)
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
                student_shapes[tap][1], teacher_shapes[tap][1], self.mode,
                statistic=self.statistic, num_classes=self.num_classes,
                spatial_align=self.spatial_align,
                stats_momentum=self.stats_momentum)

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
                   teacher: Dict[str, torch.Tensor],
                   gt: Optional[torch.Tensor] = None) -> None:
        """Add one batch of tapped features (and its (N,) labels ``gt``, read
        by ``statistic='class_profile'`` only) to every tap's statistics."""
        for tap in self.taps:
            self._match(tap).accumulate(student[tap], teacher[tap], gt)

    @torch.no_grad()
    def update(self) -> Dict[str, Dict[str, float]]:
        """Solve every tap from its (all-reduced) statistics, then reset them.

        Every rank must call it (it all-reduces). Returns per-tap reports
        (:meth:`ChannelMatch.solve`).
        """
        report = {tap: self._match(tap).solve(self.margin) for tap in self.taps}
        self.reset_statistics()
        return report

