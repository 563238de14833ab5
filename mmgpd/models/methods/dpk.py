"""DPK: Dynamic Prior Knowledge (Qiu et al., ICLR 2023, arXiv 2206.06067).

The paper's abstract: DPK "integrates part of teacher's features as the prior
knowledge before the feature distillation" — the teacher's features become
input, not only target — and the share of that prior is adjusted during
training "according to the feature gap". Only the abstract and secondary
summaries were readable here and no official code exists: **the structure
below is reconstructed from the paper's description** (see
``shared/reference/seed_methods_dpk_kcd_pesf.md`` §1.2) and every choice the
sources leave open is an option with a named default, except those listed
below as fixed in this reconstruction.

Per tapped feature (one classifier stage, or each FPN level of a detector),
with ``F_s`` (N, C_s, H, W) and ``F_t`` (N, C_t, H, W) (a larger map is
brought to the smaller one's size, ``spatial_align``: average pooling by
default; H, W are zero-padded to multiples of ``p``)::

    tokens   E_s(F_s), E_t(F_t) ∈ R^{N × L × D}     E = norm(Conv(C → D, k = s = p)), L = HW/p²
    mix      X = where(m, E_t(F_t), E_s(F_s)) + pos,  m ~ Bernoulli(π) per token
    recon    F̂_t = unpatchify(Linear(D → C_t·p²)(LN(Dec(Enc(X)))))   (N, C_t, H, W)
    loss     L_DPK = w · mean over positions of ℓ(F̂_t, sg(target(F_t)))

Options, defaults first (each reconstructed; the sources leave them open):

* ``pos_embed``: ``'sincos'`` (a fixed 2-D sine-cosine embedding, any H, W:
  detection inputs vary), ``'learned'`` (a (D, H/p, W/p) parameter sized
  from the probe pass, bilinearly resized for other grids) or ``'none'``;
* ``token_norm`` after each tokeniser: ``'none'``, ``'layer_norm'`` (over D)
  or ``'batch_norm'`` (BatchNorm2d on the token grid, the unofficial code's);
* ``target_norm``: ``'none'`` (the raw ``F_t``) or ``'token'`` (each p × p
  patch of ``F_t`` standardised over its C_t·p² values, MAE's
  ``norm_pix_loss``; zero padding counts in edge patches);
* ``recon_loss`` ℓ: ``'mse'``, ``'smooth_l1'`` (β = 1) or ``'l1'``, elementwise,
  averaged over the positions of ``loss_on``.

``Enc`` / ``Dec`` are pre-norm transformer blocks (``enc_depth`` /
``dec_depth``). The teacher tokens are the prior knowledge; the student's
gradient comes through ``E_s``.

**Dynamic ratio** ``π`` (``ratio='cka'``): on every ``ratio_interval``-th
training forward (default every one), before the mask is drawn, under
no_grad::

    c = CKA_minibatch(F_s, F_t)             (mmgpd.models.losses.cka; HSIC
                                             terms all-reduced over ranks)
    π ← clip(μ·π + (1 − μ)·(1 − c), π_min, π_max)        (μ = ratio_momentum)

so a large gap hands the student many teacher tokens and ``π → π_min`` as the
student's features come to resemble the teacher's. CKA reads the maps, not
the tokens; its rows are ``cka_rows``: ``'images'`` (flattened C·H·W maps,
default), ``'positions'`` or ``'pooled'`` (spatial means, (N, C)).
``ratio=<float>`` fixes π. π and the last CKA (and, with ``ratio_interval >
1``, the forward counter) are per-tap buffers: checkpointed, exact
``--resume``.

**Fixed in this reconstruction** (not options): the tokeniser is one
``Conv(k = s = p)`` per side; the decoder is a second stack of the encoder's
blocks at the same width D (no narrower MAE-style decoder); the head is LN +
Linear + pixel shuffle; H and W are zero-padded to multiples of ``p``; CKA
reads the raw (aligned) maps, never the learned tokens (π should measure the
feature gap, not the tokenisers that the loss trains); the mask is drawn from
torch's global generator; the taps' losses are averaged with equal weights.

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
from .kcd import SPATIAL_ALIGN, align_spatial

from .base import DistillMethod

__all__ = ['DPK', 'DPKEncoderDecoder', 'sincos_pos_embed', 'token_normalize']

LOSS_ON = ('all', 'student_tokens')
CKA_ROWS = ('images', 'positions', 'pooled')
MASKS = ('bernoulli', 'fixed_count')
POS_EMBEDS = ('sincos', 'learned', 'none')
TOKEN_NORMS = ('none', 'layer_norm', 'batch_norm')
TARGET_NORMS = ('none', 'token')
RECON_LOSSES = ('mse', 'smooth_l1', 'l1')


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


def token_normalize(x: torch.Tensor, patch_size: int,
                    eps: float = 1e-6) -> torch.Tensor:
    """(N, C, H, W) with each p × p patch standardised over its C·p² values
    (zero mean, unit variance; MAE's ``norm_pix_loss`` target). H, W are
    zero-padded to multiples of p for the statistics (the padding counts in
    edge patches) and cropped back."""
    p = int(patch_size)
    h, w = x.shape[-2:]
    y = F.pad(x, (0, (-w) % p, 0, (-h) % p))
    if p > 1:
        y = F.pixel_unshuffle(y, p)  # (N, C·p², H/p, W/p)
    mean = y.mean(1, keepdim=True)
    var = y.var(1, unbiased=False, keepdim=True)
    y = (y - mean) / (var + eps).sqrt()
    if p > 1:
        y = F.pixel_shuffle(y, p)
    return y[..., :h, :w]


def _token_norm(kind: str, dim: int) -> nn.Module:
    if kind == 'layer_norm':
        return nn.LayerNorm(dim)
    if kind == 'batch_norm':
        return nn.BatchNorm2d(dim)
    return nn.Identity()


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
        pos_embed (str): ``'sincos'``, ``'learned'`` or ``'none'``.
            Defaults to ``'sincos'``.
        grid_size (tuple[int, int], optional): The token grid (H/p, W/p) a
            ``'learned'`` embedding is sized for (other grids resize it
            bilinearly); required by it. Defaults to None.
        token_norm (str): ``'none'``, ``'layer_norm'`` or ``'batch_norm'``
            after each tokeniser (one per side). Defaults to ``'none'``.
        ratio_interval (int): With > 1 a persistent forward counter
            ``ratio_step`` is kept (:class:`DPK` updates π when it is a
            multiple of the interval). Defaults to 1.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 embed_dim: int = 256, patch_size: int = 1, enc_depth: int = 4,
                 dec_depth: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0,
                 ratio_init: float = 0.5, pos_embed: str = 'sincos',
                 grid_size: Optional[Tuple[int, int]] = None,
                 token_norm: str = 'none', ratio_interval: int = 1):
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f'pos_embed must be one of {POS_EMBEDS}, got '
                             f'{pos_embed!r}')
        if token_norm not in TOKEN_NORMS:
            raise ValueError(f'token_norm must be one of {TOKEN_NORMS}, got '
                             f'{token_norm!r}')
        self.teacher_channels = teacher_channels
        self.patch_size = p = int(patch_size)
        self.embed_dim = embed_dim
        self.pos_embed = pos_embed
        self.embed_s = nn.Conv2d(student_channels, embed_dim, p, stride=p)
        self.embed_t = nn.Conv2d(teacher_channels, embed_dim, p, stride=p)
        self.token_norm_s = _token_norm(token_norm, embed_dim)
        self.token_norm_t = _token_norm(token_norm, embed_dim)
        self.encoder = _blocks(embed_dim, enc_depth, num_heads, mlp_ratio)
        self.decoder = _blocks(embed_dim, dec_depth, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, teacher_channels * p * p)
        if pos_embed == 'learned':
            if grid_size is None:
                raise ValueError("pos_embed='learned' needs the grid_size")
            self.pos = nn.Parameter(torch.zeros(1, embed_dim, *grid_size))
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.register_buffer('ratio', torch.tensor(float(ratio_init)))
        self.register_buffer('cka', torch.tensor(float('nan'), dtype=torch.float64))
        if ratio_interval > 1:
            self.register_buffer('ratio_step', torch.zeros((), dtype=torch.long))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % p, 0, (-h) % p))

    def tokens(self, embed: nn.Module, x: torch.Tensor,
               norm: Optional[nn.Module] = None
               ) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(N, C, H, W) -> (N, L, D) tokens and the token grid (H/p, W/p);
        ``norm`` is that side's ``token_norm_*`` (None: none)."""
        y = embed(self._pad(x))
        grid = tuple(y.shape[-2:])
        if isinstance(norm, nn.BatchNorm2d):
            y = norm(y)
        y = y.flatten(2).transpose(1, 2)
        if isinstance(norm, nn.LayerNorm):
            y = norm(y)
        return y, grid

    def position(self, gh: int, gw: int, device=None,
                 dtype=torch.float32) -> Optional[torch.Tensor]:
        """(gh·gw, D) position embedding of a token grid (None: ``'none'``)."""
        if self.pos_embed == 'none':
            return None
        if self.pos_embed == 'sincos':
            return sincos_pos_embed(gh, gw, self.embed_dim, device, dtype)
        pos = self.pos
        if tuple(pos.shape[-2:]) != (gh, gw):
            pos = F.interpolate(pos, size=(gh, gw), mode='bilinear',
                                align_corners=False)
        return pos.flatten(2)[0].t().to(dtype)

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
        exactly zero gradient to ``embed_t`` (and ``token_norm_t``)."""
        h, w = f_s.shape[-2:]
        x, (gh, gw) = self.tokens(self.embed_s, f_s, self.token_norm_s)
        if bool(mask.any()):
            xt, _ = self.tokens(self.embed_t, f_t, self.token_norm_t)
            x = torch.where(mask[..., None], xt, x)
        else:
            # Keep E_t in the graph with an exactly zero contribution (DDP
            # needs every parameter used; the same zero gradient in one
            # process, so both run alike). No teacher token enters the input.
            params = list(self.embed_t.parameters()) + \
                list(self.token_norm_t.parameters())
            x = x + 0.0 * sum(p.sum() for p in params)
        pos = self.position(gh, gw, x.device, x.dtype)
        if pos is not None:
            x = x + pos
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
        ratio_interval (int): π is updated on every ``ratio_interval``-th
            training forward (the 1st, the (k+1)-th, …; a persistent counter
            per tap when > 1). Defaults to 1 (every forward).
        cka_estimator (str): ``'unbiased'`` (minibatch CKA of Nguyen et al.;
            needs >= 4 rows per rank) or ``'biased'``. Defaults to
            ``'unbiased'``.
        cka_rows (str): ``'images'`` (one row per image, the flattened
            C·H·W map), ``'positions'`` (one row per image and position, C
            columns; for detectors' small per-GPU batches) or ``'pooled'``
            (one row per image, the spatially averaged (N, C) map). Defaults
            to ``'images'``.
        mask_sampling (str): ``'bernoulli'`` (each token is the teacher's with
            probability π) or ``'fixed_count'`` (exactly round(π·L) per
            sample). Defaults to ``'bernoulli'``.
        mask_per_sample (bool): A mask per image (True) or one shared by the
            batch (the unofficial code). Defaults to True.
        loss_on (str): ``'all'`` positions, or ``'student_tokens'`` only (MAE
            style; the positions whose input was the student's). Defaults to
            ``'all'``.
        pos_embed (str): ``'sincos'`` (fixed 2-D sine-cosine), ``'learned'``
            (a parameter on the probe pass's token grid, bilinearly resized
            for others) or ``'none'``. Defaults to ``'sincos'``.
        token_norm (str): Normalisation after each tokeniser: ``'none'``,
            ``'layer_norm'`` or ``'batch_norm'``. Defaults to ``'none'``.
        target_norm (str): The reconstruction target: ``'none'`` (raw F_t)
            or ``'token'`` (each p × p patch of F_t standardised, MAE's
            norm_pix_loss). Defaults to ``'none'``.
        recon_loss (str): Elementwise ℓ: ``'mse'``, ``'smooth_l1'`` (β = 1)
            or ``'l1'``. Defaults to ``'mse'``.
        spatial_align (str): How the larger of two maps of different sizes
            is brought to the smaller's size: ``'avg_pool'`` or
            ``'bilinear'``. Defaults to ``'avg_pool'``.
        loss_weight (float): w. Defaults to 1.0.
        init_cfg (dict, optional): Unused.

    Shapes: ``forward`` reads ``student[tap]`` (N, C_s, H, W) and
    ``teacher[tap]`` (N, C_t, H', W'); returns the scalar ``'loss_dpk'`` and
    the 0-d ``'dpk_ratio_<tap>'`` (π used for this forward's mask).
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
                 ratio_interval: int = 1,
                 cka_estimator: str = 'unbiased',
                 cka_rows: str = 'images',
                 mask_sampling: str = 'bernoulli',
                 mask_per_sample: bool = True,
                 loss_on: str = 'all',
                 pos_embed: str = 'sincos',
                 token_norm: str = 'none',
                 target_norm: str = 'none',
                 recon_loss: str = 'mse',
                 spatial_align: str = 'avg_pool',
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
        if int(ratio_interval) != ratio_interval or ratio_interval < 1:
            raise ValueError(f'{key}.ratio_interval must be an integer >= 1, '
                             f'got {ratio_interval}')
        for name, value, allowed in (('cka_estimator', cka_estimator, ESTIMATORS),
                                     ('cka_rows', cka_rows, CKA_ROWS),
                                     ('mask_sampling', mask_sampling, MASKS),
                                     ('loss_on', loss_on, LOSS_ON),
                                     ('pos_embed', pos_embed, POS_EMBEDS),
                                     ('token_norm', token_norm, TOKEN_NORMS),
                                     ('target_norm', target_norm, TARGET_NORMS),
                                     ('recon_loss', recon_loss, RECON_LOSSES),
                                     ('spatial_align', spatial_align,
                                      SPATIAL_ALIGN)):
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
        self.ratio_interval = int(ratio_interval)
        self.pos_embed = pos_embed
        self.token_norm = token_norm
        self.target_norm = target_norm
        self.recon_loss = recon_loss
        self.spatial_align = spatial_align
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
            p = self.patch_size[tap]
            # the token grid of the aligned maps (the smaller size per axis)
            grid = tuple(math.ceil(min(a, b) / p) for a, b in
                         zip(student_shapes[tap][2:], teacher_shapes[tap][2:]))
            self.blocks[tap] = DPKEncoderDecoder(
                student_shapes[tap][1], teacher_shapes[tap][1],
                patch_size=p, ratio_init=self.ratio_init,
                pos_embed=self.pos_embed, grid_size=grid,
                token_norm=self.token_norm,
                ratio_interval=self.ratio_interval, **self.arch)

    def _block(self, tap: str) -> DPKEncoderDecoder:
        if tap not in self.blocks:
            raise RuntimeError('DPK.prepare() was not called (the distiller '
                               'sizes the encoder-decoders from a probe pass)')
        return self.blocks[tap]

    @torch.no_grad()
    def cka(self, f_s: torch.Tensor, f_t: torch.Tensor
            ) -> Optional[torch.Tensor]:
        """Minibatch linear CKA of the raw maps (rows: ``cka_rows``), HSIC
        terms all-reduced over ranks (every rank gets the same value).

        A rank whose minibatch has fewer rows than the estimator needs (4
        unbiased, 2 biased: e.g. a last batch of 3 images) contributes no
        terms but still joins the all-reduce, so ranks never wait on each
        other; ``None`` when no rank had enough rows.
        """
        if self.cka_rows == 'images':
            x, y = f_s.flatten(1), f_t.flatten(1)
        elif self.cka_rows == 'pooled':
            x, y = f_s.mean((2, 3)), f_t.mean((2, 3))
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

    def _elementwise(self, recon: torch.Tensor, target: torch.Tensor
                     ) -> torch.Tensor:
        """ℓ(F̂_t, target) per element (``recon_loss``), same shape."""
        if self.recon_loss == 'mse':
            return (recon - target).pow(2)
        if self.recon_loss == 'l1':
            return (recon - target).abs()
        return F.smooth_l1_loss(recon, target, reduction='none', beta=1.0)

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``{'loss_dpk': w · mean_tap L_DPK, 'dpk_ratio_<tap>': π}``; π is
        updated first when training with ``ratio='cka'`` (on every
        ``ratio_interval``-th training forward)."""
        total, out = 0.0, {}
        for tap in self.taps:
            block = self._block(tap)
            f_s, f_t = align_spatial(student[tap], teacher[tap].detach(),
                                     self.spatial_align)
            if self.training and self.dynamic_ratio:
                if self.ratio_interval == 1:
                    self.update_ratio(tap, f_s.detach(), f_t)
                else:
                    if int(block.ratio_step) % self.ratio_interval == 0:
                        self.update_ratio(tap, f_s.detach(), f_t)
                    block.ratio_step += 1
            ratio = float(block.ratio)
            p = block.patch_size
            grid = (math.ceil(f_s.shape[2] / p), math.ceil(f_s.shape[3] / p))
            mask = block.draw_mask(f_s.shape[0], grid[0] * grid[1], ratio,
                                   self.mask_sampling, self.mask_per_sample,
                                   f_s.device)
            recon = block(f_s, f_t, mask)
            target = f_t if self.target_norm == 'none' else \
                token_normalize(f_t, p)
            err = self._elementwise(recon, target)
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
