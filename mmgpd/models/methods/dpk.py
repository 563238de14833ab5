"""DPK: Dynamic Prior Knowledge (Qiu et al., ICLR 2023, arXiv 2206.06067).

The paper's abstract: DPK "integrates part of teacher's features as the prior
knowledge before the feature distillation" — the teacher's features become
input, not only target — and the share of that prior is adjusted during
training "according to the feature gap". Only the abstract and secondary
summaries were readable here and no official code exists: **the structure
below is reconstructed from the paper's description** (see
``shared/reference/seed_methods_dpk_kcd_pesf.md`` §1.2) and every choice the
sources leave open is an option with a named default.

Per tapped feature (one classifier stage, or each FPN level of a detector),
with ``F_s`` (N, C_s, H, W) and ``F_t`` (N, C_t, H, W) (a larger map is
average-pooled to the smaller one's size; H, W are zero-padded to multiples
of ``p``)::

    tokens   E_s(F_s), E_t(F_t) ∈ R^{N × L × D}     E = Conv(C → D, k = s = p), L = HW/p²
    mix      X = where(m, E_t(F_t), E_s(F_s)) + pos,  m ~ Bernoulli(π) per token
    recon    F̂_t = unpatchify(Linear(D → C_t·p²)(LN(Dec(Enc(X)))))   (N, C_t, H, W)
    loss     L_DPK = w · mean over positions of (F̂_t − sg(F_t))²

``pos`` is a fixed 2-D sine-cosine embedding (any H, W: detection inputs vary);
``Enc`` / ``Dec`` are pre-norm transformer blocks (``enc_depth`` /
``dec_depth``). The teacher tokens are the prior knowledge; the student's
gradient comes through ``E_s``.

**Dynamic ratio** ``π`` (``ratio='cka'``): on every training forward, before
the mask is drawn, under no_grad::

    c = CKA_minibatch(F_s, F_t)             (mmgpd.models.losses.cka; raw maps,
                                             HSIC terms all-reduced over ranks)
    π ← clip(μ·π + (1 − μ)·(1 − c), π_min, π_max)        (μ = ratio_momentum)

so a large gap hands the student many teacher tokens and ``π → π_min`` as the
student's features come to resemble the teacher's. ``ratio=<float>`` fixes π.
π and the last CKA are per-tap buffers: checkpointed, exact ``--resume``.

Everything here is training-only: ``E_s``, ``E_t``, the transformer and the
projection live in the distiller (``distiller.methods.…``, their own learning
rate through ``paramwise_cfg.custom_keys``) and never in the extracted student.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce

from mmgpd.registry import MODELS

from ..losses.cka import ESTIMATORS, MIN_ROWS, cka_from_terms, hsic_terms
from .kcd import align_spatial

from .base import DistillMethod

__all__ = ['DPK', 'DPKEncoderDecoder', 'sincos_pos_embed']

LOSS_ON = ('all', 'student_tokens')
CKA_ROWS = ('images', 'positions')
MASKS = ('bernoulli', 'fixed_count')


def sincos_pos_embed(h: int, w: int, dim: int, device=None,
                     dtype=torch.float32) -> torch.Tensor:
    """(h·w, dim) fixed 2-D sine-cosine position embedding (MAE's form):
    half the channels encode the row, half the column; ``dim % 4 == 0``."""
    if dim % 4:
        raise ValueError(f'embed_dim must be divisible by 4, got {dim}')
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device,
                                         dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64),
                            torch.arange(w, device=device, dtype=torch.float64),
                            indexing='ij')
    parts = []
    for grid in (ys.reshape(-1), xs.reshape(-1)):
        arg = grid[:, None] * omega[None, :]
        parts += [arg.sin(), arg.cos()]
    return torch.cat(parts, 1).to(dtype)


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float) -> nn.Module:
    if depth == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(
        dim, heads, int(dim * mlp_ratio), dropout=0.0, activation='gelu',
        batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class DPKEncoderDecoder(nn.Module):
    """Tokenisers, encoder–decoder and state (π) of one tap.

    Args:
        student_channels (int): C_s.
        teacher_channels (int): C_t.
        embed_dim (int): D. Defaults to 256.
        patch_size (int): p. Defaults to 1.
        enc_depth (int): Encoder blocks. Defaults to 4.
        dec_depth (int): Decoder blocks. Defaults to 2.
        num_heads (int): Attention heads. Defaults to 8.
        mlp_ratio (float): MLP width / D. Defaults to 4.
        ratio_init (float): π before the first update (fixed π with
            ``ratio`` a float). Defaults to 0.5.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 embed_dim: int = 256, patch_size: int = 1, enc_depth: int = 4,
                 dec_depth: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0,
                 ratio_init: float = 0.5):
        super().__init__()
        self.teacher_channels = teacher_channels
        self.patch_size = p = int(patch_size)
        self.embed_dim = embed_dim
        self.embed_s = nn.Conv2d(student_channels, embed_dim, p, stride=p)
        self.embed_t = nn.Conv2d(teacher_channels, embed_dim, p, stride=p)
        self.encoder = _blocks(embed_dim, enc_depth, num_heads, mlp_ratio)
        self.decoder = _blocks(embed_dim, dec_depth, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, teacher_channels * p * p)
        self.register_buffer('ratio', torch.tensor(float(ratio_init)))
        self.register_buffer('cka', torch.tensor(float('nan'), dtype=torch.float64))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % p, 0, (-h) % p))

    def tokens(self, embed: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor,
                                                                 Tuple[int, int]]:
        """(N, C, H, W) -> (N, L, D) tokens and the token grid (H/p, W/p)."""
        y = embed(self._pad(x))
        return y.flatten(2).transpose(1, 2), tuple(y.shape[-2:])

    def draw_mask(self, n: int, length: int, ratio: float, sampling: str,
                  per_sample: bool, device) -> torch.Tensor:
        """(n, L) bool, True where the teacher's token is used."""
        rows = n if per_sample else 1
        if sampling == 'bernoulli':
            mask = torch.rand(rows, length, device=device) < ratio
        else:  # exactly round(π·L) teacher tokens per sample
            k = int(math.floor(ratio * length + 0.5))
            order = torch.rand(rows, length, device=device).argsort(1)
            mask = order < k
        return mask.expand(n, length)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """F̂_t (N, C_t, H, W) from ``f_s``, ``f_t`` (same H, W) and the
        (N, L) token mask. With no True in ``mask`` the teacher-side
        tokeniser never sees ``f_t``: no teacher token in the input and an
        exactly zero gradient to ``embed_t``."""
        h, w = f_s.shape[-2:]
        x, (gh, gw) = self.tokens(self.embed_s, f_s)
        if bool(mask.any()):
            xt, _ = self.tokens(self.embed_t, f_t)
            x = torch.where(mask[..., None], xt, x)
        else:
            # Keep E_t in the graph with an exactly zero contribution (DDP
            # needs every parameter used; the same zero gradient in one
            # process, so both run alike). No teacher token enters the input.
            x = x + 0.0 * sum(p.sum() for p in self.embed_t.parameters())
        x = x + sincos_pos_embed(gh, gw, self.embed_dim, x.device, x.dtype)
        y = self.head(self.norm(self.decoder(self.encoder(x))))  # (N, L, C_t·p²)
        p = self.patch_size
        y = y.transpose(1, 2).reshape(y.shape[0], self.teacher_channels * p * p,
                                      gh, gw)
        if p > 1:
            y = F.pixel_shuffle(y, p)
        return y[..., :h, :w]


