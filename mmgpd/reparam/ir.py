"""Inverse Reparameterization (IR): grow the dynamic teacher out of the student.

``inverse_reparameterize(student, ratio)`` returns a new module of the student's
own class, wider (and optionally multi-branch), that computes exactly the same
function at initialisation.  The student is not modified.

How (DESIGN.md, "The bidirectional mapping"):

1. the student runs once on a probe batch under the origin tracer
   (``trace.py``), which finds the fixed spaces (model input, outputs) and the
   hidden ones, and anything that has no rule;
2. every module with a rule is replaced by its widened counterpart, each weight
   built by a :class:`~.parammap.ParamMap` (kept for CBR);
3. eligible k×k stride-1 convs grow branches (``BranchConv2d``); optional
   N(0, noise) breaks the replicas' symmetry;
4. the teacher verifies itself on a fresh probe batch (eval mode) and IR raises
   :class:`IRVerificationError` when ``max|T_d(x) − S(x)| > tol · max|S(x)|``.

The returned teacher carries its :class:`ReparamPlan` as ``teacher.gpd_plan``;
``extract_student`` (CBR) and the hard strategy's student view use it.
"""
import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .errors import IRVerificationError, UnsupportedModuleError
from .kinds import MIXING, NORMS, UNIT_KINDS, module_kind
from .layers import (BRANCHES, GROUPED_BRANCHES, BranchConv2d,
                     CarriedActivation,
                     CarriedGroupNorm, CarriedLayerNorm, carried_norm_class)
from .parammap import DimMap, ParamMap
from .replica import ReplicaMap, check_ratio
from .trace import TraceResult, trace_student

__all__ = [
    'inverse_reparameterize', 'ReparamPlan', 'StateRule', 'default_forward',
    'default_probe_inputs', 'max_relative_deviation', 'DEFAULT_BRANCHES'
]

#: The branch set used by ``branches=True``: merging them costs element-wise ops
#: only.  ``'1x1_kxk'`` is available but costs a C_out·C_in²·k² product per merge.
DEFAULT_BRANCHES = ('1x1', '1x1_avg')


@dataclass
class StateRule:
    """How one entry of the student's state (parameter or buffer) comes from T_d.

    Attributes:
        student_name (str): Key in the student's ``state_dict`` / named tensors.
        teacher_name (str): Parameter / buffer of the teacher, or, with
            ``merged``, the path of a :class:`BranchConv2d`.
        pmap (ParamMap | None): CBR map; None means the same tensor.
        merged (bool): Take ``merged_weight()`` of the branch conv.
        is_param (bool): Whether the student entry is a parameter.
    """
    student_name: str
    teacher_name: str
    pmap: Optional[ParamMap] = None
    merged: bool = False
    is_param: bool = True


@dataclass
class ReparamPlan:
    """Everything CBR needs to fold a dynamic teacher back into its student.

    Attributes:
        template (nn.Module): A copy of the student at IR time (its structure;
            its tensors are replaced by derived ones).
        rules (list[StateRule]): One per student parameter and buffer.
        ratio (float): The expansion ratio.
        branches (tuple[str]): Extra branches grown on eligible convs.
        init (str): ``'preserve'`` or ``'scratch'``.
        noise (float): Std of the symmetry-breaking noise.
        noise_mode (str): ``'zero_sum'`` or ``'iid'`` (see ``_add_noise``).
        ir_deviation (float): max|T_d − S| / max|S| measured on the probe batch.
        widened (list[str]): Paths of the modules that were widened.
        branched (list[str]): Paths of the convs that grew branches.
    """
    template: nn.Module
    rules: List[StateRule]
    ratio: float
    branches: Tuple[str, ...] = ()
    init: str = 'preserve'
    noise: float = 0.0
    noise_mode: str = 'zero_sum'
    ir_deviation: float = float('nan')
    widened: List[str] = field(default_factory=list)
    branched: List[str] = field(default_factory=list)
    forward_fn: Optional[Callable] = None


