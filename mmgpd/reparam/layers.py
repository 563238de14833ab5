"""Teacher-side layers: norms and activations evaluated at student scale, and the
multi-branch convolution of the branch dimension.

Every module here keeps the parameter names of the PyTorch layer it replaces, so
a dynamic teacher's ``state_dict`` reads like the student's, only wider.

A carried tensor ``x̂`` holds ``x / s`` per channel (``s = n[g]``, see
``replica.py``); ``carry_scale`` is that ``s`` (a non-persistent buffer, shape
(C',)).  Norms compute ``N(s ⊙ x̂) / s``, element-wise activations ``f(s ⊙ x̂) / s``:
both exact, with γ, β and running statistics stored unscaled (shared with the
student under the hard strategy).  Batch norms also hold the hard-strategy
student's own running statistics (``student_running_mean`` / ``_var`` /
``_num_batches_tracked``, shape (C,)).

Mixed precision (autocast, fp16 / bf16 activations): the carry ``s ⊙ x̂`` and
``/ s`` are exact in reduced precision when every ``s`` is a power of two (ratio
2, 4, 1.5 ...); otherwise (e.g. ratio 3), and always for statistics weighted by
``stat_weight``, a carried layer computes in fp32 and returns its input's
dtype, so T_d's norm output is rounded once, like the student's. Branch
kernels are merged in fp32 (autocast off), like CBR.
"""
import contextlib
import math
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'CarriedBatchNorm1d', 'CarriedBatchNorm2d', 'CarriedBatchNorm3d',
    'CarriedSyncBatchNorm', 'CarriedLayerNorm', 'CarriedGroupNorm',
    'CarriedActivation', 'BranchConv2d', 'BRANCHES', 'GROUPED_BRANCHES',
    'carried_norm_class', 'merge_once'
]


def _scale_shape(dim: int, ndim: int, width: int):
    shape = [1] * ndim
    shape[dim] = width
    return shape


#: Activation dtypes in which a carried layer may compute in fp32 instead.
REDUCED_DTYPES = (torch.float16, torch.bfloat16)