@MODELS.register_module()
class DPK(DistillMethod):
    """Dynamic Prior Knowledge on tapped features (see the module docstring;
    reconstructed from the paper's description).

    Args:
        taps (Sequence[str]): Tap names, one encoder–decoder each
            (classification: one stage, e.g. ``('stage4', )``; detection: the
            FPN levels). Defaults to ``('stage4', )``.
        embed_dim (int): Token width D (divisible by 4 and ``num_heads``).
            Defaults to 256.
        patch_size (int | dict): p, or ``{tap: p}``. Defaults to 1.
        enc_depth (int): Encoder blocks. Defaults to 4.
        dec_depth (int): Decoder blocks. Defaults to 2.
        num_heads (int): Defaults to 8.
        mlp_ratio (float): Defaults to 4.0.
        ratio (str | float): ``'cka'`` (π = 1 − CKA, updated on every training
            forward) or a fixed π in [0, 1]. Defaults to ``'cka'``.
        ratio_init (float): π before the first update. Defaults to 0.5.
        ratio_momentum (float): μ of the EMA of π (0: π is this minibatch's
            1 − CKA, the summary's form; the unofficial code smooths with 0.9).
            Defaults to 0.0.
        ratio_clip (tuple): (π_min, π_max). Defaults to (0.0, 0.95).
        cka_estimator (str): ``'unbiased'`` (minibatch CKA of Nguyen et al.;
            needs >= 4 rows per rank) or ``'biased'``. Defaults to
            ``'unbiased'``.
        cka_rows (str): ``'images'`` (one row per image, the flattened
            C·H·W map) or ``'positions'`` (one row per image and position, C
            columns; for detectors' small per-GPU batches). Defaults to
            ``'images'``.
        mask_sampling (str): ``'bernoulli'`` (each token is the teacher's with
            probability π) or ``'fixed_count'`` (exactly round(π·L) per
            sample). Defaults to ``'bernoulli'``.
        mask_per_sample (bool): A mask per image (True) or one shared by the
            batch (the unofficial code). Defaults to True.
        loss_on (str): ``'all'`` positions, or ``'student_tokens'`` only (MAE
            style; the positions whose input was the student's). Defaults to
            ``'all'``.
        loss_weight (float): w. Defaults to 1.0.
        init_cfg (dict, optional): Unused.
    """

    def __init__(self,
                 taps: Sequence[str] = ('stage4', ),
                 embed_dim: int = 256,
                 patch_size: Union[int, Dict[str, int]] = 1,
                 enc_depth: int = 4,
                 dec_depth: int = 2,
                 num_heads: int = 8,
                 mlp_ratio: float = 4.0,
                 ratio: Union[str, float] = 'cka',
                 ratio_init: float = 0.5,
                 ratio_momentum: float = 0.0,
                 ratio_clip: Tuple[float, float] = (0.0, 0.95),
                 cka_estimator: str = 'unbiased',
                 cka_rows: str = 'images',
                 mask_sampling: str = 'bernoulli',
                 mask_per_sample: bool = True,
                 loss_on: str = 'all',
                 loss_weight: float = 1.0,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        key = 'model.distiller.method (DPK)'
        if isinstance(taps, str):
            taps = (taps, )
        if not taps:
            raise ValueError(f'{key}.taps is empty')
        if embed_dim % 4 or embed_dim % num_heads:
            raise ValueError(f'{key}.embed_dim ({embed_dim}) must be divisible '
                             f'by 4 and by num_heads ({num_heads})')
        if isinstance(ratio, str):
            if ratio != 'cka':
                raise ValueError(f"{key}.ratio must be 'cka' or a float, got "
                                 f'{ratio!r}')
        elif not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f'{key}.ratio must be in [0, 1], got {ratio}')
        lo, hi = ratio_clip
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f'{key}.ratio_clip must satisfy 0 <= min <= max '
                             f'<= 1, got {ratio_clip}')
        if not 0.0 <= ratio_momentum < 1.0:
            raise ValueError(f'{key}.ratio_momentum must be in [0, 1), got '
                             f'{ratio_momentum}')
        for name, value, allowed in (('cka_estimator', cka_estimator, ESTIMATORS),
                                     ('cka_rows', cka_rows, CKA_ROWS),
                                     ('mask_sampling', mask_sampling, MASKS),
                                     ('loss_on', loss_on, LOSS_ON)):
            if value not in allowed:
                raise ValueError(f'{key}.{name} must be one of {allowed}, got '
                                 f'{value!r}')
        self.taps = tuple(taps)
        self.student_taps = self.teacher_taps = self.taps
        if isinstance(patch_size, dict):
            missing = set(self.taps) - set(patch_size)
            if missing:
                raise ValueError(f'{key}.patch_size has no entry for {missing}')
            self.patch_size = {t: int(patch_size[t]) for t in self.taps}
        else:
            self.patch_size = {t: int(patch_size) for t in self.taps}
        self.arch = dict(embed_dim=embed_dim, enc_depth=enc_depth,
                         dec_depth=dec_depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio)
        self.dynamic_ratio = ratio == 'cka'
        self.ratio_init = float(ratio_init) if self.dynamic_ratio else float(ratio)
        self.ratio_momentum = float(ratio_momentum)
        self.ratio_clip = (float(lo), float(hi))
        self.cka_estimator = cka_estimator
        self.cka_rows = cka_rows
        self.mask_sampling = mask_sampling
        self.mask_per_sample = mask_per_sample
        self.loss_on = loss_on
        self.loss_weight = float(loss_weight)
        self.blocks = nn.ModuleDict()

    # ------------------------------------------------------------ interface
    def prepare(self, student_shapes: Dict[str, torch.Size],
                teacher_shapes: Dict[str, torch.Size]) -> None:
        """One :class:`DPKEncoderDecoder` per tap, sized from a probe pass."""
        super().prepare(student_shapes, teacher_shapes)
        self.check_taps(student_shapes, self.student_taps, 'student')
        self.check_taps(teacher_shapes, self.teacher_taps, 'teacher')
        for tap in self.taps:
            for shapes in (student_shapes, teacher_shapes):
                if len(shapes[tap]) != 4:
                    raise ValueError(f'model.distiller.method (DPK).taps: '
                                     f'{tap!r} is {tuple(shapes[tap])}; DPK '
                                     'tokenises (N, C, H, W) feature maps')
            self.blocks[tap] = DPKEncoderDecoder(
                student_shapes[tap][1], teacher_shapes[tap][1],
                patch_size=self.patch_size[tap], ratio_init=self.ratio_init,
                **self.arch)

    def _block(self, tap: str) -> DPKEncoderDecoder:
        if tap not in self.blocks:
            raise RuntimeError('DPK.prepare() was not called (the distiller '
                               'sizes the encoder-decoders from a probe pass)')
        return self.blocks[tap]

    @torch.no_grad()
    def cka(self, f_s: torch.Tensor, f_t: torch.Tensor
            ) -> Optional[torch.Tensor]:
        """Minibatch linear CKA of the raw maps, HSIC terms all-reduced over
        ranks (every rank gets the same value).

        A rank whose minibatch has fewer rows than the estimator needs (4
        unbiased, 2 biased: e.g. a last batch of 3 images) contributes no
        terms but still joins the all-reduce, so ranks never wait on each
        other; ``None`` when no rank had enough rows.
        """
        if self.cka_rows == 'images':
            x, y = f_s.flatten(1), f_t.flatten(1)
        else:
            x = f_s.permute(0, 2, 3, 1).reshape(-1, f_s.shape[1])
            y = f_t.permute(0, 2, 3, 1).reshape(-1, f_t.shape[1])
        counted = torch.zeros(4, dtype=torch.float64, device=x.device)
        if x.shape[0] >= MIN_ROWS[self.cka_estimator]:
            counted[:3] = hsic_terms(x, y, self.cka_estimator)
            counted[3] = 1.0
        all_reduce(counted, op='sum')
        if float(counted[3]) == 0.0:
            return None
        return cka_from_terms(counted[:3])

    @torch.no_grad()
    def update_ratio(self, tap: str, f_s: torch.Tensor, f_t: torch.Tensor
                     ) -> None:
        """π ← clip(μ·π + (1 − μ)·(1 − CKA(F_s, F_t))).

        Minibatches too small for the CKA estimator (see :meth:`cka`) leave π
        and the logged CKA as they were.
        """
        block = self._block(tap)
        c = self.cka(f_s, f_t)
        if c is None:
            return
        target = 1.0 - float(c)
        mu = self.ratio_momentum
        value = mu * float(block.ratio) + (1.0 - mu) * target
        lo, hi = self.ratio_clip
        block.ratio.fill_(min(max(value, lo), hi))
        block.cka.fill_(float(c))

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``{'loss_dpk': w · mean_tap L_DPK, 'dpk_ratio_<tap>': π}``; π is
        updated first when training with ``ratio='cka'``."""
        total, out = 0.0, {}
        for tap in self.taps:
            block = self._block(tap)
            f_s, f_t = align_spatial(student[tap], teacher[tap].detach())
            if self.training and self.dynamic_ratio:
                self.update_ratio(tap, f_s.detach(), f_t)
            ratio = float(block.ratio)
            p = block.patch_size
            grid = (math.ceil(f_s.shape[2] / p), math.ceil(f_s.shape[3] / p))
            mask = block.draw_mask(f_s.shape[0], grid[0] * grid[1], ratio,
                                   self.mask_sampling, self.mask_per_sample,
                                   f_s.device)
            recon = block(f_s, f_t, mask)
            err = (recon - f_t).pow(2)
            if self.loss_on == 'all':
                loss = err.mean()
            else:
                keep = (~mask).view(-1, 1, *grid).to(err.dtype)
                keep = keep.repeat_interleave(p, 2).repeat_interleave(p, 3)
                keep = keep[..., :err.shape[2], :err.shape[3]]
                count = keep.sum() * err.shape[1]
                # π = 1 with loss_on='student_tokens': nothing to reconstruct
                loss = (err * keep).sum() / count.clamp_min(1.0)
            total = total + loss
            out[f'dpk_ratio_{tap}'] = block.ratio.detach().clone()
        out['loss_dpk'] = self.loss_weight * total / len(self.taps)
        return out