def default_forward(model: nn.Module, inputs):
    """Run ``model`` on raw tensors: ``mode='tensor'`` for MMEngine models."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if 'mode' in params:
        return model(inputs, mode='tensor')
    return model(inputs)


def _find_img_size(model: nn.Module):
    for module in model.modules():
        size = getattr(module, 'img_size', None)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, (tuple, list)) and len(size) == 2 and \
                all(isinstance(s, int) for s in size):
            return tuple(size)
    return None


def default_probe_inputs(model: nn.Module, batch_size: int = 2,
                         generator: Optional[torch.Generator] = None):
    """A random probe batch for ``model``: images at its ``img_size`` or 64².

    The channel count is the ``in_channels`` of the first conv (``in_features``
    of the first linear, for an MLP).

    Raises:
        ValueError: If the model has neither a conv nor a linear layer.
    """
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spatial = {1: (64, ), 2: _find_img_size(model) or (64, 64),
                       3: (16, 16, 16)}[module.weight.dim() - 2]
            shape = (batch_size, module.in_channels) + tuple(spatial)
            return torch.randn(shape, generator=generator).to(device)
        if isinstance(module, nn.Linear):
            return torch.randn(batch_size, module.in_features,
                               generator=generator).to(device)
    raise ValueError(f'cannot make a probe batch for {type(model).__name__}: '
                     'no conv or linear layer; pass example_inputs')


def _leaves(out) -> List[torch.Tensor]:
    from torch.utils._pytree import tree_flatten
    leaves, _ = tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def max_relative_deviation(out_a, out_b) -> float:
    """``max|a − b| / max|b|`` over all tensors of two (nested) outputs.

    Absolute (``max|a − b|``) when ``b`` is identically zero, e.g. the logits of
    a zero-initialised head.
    """
    la, lb = _leaves(out_a), _leaves(out_b)
    if len(la) != len(lb) or any(a.shape != b.shape for a, b in zip(la, lb)):
        raise IRVerificationError(
            'teacher and student outputs differ in structure: '
            f'{[tuple(a.shape) for a in la]} vs {[tuple(b.shape) for b in lb]}')
    diff = max((a.detach().float() - b.detach().float()).abs().max().item()
               for a, b in zip(la, lb))
    ref = max(b.detach().float().abs().max().item() for b in lb)
    return diff / ref if ref > 0 else diff  # absolute when b is all zeros


class _Builder:
    """Builds the teacher module by module (one method per rule kind)."""

    def __init__(self, student: nn.Module, ratio: float, trace: TraceResult,
                 branches: Sequence[str], init: str, generator):
        self.student = student
        self.ratio = ratio
        self.trace = trace
        self.branches = tuple(branches)
        self.init = init
        self.generator = generator
        self.teacher = copy.deepcopy(student)
        self.rules: Dict[str, StateRule] = {}
        self.unsupported: List[Tuple[str, str, str]] = []
        self.bad_ratio: List[str] = []
        self.widened: List[str] = []
        self.branched: List[str] = []
        # (module path, param name, DimMap of the input dim or None)
        self.noisy: List[Tuple[str, str, Optional[DimMap]]] = []
        self.kinds = {p: module_kind(m) for p, m in student.named_modules()}

    # ------------------------------------------------------------------ utils
    def rmap(self, width: int, hidden: bool) -> ReplicaMap:
        return ReplicaMap.hidden(width, self.ratio) if hidden else \
            ReplicaMap.fixed(width)

    def replace(self, path: str, new: nn.Module):
        parent_path, _, name = path.rpartition('.')
        parent = self.teacher.get_submodule(parent_path)
        setattr(parent, name, new)

    def set_param(self, module: nn.Module, name: str, path: str, pmap: ParamMap,
                  student_value: torch.Tensor, noisy: bool = False):
        value = pmap.expand(student_value.detach())
        setattr(module, name, nn.Parameter(value, student_value.requires_grad))
        full = f'{path}.{name}' if path else name
        self.rules[full] = StateRule(full, full, None if pmap.identity else pmap)
        if noisy:
            self.noisy.append((path, name, pmap.dims.get(1)))

    def skip(self, path, module, why):
        self.unsupported.append((path, type(module).__name__, why))

    def channel_dim(self, path: str) -> int:
        """1 for NCHW inputs (after convs), -1 for token layouts (after linears)."""
        kinds = set()
        for tag in self.trace.input_origin.get(path, ()):
            if isinstance(tag, tuple):
                kinds.add('linear' if tag[0] == 'param' else
                          self.kinds.get(tag[1]))
        if kinds <= {'conv'} and kinds:
            return 1
        if kinds <= {'linear', 'attention'} and kinds:
            return -1
        return 1 if len(self.trace.input_shapes.get(path, ())) == 4 else -1

    # --------------------------------------------------------------- rules
    def mixing(self, path, mod, in_hidden, out_hidden):
        is_conv = self.kinds[path] == 'conv'
        c_in = mod.in_channels if is_conv else mod.in_features
        c_out = mod.out_channels if is_conv else mod.out_features
        groups = mod.groups if is_conv else 1
        in_map, out_map = self.rmap(c_in, in_hidden), self.rmap(c_out, out_hidden)
        s_out = out_map.scale(torch.float64)
        if groups == 1:
            row_factor = 1.0 / s_out
            dims = {0: DimMap.of(out_map, row_factor), 1: DimMap.of(in_map)}
            t_groups = 1
        else:
            cg_in, cg_out = c_in // groups, c_out // groups
            if in_map.teacher_width % cg_in or out_map.teacher_width % cg_out or \
                    in_map.teacher_width // cg_in != out_map.teacher_width // cg_out:
                self.bad_ratio.append(
                    f'{path} ({type(mod).__name__}, {groups} groups of {cg_in}->'
                    f'{cg_out} channels): ratio {self.ratio:g} gives '
                    f'{in_map.teacher_width}->{out_map.teacher_width} channels, '
                    'not a whole number of replicated groups')
                return
            t_groups = in_map.teacher_width // cg_in
            s_in = in_map.scale(torch.float64).reshape(t_groups, cg_in)
            if not torch.all(s_in == s_in[:, :1]):
                self.bad_ratio.append(f'{path}: replica counts differ within a group')
                return
            s_in_row = s_in[:, 0].repeat_interleave(cg_out)
            dims = {0: DimMap.of(out_map, s_in_row / s_out)}
        new = copy.deepcopy(mod)
        w_map = ParamMap(dims, mod.weight.shape)
        self.set_param(new, 'weight', path, w_map, mod.weight, noisy=True)
        if mod.bias is not None:
            b_map = ParamMap({0: DimMap.of(out_map, 1.0 / s_out)}, mod.bias.shape)
            self.set_param(new, 'bias', path, b_map, mod.bias)
        if is_conv:
            new.in_channels, new.out_channels = in_map.teacher_width, \
                out_map.teacher_width
            new.groups = t_groups
        else:
            new.in_features, new.out_features = in_map.teacher_width, \
                out_map.teacher_width
        branches = self.branches if groups == 1 else tuple(
            b for b in self.branches if b in GROUPED_BRANCHES)
        if branches and self._branchable(new):
            new = BranchConv2d(new, branches, self.init, self.generator)
            self.rules[f'{path}.weight'] = StateRule(
                f'{path}.weight', path, w_map, merged=True)
            self.noisy = [n for n in self.noisy if n[:2] != (path, 'weight')]
            self.noisy.extend((path, n, w_map.dims.get(1))
                              for n, _ in new.named_parameters()
                              if n.startswith('weight'))
            self.branched.append(path)
        self.replace(path, new)
        if in_hidden or out_hidden:
            self.widened.append(path)

    @staticmethod
    def _branchable(conv):
        return (type(conv) is nn.Conv2d or
                type(conv).__module__.startswith('mmcv.cnn')) and \
            isinstance(conv, nn.Conv2d) and \
            conv.kernel_size[0] == conv.kernel_size[1] > 1 and \
            conv.stride == (1, 1) and conv.dilation == (1, 1) and \
            conv.padding_mode == 'zeros'

    def norm(self, path, mod, hidden):
        kind = self.kinds[path]
        if kind == 'batchnorm':
            width = mod.num_features
        elif kind == 'groupnorm':
            width = mod.num_channels
        else:
            if len(mod.normalized_shape) != 1:
                self.skip(path, mod, 'LayerNorm over more than the last dim')
                return
            width = mod.normalized_shape[0]
        rmap = self.rmap(width, hidden)
        cw = rmap.teacher_width
        pmap = ParamMap({0: DimMap.of(rmap)}, (width, ))
        affine = getattr(mod, 'affine', getattr(mod, 'elementwise_affine', True))
        device, dtype = self._device_dtype(mod)
        kw = dict(device=device, dtype=dtype)
        if kind == 'batchnorm':
            new = carried_norm_class(mod)(cw, mod.eps, mod.momentum, affine,
                                          mod.track_running_stats, **kw)
            if isinstance(mod, nn.SyncBatchNorm):
                new.process_group = mod.process_group
        elif kind == 'groupnorm':
            group = width // mod.num_groups
            if cw % group:
                self.bad_ratio.append(
                    f'{path} (GroupNorm, {mod.num_groups} groups of {group}): '
                    f'ratio {self.ratio:g} gives {cw} channels, not a whole '
                    'number of groups')
                return
            new = CarriedGroupNorm(cw // group, cw, mod.eps, affine, **kw)
        else:
            has_bias = getattr(mod, 'bias', None) is not None
            new = CarriedLayerNorm(cw, mod.eps, affine, bias=has_bias, **kw)
            weight = None
            if not rmap.uniform:
                weight = (1.0 / (width * rmap.scale(torch.float64))).to(
                    dtype or torch.float32)
            new._init_weights(weight)
        new.train(mod.training)
        new._init_carry(rmap.scale())
        for name in ('weight', 'bias'):
            value = getattr(mod, name, None)
            if value is not None:
                self.set_param(new, name, path, pmap, value)
        if kind == 'batchnorm' and mod.track_running_stats:
            new.running_mean.copy_(pmap.expand(mod.running_mean))
            new.running_var.copy_(pmap.expand(mod.running_var))
            new.num_batches_tracked.copy_(mod.num_batches_tracked)
            new._init_student_stats(mod.running_mean, mod.running_var,
                                    mod.num_batches_tracked)
            for name in ('running_mean', 'running_var', 'num_batches_tracked'):
                self.rules[f'{path}.{name}'] = StateRule(
                    f'{path}.{name}', f'{path}.student_{name}', is_param=False)
        self.replace(path, new)
        if hidden:
            self.widened.append(path)

    @staticmethod
    def _device_dtype(mod):
        t = next(iter(list(mod.parameters()) + list(mod.buffers())), None)
        return (t.device, t.dtype if t.is_floating_point() else None) if \
            t is not None else (None, None)

    def activation(self, path, mod):
        shape = self.trace.input_shapes[path]
        dim = self.channel_dim(path)
        width = shape[dim]
        rmap = self.rmap(width, True)
        if rmap.is_fixed:
            return
        self.replace(path, CarriedActivation(copy.deepcopy(mod), rmap.scale(), dim))
        self.widened.append(path)

    def _scaled(self, path, mod, hidden=True):
        """A copy of a per-channel multiplier with its (C,) parameters copied by g."""
        new = copy.deepcopy(mod)
        for name, p in mod.named_parameters(recurse=False):
            if p.dim() == 1 and p.numel() > 1:
                rmap = self.rmap(p.numel(), hidden)
                self.set_param(new, name, path,
                               ParamMap({0: DimMap.of(rmap)}, p.shape), p)
        return new

    def channel_scale(self, path, mod):
        self.replace(path, self._scaled(path, mod))
        self.widened.append(path)

    def _linear(self, path, lin, rows: DimMap, in_map: ReplicaMap):
        """A copy of ``lin`` with rows mapped by ``rows``, inputs by ``in_map``."""
        new = copy.deepcopy(lin)
        self.set_param(new, 'weight', path,
                       ParamMap({0: rows, 1: DimMap.of(in_map)}, lin.weight.shape),
                       lin.weight, noisy=True)
        if lin.bias is not None:
            self.set_param(new, 'bias', path, ParamMap({0: rows}, lin.bias.shape),
                           lin.bias)
        new.in_features, new.out_features = in_map.teacher_width, rows.teacher_size
        return new

    def attention(self, path, mod, out_hidden):
        if getattr(mod, 'v_shortcut', False):
            self.skip(path, mod, 'v_shortcut attention has no rule')
            return
        qkv, proj = getattr(mod, 'qkv', None), getattr(mod, 'proj', None)
        if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear):
            self.skip(path, mod, 'attention without qkv / proj linears')
            return
        c_in, c, heads = mod.input_dims, mod.embed_dims, mod.num_heads
        d = mod.head_dims
        in_map, hid_map = self.rmap(c_in, True), self.rmap(c, True)
        out_map = self.rmap(c, out_hidden)
        if hid_map.teacher_width % d:
            self.bad_ratio.append(
                f'{path} ({type(mod).__name__}, {c} channels in {heads} heads of '
                f'{d}): ratio {self.ratio:g} gives {hid_map.teacher_width} '
                f'channels = {hid_map.teacher_width / d:g} heads; use a ratio '
                f'that is a multiple of 1/{heads}')
            return
        new = copy.deepcopy(mod)
        qk = DimMap.of(hid_map)  # q, k at student scale: exact scores
        v = DimMap.of(hid_map, 1.0 / hid_map.scale(torch.float64))
        new.qkv = self._linear(f'{path}.qkv', qkv, DimMap.concat([qk, qk, v]),
                               in_map)
        new.proj = self._linear(f'{path}.proj', proj,
                                DimMap.of(out_map, 1.0 / out_map.scale(torch.float64)),
                                hid_map)
        for name, child in mod.named_children():
            if name in ('qkv', 'proj'):
                continue
            kind = module_kind(child)
            if kind == 'channel_scale':  # LayerScale on the output
                setattr(new, name, self._scaled(f'{path}.{name}', child, out_hidden))
            elif kind != 'homogeneous':
                self.skip(f'{path}.{name}', child,
                          f'{kind or "no rule"} inside attention')
        new.input_dims = in_map.teacher_width
        new.embed_dims = hid_map.teacher_width
        new.num_heads = hid_map.teacher_width // d
        self.replace(path, new)
        self.widened.append(path)

    def free_param(self, name, p):
        width = p.shape[-1]
        rmap = self.rmap(width, True)
        factor = 1.0 / rmap.scale(torch.float64)
        pmap = ParamMap({p.dim() - 1: DimMap.of(rmap, factor)}, p.shape)
        owner_path, _, pname = name.rpartition('.')
        owner = self.teacher.get_submodule(owner_path)
        self.set_param(owner, pname, owner_path, pmap, p)
        self.widened.append(name)

    # --------------------------------------------------------------- driver
    def build(self):
        trace = self.trace
        for op, where, origin in trace.unsafe_ops:
            if trace.widened(origin):
                self.unsupported.append(
                    (where, 'op', f'functional {op}() on a widened tensor has no '
                     'rule (wrap it in a module with a rule)'))
        unit_prefixes = []
        for path, mod in self.student.named_modules():
            if any(path.startswith(p + '.') for p in unit_prefixes):
                continue
            kind = self.kinds[path]
            if kind in UNIT_KINDS:
                unit_prefixes.append(path)
            if kind == 'container' or path not in trace.executed:
                continue
            origin = trace.input_origin.get(path, frozenset())
            if trace.mixes_spaces(origin):
                self.skip(path, mod, 'joins the model input or an output with a '
                          'widened tensor')
                continue
            in_hidden = trace.widened(origin)
            if kind in MIXING:
                self.mixing(path, mod, in_hidden, trace.is_hidden_layer(path))
            elif kind == 'attention':
                if in_hidden:
                    self.attention(path, mod, trace.is_hidden_layer(path))
            elif not in_hidden:
                if kind == 'batchnorm':
                    self.norm(path, mod, False)  # own student statistics
            elif kind in NORMS:
                self.norm(path, mod, True)
            elif kind == 'nonhomogeneous':
                self.activation(path, mod)
            elif kind == 'channel_scale':
                self.channel_scale(path, mod)
            elif kind in ('homogeneous', 'scalar'):
                pass
            elif kind == 'gate':
                self.skip(path, mod, 'multiplicative gate (sigmoid / SE) has no '
                          'rule yet')
            else:
                self.skip(path, mod, 'no IR rule for this module type')
        for name in sorted(trace.free_params):
            p = self.student.get_parameter(name)
            if name in trace.hidden_params:
                if p.dim() < 2:
                    self.skip(name, p, 'free parameter with no channel dim')
                else:
                    self.free_param(name, p)
        if self.unsupported:
            raise UnsupportedModuleError(self.unsupported)
        if self.bad_ratio:
            raise ValueError(
                f'ratio {self.ratio:g} cannot be taken by this model:\n  - ' +
                '\n  - '.join(self.bad_ratio))


def _add_noise(teacher, noisy, std, generator, mode):
    """Add N(0, std) to the widened weights to break the replicas' symmetry.

    ``'iid'`` (the reference code): independent noise everywhere; T_d(x) moves
    away from S(x) by about ``std · sqrt(fan_in)`` per layer.  ``'zero_sum'``:
    the noise on the input replicas of each student channel sums to zero, so it
    cancels on the (exactly replicated) activations and T_d(x) == S(x) still,
    while replicas' weights — hence their gradients from the first step on —
    differ.  Weights with no input replicas (the stem, depthwise convs) get
    none in this mode.
    """
    with torch.no_grad():
        for path, name, in_dim in noisy:
            p = getattr(teacher.get_submodule(path), name)
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            if mode == 'zero_sum':
                if in_dim is None:
                    continue
                index = in_dim.index
                sums = torch.zeros(p.shape[0], in_dim.student_size, *p.shape[2:],
                                   dtype=noise.dtype).index_add_(1, index, noise)
                counts = torch.bincount(index, minlength=in_dim.student_size)
                shape = [1, -1] + [1] * (p.dim() - 2)
                mean = sums / counts.to(noise.dtype).reshape(shape)
                noise = noise - mean.index_select(1, index)
            p.add_((noise * std).to(p))


def _complete_rules(student, teacher, rules: Dict[str, StateRule]):
    """Identity rules for every student tensor that IR left as it was."""
    out = []
    teacher_params = dict(teacher.named_parameters(remove_duplicate=False))
    for name, _ in student.named_parameters(remove_duplicate=False):
        rule = rules.get(name) or StateRule(name, name)
        if not rule.merged and rule.teacher_name not in teacher_params:
            raise RuntimeError(f'IR lost parameter {name}')
        out.append(rule)
    for name, _ in student.named_buffers(remove_duplicate=False):
        rule = rules.get(name) or StateRule(name, name, is_param=False)
        rule.is_param = False
        out.append(rule)
    return out


class _Modes:
    """Remember and restore the training flag of every submodule."""

    def __init__(self, model):
        self.flags = [(m, m.training) for m in model.modules()]

    def restore(self):
        for m, flag in self.flags:
            m.training = flag


def inverse_reparameterize(student: nn.Module,
                           ratio: Union[int, float],
                           *,
                           branches: Union[bool, Sequence[str], None] = None,
                           noise: float = 0.0,
                           noise_mode: str = 'zero_sum',
                           init: str = 'preserve',
                           example_inputs: Any = None,
                           forward_fn: Optional[Callable] = None,
                           verify: bool = True,
                           tol: Optional[float] = None,
                           generator: Optional[torch.Generator] = None
                           ) -> nn.Module:
    """IR: build the dynamic teacher T_d of ``student``.

    Args:
        student (nn.Module): A whole model (mmpretrain ``ImageClassifier``, mmdet
            detector, plain ``nn.Module``). Not modified.
        ratio (int | float): Width ratio r >= 1; hidden widths become
            ``round(r·C)`` (fractional ratios through per-channel replica
            counts; attention needs whole heads, GroupNorm whole groups).
        branches (bool | Sequence[str] | None): Grow OREPA-style branches on k×k
            stride-1 convs with groups 1: ``True`` for :data:`DEFAULT_BRANCHES`,
            or names from ``layers.BRANCHES``. Defaults to None (no branches).
        noise (float): Std of N(0, noise) added to every widened weight to break
            the replicas' symmetry (the reference code uses 1e-6). Defaults to 0.
        noise_mode (str): ``'zero_sum'`` (noise cancels over input replicas:
            T_d stays exactly S at init) or ``'iid'`` (the reference code's).
            Defaults to ``'zero_sum'``.
        init (str): ``'preserve'`` (new branch scales 0: a pretrained student) or
            ``'scratch'`` (non-zero branch scales, kernels solved so T_d still
            equals S). Defaults to ``'preserve'``.
        example_inputs: Probe batch for tracing and the self-check; defaults to
            :func:`default_probe_inputs`.
        forward_fn (callable): ``(model, inputs) -> outputs``; defaults to
            :func:`default_forward` (``mode='tensor'`` for MMEngine models).
        verify (bool): Run the self-check. Defaults to True.
        tol (float, optional): Relative tolerance of the self-check; defaults to
            1e-5, or 1e-4 with ``'iid'`` noise.
        generator (torch.Generator, optional): RNG for noise and new branches.

    Returns:
        nn.Module: The dynamic teacher, of the student's class, with
        ``teacher.gpd_plan`` (:class:`ReparamPlan`).

    Raises:
        ValueError: Bad ratio (< 1, NaN, inf, or one the model cannot take).
        UnsupportedModuleError: Modules / ops with no rule (all listed).
        IRVerificationError: The self-check failed.
    """
    ratio = check_ratio(ratio)
    if init not in ('preserve', 'scratch'):
        raise ValueError(f"init must be 'preserve' or 'scratch', got {init!r}")
    if branches is True:
        branches = DEFAULT_BRANCHES
    branches = tuple(branches or ())
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown:
        raise ValueError(f'unknown branches {unknown}; choose from {sorted(BRANCHES)}')
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f'noise must be a finite std >= 0, got {noise}')
    if noise_mode not in ('zero_sum', 'iid'):
        raise ValueError(f"noise_mode must be 'zero_sum' or 'iid', got {noise_mode!r}")
    forward_fn = forward_fn or default_forward
    if example_inputs is None:
        example_inputs = default_probe_inputs(student, generator=generator)

    modes = _Modes(student)
    student.eval()
    try:
        trace = trace_student(student, example_inputs, forward_fn)
    finally:
        modes.restore()
    builder = _Builder(student, ratio, trace, branches, init, generator)
    builder.build()
    teacher = builder.teacher
    if noise > 0:
        _add_noise(teacher, builder.noisy, noise, generator, noise_mode)
    plan = ReparamPlan(
        template=copy.deepcopy(student),
        rules=_complete_rules(student, teacher, builder.rules),
        ratio=ratio, branches=branches, init=init, noise=noise,
        noise_mode=noise_mode,
        widened=builder.widened, branched=builder.branched,
        forward_fn=forward_fn)
    teacher.gpd_plan = plan
    if verify:
        noisy = noise > 0 and noise_mode == 'iid'
        tol = tol if tol is not None else (1e-4 if noisy else 1e-5)
        plan.ir_deviation = verify_teacher(student, teacher, example_inputs,
                                           forward_fn, tol)
    return teacher


def verify_teacher(student, teacher, inputs, forward_fn, tol) -> float:
    """Compare T_d and S (eval mode, no grad) on ``inputs``; raise beyond ``tol``."""
    s_modes, t_modes = _Modes(student), _Modes(teacher)
    student.eval()
    teacher.eval()
    try:
        with torch.no_grad():
            dev = max_relative_deviation(forward_fn(teacher, inputs),
                                         forward_fn(student, inputs))
    finally:
        s_modes.restore()
        t_modes.restore()
    if not dev <= tol:
        raise IRVerificationError(
            f'the dynamic teacher deviates from the student by {dev:.3g} '
            f'(max relative) on the probe batch, above the tolerance {tol:g}. '
            'Some operation of this model is not covered by an exact rule.')
    return dev