def full_precision(device_type: str = 'cpu'):
    """A context in which autocast is off on ``device_type`` if it is on: the
    CBR / branch-merge arithmetic on fp32 parameters stays fp32 (autocast
    would run their matmuls, e.g. the ``1x1_kxk`` merge, in fp16 / bf16).
    A plain ``torch.autocast`` / ``nullcontext``, which ``torch.compile``
    traces."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _powers_of_two(scale: torch.Tensor) -> bool:
    mantissa, _ = torch.frexp(scale.detach().float())
    return bool((mantissa.abs() == 0.5).all())


class _Carry:
    """Mixin: holds ``carry_scale`` and the channel dimension it applies to."""
    carry_dim = 1

    def _init_carry(self, scale: torch.Tensor):
        self.register_buffer('carry_scale', scale.detach().clone().float(),
                             persistent=False)
        uniform = scale.unique()
        self.carry_uniform = float(uniform[0]) if len(uniform) == 1 else None
        #: ``s ⊙ x`` and ``x / s`` are exact in fp16 / bf16 (s powers of two)
        self.carry_exact = _powers_of_two(scale)

    def _at_student_scale(self, fn: Callable, x: torch.Tensor,
                          exact: bool = True) -> torch.Tensor:
        """``fn(s ⊙ x) / s``; in fp32 (returned in ``x``'s dtype) when ``x`` is
        fp16 / bf16 and the carry (or, ``exact=False``, ``fn`` itself) would
        round in it."""
        dtype = x.dtype
        upcast = dtype in REDUCED_DTYPES and not (
            exact and getattr(self, 'carry_exact', False))
        if upcast:
            x = x.float()
        y = self._carry(fn(self._carry(x)), inverse=True)
        return y.to(dtype) if upcast else y

    def _carry(self, x, inverse=False):
        if self.carry_uniform is not None:
            if self.carry_uniform == 1:
                return x
            return x / self.carry_uniform if inverse else x * self.carry_uniform
        s = self.carry_scale.to(x.dtype).reshape(
            _scale_shape(self.carry_dim % x.dim(), x.dim(), -1))
        return x / s if inverse else x * s


class _CarriedBatchNormMixin(_Carry):

    def _init_student_stats(self, running_mean, running_var, num_batches):
        self.register_buffer('student_running_mean', running_mean.detach().clone())
        self.register_buffer('student_running_var', running_var.detach().clone())
        self.register_buffer('student_num_batches_tracked',
                             num_batches.detach().clone())

    def forward(self, x):
        return self._at_student_scale(super().forward, x)


class CarriedBatchNorm1d(_CarriedBatchNormMixin, nn.BatchNorm1d):
    """BatchNorm1d at student scale: ``BN(s ⊙ x) / s``."""


class CarriedBatchNorm2d(_CarriedBatchNormMixin, nn.BatchNorm2d):
    """BatchNorm2d at student scale: ``BN(s ⊙ x) / s``."""


class CarriedBatchNorm3d(_CarriedBatchNormMixin, nn.BatchNorm3d):
    """BatchNorm3d at student scale: ``BN(s ⊙ x) / s``."""


class CarriedSyncBatchNorm(_CarriedBatchNormMixin, nn.SyncBatchNorm):
    """SyncBatchNorm at student scale: ``BN(s ⊙ x) / s``."""


class CarriedBatchNormXd(_CarriedBatchNormMixin, nn.modules.batchnorm._BatchNorm):
    """A batch norm of any input rank at student scale: ``BN(s ⊙ x) / s``.

    The carried counterpart of mmengine's ``_BatchNormXd`` (``_BatchNorm``
    without the input-rank check), which mmengine's ``revert_sync_batchnorm``
    puts in place of every SyncBN when a model runs in one process: the
    dynamic teacher's :class:`CarriedSyncBatchNorm` becomes this class instead
    (:func:`to_batchnorm_xd`), keeping its carry scale and the student's
    statistics.
    """

    def _check_input_dim(self, input):
        return


_BN_CLASSES = {
    nn.BatchNorm1d: CarriedBatchNorm1d,
    nn.BatchNorm2d: CarriedBatchNorm2d,
    nn.BatchNorm3d: CarriedBatchNorm3d,
    nn.SyncBatchNorm: CarriedSyncBatchNorm,
}


def carried_norm_class(module: nn.Module):
    """The carried class for a batch norm (its nearest PyTorch base).

    A ``_BatchNorm`` subclass that is none of BatchNorm1d/2d/3d / SyncBatchNorm
    but computes what ``_BatchNorm`` computes (its ``forward`` is
    ``_BatchNorm.forward``, e.g. mmengine's ``_BatchNormXd``) gets
    :class:`CarriedBatchNormXd`.

    Raises:
        TypeError: For a module that is not a ``_BatchNorm``, or whose class
            replaces the forward of its PyTorch base (the carried class would
            not compute what it computes). The message names the class.
    """
    cls_name = f'{type(module).__module__}.{type(module).__qualname__}'
    for cls in type(module).__mro__:
        if cls in _BN_CLASSES:
            base = cls
            break
    else:
        base = nn.modules.batchnorm._BatchNorm
        if not isinstance(module, base):
            raise TypeError(f'no carried batch norm for {cls_name}: not a '
                            'torch _BatchNorm')
    if type(module).forward is not base.forward:
        raise TypeError(f'no carried batch norm for {cls_name}: its forward '
                        f'replaces {base.__name__}.forward')
    return _BN_CLASSES.get(base, CarriedBatchNormXd)


class CarriedLayerNorm(_Carry, nn.LayerNorm):
    """LayerNorm over the last dim at student scale.

    With a non-uniform replica count the mean and variance are weighted by
    ``1 / (C · n[g])`` so that they equal the student's (``stat_weight``).
    """
    carry_dim = -1

    def _init_weights(self, stat_weight: Optional[torch.Tensor]):
        self.register_buffer('stat_weight', stat_weight, persistent=False)

    def forward(self, x):
        return self._at_student_scale(self._norm, x,
                                      exact=self.stat_weight is None)

    def _norm(self, x):
        if self.stat_weight is None:
            return F.layer_norm(x, self.normalized_shape, self.weight,
                                self.bias, self.eps)
        w = self.stat_weight.to(x.dtype)
        mean = (x * w).sum(-1, keepdim=True)
        var = ((x - mean)**2 * w).sum(-1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class CarriedGroupNorm(_Carry, nn.GroupNorm):
    """GroupNorm at student scale, each teacher group carrying one student
    group; when a group holds its channels' replicas unequally (fractional
    ratios, e.g. GroupNorm(1, C)) the statistics are weighted by
    ``stat_weight`` = 1 / (group size · multiplicity), so they equal the
    student's."""

    def _init_weights(self, stat_weight: Optional[torch.Tensor] = None):
        self.register_buffer('stat_weight', stat_weight, persistent=False)

    def forward(self, x):
        weighted = getattr(self, 'stat_weight', None) is not None
        return self._at_student_scale(
            self._weighted_norm if weighted else super().forward, x,
            exact=not weighted)

    def _weighted_norm(self, x):
        n, c = x.shape[:2]
        g = self.num_groups
        xs = x.reshape(n, g, c // g, -1)
        w = self.stat_weight.to(x.dtype).reshape(1, g, c // g, 1)
        hw = xs.shape[-1]
        mean = (xs * w).sum((2, 3), keepdim=True) / hw
        var = ((xs - mean)**2 * w).sum((2, 3), keepdim=True) / hw
        y = ((xs - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        shape = _scale_shape(1, x.dim(), -1)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


class CarriedActivation(_Carry, nn.Module):
    """An element-wise, non-homogeneous activation at student scale: ``f(s ⊙ x) / s``.

    Args:
        act (nn.Module): The activation (kept as ``self.act``; no parameters).
        scale (Tensor): (C',) carry scale.
        dim (int): The channel dimension of the inputs (1 for NCHW, -1 for
            token layouts). Only used when the scale is not uniform.
    """

    def __init__(self, act: nn.Module, scale: torch.Tensor, dim: int = 1):
        super().__init__()
        self.act = act
        self.carry_dim = dim
        self._init_carry(scale)

    def forward(self, x):
        return self._at_student_scale(self.act, x)


# --------------------------------------------------------------------------- #
# Branch dimension
# --------------------------------------------------------------------------- #
#: Branches a k×k stride-1 conv can grow, with their "scratch" init scale.
#: Each is linear in its weights and merged into one k×k kernel per forward.
BRANCHES: Dict[str, float] = {
    '1x1': 0.05,        # a 1×1 conv, zero-padded to k×k
    '1x1_avg': 0.25,    # a 1×1 conv followed by k×k average pooling
    '1x1_kxk': 0.5,     # a 1×1 conv (identity init) followed by a k×k conv
}
KXK_SCRATCH_SCALE = 0.25
#: Branches that grouped (e.g. depthwise) convs can grow: per group, like the kxk.
GROUPED_BRANCHES = ('1x1', '1x1_avg')


class BranchConv2d(nn.Conv2d):
    """A k×k stride-1 convolution with OREPA-style linear branches.

    ``weight`` (C_out, C_in, k, k) is the original k×k branch.  Each extra branch
    ``b`` has its own weights and every branch a per-output-channel scale
    ``branch_scales[b]`` (C_out,); the forward convolves once with the merged
    kernel ``Σ_b scale_b ⊙ K_b`` (:meth:`merged_weight`), so the conv's FLOPs
    are those of one k×k conv.

    Args:
        conv (nn.Conv2d): The (already widened) conv.
        branches (Sequence[str]): Extra branches, keys of :data:`BRANCHES`
            (only :data:`GROUPED_BRANCHES` when ``conv.groups > 1``).
        init (str): ``'preserve'``: scale 1 on ``weight``, 0 on the others, so
            the merged kernel is ``conv.weight``.  ``'scratch'``: the scratch
            scales of :data:`BRANCHES`, with ``weight`` solved so that the merged
            kernel is still exactly ``conv.weight``.
        generator (torch.Generator, optional): For the new branch weights.
    """

    def __init__(self, conv: nn.Conv2d, branches: Sequence[str], init='preserve',
                 generator=None):
        k = conv.kernel_size
        self.__dict__['_building'] = True  # see reset_parameters
        super().__init__(conv.in_channels, conv.out_channels, k,
                         stride=conv.stride, padding=conv.padding,
                         dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown:
            raise ValueError(f'unknown branches {unknown}; choose from '
                             f'{sorted(BRANCHES)}')
        if k[0] != k[1] or k[0] < 2:
            raise ValueError(f'BranchConv2d needs a square k×k (k > 1) conv, got {k}')
        if conv.groups > 1 and not set(branches) <= set(GROUPED_BRANCHES):
            raise ValueError(f'a grouped conv can grow only {GROUPED_BRANCHES}, '
                             f'got {tuple(branches)}')
        if init not in ('preserve', 'scratch'):
            raise ValueError(f"init must be 'preserve' or 'scratch', got {init!r}")
        self.__dict__['_building'] = False
        self.branch_names = tuple(branches)
        c_out, kk = self.out_channels, k[0]
        c_in = self.in_channels // self.groups  # per group
        w = conv.weight.detach()

        def rand(*shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            t = torch.rand(*shape, generator=generator, dtype=w.dtype)
            return ((t * 2 - 1) * bound).to(w.device)

        if '1x1' in branches:
            self.weight_1x1 = nn.Parameter(rand(c_out, c_in, 1, 1, fan_in=c_in))
        if '1x1_avg' in branches:
            self.weight_1x1_avg = nn.Parameter(rand(c_out, c_in, 1, 1, fan_in=c_in))
        if '1x1_kxk' in branches:
            c_in = self.in_channels
            self.weight_1x1_kxk_a = nn.Parameter(
                torch.eye(c_in, dtype=w.dtype, device=w.device)[:, :, None, None])
            self.weight_1x1_kxk_b = nn.Parameter(
                rand(c_out, c_in, kk, kk, fan_in=c_in * kk * kk))
        n = 1 + len(self.branch_names)
        scales = torch.zeros(n, c_out, dtype=w.dtype, device=w.device)
        if init == 'preserve':
            scales[0] = 1
        else:
            scales[0] = KXK_SCRATCH_SCALE
            for i, b in enumerate(self.branch_names, 1):
                scales[i] = BRANCHES[b]
        self.branch_scales = nn.Parameter(scales)
        with torch.no_grad():
            if init == 'preserve':  # the extra branches' scales are 0
                self.weight.copy_(w)
            else:
                others = self._extra_kernel()
                self.weight.copy_((w - others) / scales[0][:, None, None, None])
            if conv.bias is not None:
                self.bias.copy_(conv.bias)

    def reset_parameters(self) -> None:
        # nn.Conv2d.__init__ draws a Kaiming init of the whole (widened)
        # kernel that __init__ overwrites at once: skipped while building
        if not self.__dict__.get('_building', False):
            super().reset_parameters()

    def _extra_kernel(self):
        """Σ over the extra branches of scale ⊙ kernel (used to solve ``weight``)."""
        return self._merge(slice(None), slice(None), with_kxk=False)

    def merged_weight(self, out_channels: Optional[int] = None,
                      in_channels: Optional[int] = None) -> torch.Tensor:
        """The one k×k kernel all branches add up to: (C_out, C_in/groups, k, k).

        Args:
            out_channels (int, optional): Merge only the leading
                ``out_channels`` × ``in_channels`` block (CBR reads just the
                student's first replicas; merging is linear per block).
            in_channels (int, optional): See ``out_channels``.

        Inside :func:`merge_once` the whole kernel is merged once and every
        call returns it, or its leading block (a view), until the block ends.
        """
        once = self.__dict__.get('_merge_once')
        if once is not None:
            if once.get('kernel') is None:
                with full_precision(self.weight.device.type):
                    once['kernel'] = self._merge(slice(None), slice(None))
            kernel = once['kernel']
            if out_channels is None and in_channels is None:
                return kernel
            return kernel[:out_channels, :in_channels]
        with full_precision(self.weight.device.type):
            return self._merge(slice(None, out_channels),
                               slice(None, in_channels))

    def _merge(self, o: slice, i: slice, with_kxk: bool = True):
        scales = self.branch_scales[:, o, None, None, None]
        weight = self.weight[o, i]
        kernel = scales[0] * weight if with_kxk else torch.zeros_like(weight)
        kk = self.kernel_size[0]
        for scale, name in zip(scales[1:], self.branch_names):
            if name == '1x1_avg':  # k×k average pooling = a uniform kernel
                kernel = kernel + scale * self.weight_1x1_avg[o, i] / (kk * kk)
            elif name == '1x1':  # zero-padded to k×k: only the centre tap
                c = kk // 2
                kernel[:, :, c, c] += (scale * self.weight_1x1[o, i])[:, :, 0, 0]
            elif name == '1x1_kxk':
                a = self.weight_1x1_kxk_a[:, i, 0, 0]
                kernel = kernel + scale * torch.einsum(
                    'omhw,mi->oihw', self.weight_1x1_kxk_b[o], a)
        return kernel

    def forward(self, x):
        return self._conv_forward(x, self.merged_weight(), self.bias)

    def extra_repr(self):
        return super().extra_repr() + f', branches=kxk+{"+".join(self.branch_names)}'


@contextlib.contextmanager
def merge_once(module: nn.Module):
    """Merge each :class:`BranchConv2d` of ``module`` once for the block.

    A hard-strategy step runs T_d (its whole merged kernels) and S (CBR of
    the leading block of the same kernels) on the same parameter values:
    inside the block both read one merged kernel per conv, so the branches
    are merged, and back-propagated through, once per step instead of twice.
    Only for a block in which the parameters do not change (one forward of
    the models; the kernels are dropped on exit). A no-op while
    ``torch.compile`` traces (the compiler shares the common work itself).
    """
    convs = [] if torch.compiler.is_compiling() else [
        m for m in module.modules() if isinstance(m, BranchConv2d)]
    for conv in convs:
        conv.__dict__['_merge_once'] = {}
    try:
        yield
    finally:
        for conv in convs:
            conv.__dict__.pop('_merge_once', None)


def _recast(module: nn.Module, cls) -> nn.Module:
    """``module`` as an instance of ``cls`` holding the same attributes
    (parameters, buffers, carry scale, hooks, training flag: the same objects)."""
    out = cls.__new__(cls)
    out.__dict__.update(module.__dict__)
    return out


def to_sync_batchnorm(module: nn.Module) -> nn.Module:
    """A carried batch norm as :class:`CarriedSyncBatchNorm`, sharing its tensors.

    What the dynamic teacher's batch norms become where mmengine's
    ``convert_sync_batchnorm`` (``cfg.sync_bn``) turns batch norms into SyncBNs
    (``mmgpd.utils.compat``). Parameters, running and student statistics,
    carry scale and hooks are kept (the same tensor objects); returns
    ``module`` itself for anything else.
    """
    if not isinstance(module, _CarriedBatchNormMixin) or \
            isinstance(module, nn.SyncBatchNorm):
        return module
    sync = _recast(module, CarriedSyncBatchNorm)
    sync.process_group = None
    return sync


def to_batchnorm_xd(module: nn.Module) -> nn.Module:
    """A carried SyncBN as :class:`CarriedBatchNormXd`, sharing its tensors.

    What the dynamic teacher's SyncBNs become where mmengine's
    ``revert_sync_batchnorm`` (a Runner that is not distributed) turns SyncBNs
    into ``_BatchNormXd`` (``mmgpd.utils.compat``). Returns ``module`` itself
    for anything but a :class:`CarriedSyncBatchNorm`.
    """
    if not isinstance(module, CarriedSyncBatchNorm):
        return module
    out = _recast(module, CarriedBatchNormXd)
    out.__dict__.pop('process_group', None)
    return out


class CarriedLayerNorm2d(_Carry, nn.LayerNorm):
    """mmpretrain's ``LayerNorm2d`` (normalises the channels of NCHW, or of
    NHWC with ``data_format='channel_last'``) at student scale, statistics
    weighted like :class:`CarriedLayerNorm` when replica counts differ."""

    def _init_weights(self, stat_weight: Optional[torch.Tensor]):
        self.register_buffer('stat_weight', stat_weight, persistent=False)

    def forward(self, x, data_format='channel_first'):
        dim = 1 if data_format == 'channel_first' else x.dim() - 1
        self.carry_dim = dim
        return self._at_student_scale(lambda x: self._norm(x, dim), x,
                                      exact=self.stat_weight is None)

    def _norm(self, x, dim):
        shape = _scale_shape(dim, x.dim(), -1)
        if self.stat_weight is None:
            mean = x.mean(dim, keepdim=True)
            var = ((x - mean)**2).mean(dim, keepdim=True)
        else:
            w = self.stat_weight.to(x.dtype).reshape(shape)
            mean = (x * w).sum(dim, keepdim=True)
            var = ((x - mean)**2 * w).sum(dim, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y
