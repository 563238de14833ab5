"""The per-kind rules of IR: one method per kind of ``kinds.py``, given layouts.

Every rule receives the planned :class:`~.layout.Layout` of its module's input
and output (``propagate.py``) and never builds one from a width.  With input
layout ``(g_in, f_in)`` (``n_in`` replicas per student channel) and output
layout ``(g_out, f_out)``:

* **mixing** (conv, linear): ``Ŵ[j,k] = W[g_out(j), g_in(k)] · f_out(j) /
  (f_in(k) · m(k))``, ``b̂_j = b_{g_out(j)} · f_out(j)``, where ``m(k)`` counts
  the input replicas of ``g_in(k)`` that meet in one output (``n_in`` for a
  dense layer, those inside the teacher group for a grouped conv).  Then
  ``Σ_k Ŵ[j,k] x̂_k = f_out(j) · y_{g_out(j)}`` for any layouts.
* **norms**: ``y = N(x̂ / f) · f`` with γ, β (running statistics) copied by
  ``g``; LayerNorm weights its statistics ``1 / (C · n_{g(j)})`` when replica
  counts differ; GroupNorm / grouped convs need teacher groups that each carry
  one student group.
* **non-homogeneous activations**: ``f(x̂ / f) · f``; **channel scales**
  (LayerScale, PReLU): parameters copied by ``g``.
* **attention** (mmpretrain ``MultiheadAttention`` as a unit): ``r·h`` heads
  of the same size, q and k exact (so the scores are), v carried.
* **free parameters**: expanded along their planned dim.

Each rule records a :class:`~.ir.StateRule` with the :class:`~.parammap.ParamMap`
that CBR inverts.
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .copying import copy_structure, own_tensors
from .kinds import module_kind
from .layers import (GROUPED_BRANCHES, BranchConv2d, CarriedActivation,
                     CarriedGroupNorm, CarriedLayerNorm, CarriedLayerNorm2d,
                     carried_norm_class)
from .layout import Layout, fixed
from .parammap import DimMap, ParamMap
from .plan import StateRule

__all__ = ['Builder']


def dimmap(lay: Layout, factor: Optional[torch.Tensor] = None) -> DimMap:
    return DimMap(lay.index, lay.factor if factor is None else factor,
                  lay.first())


class Builder:
    """Builds the teacher module by module from a :class:`~.propagate.LayoutPlan`."""

    def __init__(self, student: nn.Module, ratio: float, plan, branches,
                 init: str, generator):
        self.student = student
        self.ratio = ratio
        self.plan = plan
        self.branches = tuple(branches)
        self.init = init
        self.generator = generator
        self.teacher = copy_structure(student)  # own_tensors after build()
        self.rules: Dict[str, StateRule] = {}
        self.unsupported: List[Tuple[str, str, str]] = list(plan.unsupported)
        self.bad_ratio: List[str] = list(plan.bad_ratio)
        self.widened: List[str] = []
        self.branched: List[str] = []
        self.noisy: List[Tuple[str, str, Optional[DimMap]]] = []
        self.layouts: Dict[str, Tuple[Optional[int], Optional[Layout]]] = {}
        self._parents: Optional[Dict[int, list]] = None

    # ------------------------------------------------------------------ utils
    def replace(self, path: str, new: nn.Module):
        """Put ``new`` wherever the teacher refers to the module at ``path``
        (a module registered under two names is replaced under both)."""
        if self._parents is None:  # id(child) -> [(parent, name)], built once
            self._parents = {}
            self._index(self.teacher)
        old = self.teacher.get_submodule(path)
        for parent, name in self._parents.pop(id(old), ()):
            parent._modules[name] = new
        self._index(new)

    def _index(self, root: nn.Module):
        for module in root.modules():
            for name, child in module._modules.items():
                if child is not None:
                    self._parents.setdefault(id(child), []).append(
                        (module, name))

    def set_param(self, module: nn.Module, name: str, path: str, pmap: ParamMap,
                  student_value: torch.Tensor, noisy: bool = False,
                  in_dim: int = 1):
        value = pmap.expand(student_value.detach()).to(student_value.dtype)
        if isinstance(student_value, nn.Parameter):
            setattr(module, name, nn.Parameter(value, student_value.requires_grad))
        else:
            module._buffers[name] = value
        full = f'{path}.{name}' if path else name
        self.rules[full] = StateRule(full, full, None if pmap.identity else pmap,
                                     is_param=isinstance(student_value,
                                                         nn.Parameter))
        if noisy:  # (the input dim of a transposed conv's weight is 0)
            self.noisy.append((path, name, pmap.dims.get(in_dim)))

    def skip(self, path, module, why):
        self.unsupported.append((path, type(module).__name__, why))

    @staticmethod
    def _device_dtype(mod):
        t = next(iter(list(mod.parameters()) + list(mod.buffers())), None)
        return (t.device, t.dtype if t.is_floating_point() else None) if \
            t is not None else (None, None)

    # ------------------------------------------------------------------ driver
    def build(self):
        for path, rec in self.plan.modules.items():
            mod = self.student.get_submodule(path)
            self.layouts[path] = (rec.out_dim, rec.out_layout)
            try:
                self._build_one(path, mod, rec)
            except (ValueError, RuntimeError, TypeError, IndexError) as e:
                self.skip(path, mod, f'{rec.kind} rule failed: {e}')
        for name, (d, lay) in self.plan.params.items():
            try:
                self.free_param(name, d, lay)
            except (ValueError, RuntimeError, IndexError) as e:
                self.unsupported.append((name, 'parameter', str(e)))
        own_tensors(self.teacher, self.student)  # what no rule replaced

    def _build_one(self, path, mod, rec):
        kind = rec.kind
        if kind in ('conv', 'linear'):
            self.mixing(path, mod, rec)
        elif kind == 'attention':
            if rec.in_layout is not None or rec.out_layout is not None:
                self.attention(path, mod, rec)
        elif kind == 'batchnorm':
            self.norm(path, mod, rec)
        elif kind in ('layernorm', 'groupnorm', 'layernorm2d'):
            if rec.in_layout is not None and rec.acts_on_layout:
                self.norm(path, mod, rec)
        elif kind == 'nonhomogeneous':
            if rec.in_layout is not None and not rec.in_layout.is_exact:
                self.replace(path, CarriedActivation(
                    copy_structure(mod), 1.0 / rec.in_layout.factor,
                    rec.in_dim))
                self.widened.append(path)
        elif kind == 'channel_scale':
            if rec.in_layout is not None and rec.acts_on_layout:
                self.channel_scale(path, mod, rec.in_layout)

    # ------------------------------------------------------------------ rules
    def mixing(self, path, mod, rec):
        if not rec.acts_on_layout:
            return  # acts on another dim (token mixing): unchanged
        is_conv = rec.kind == 'conv'
        c_in = mod.in_channels if is_conv else mod.in_features
        c_out = mod.out_channels if is_conv else mod.out_features
        in_l = rec.in_layout or fixed(c_in)
        out_l = rec.out_layout or fixed(c_out)
        if in_l.is_identity and out_l.is_identity:
            return
        groups = mod.groups if is_conv else 1
        # ConvTranspose: weight (C_in, C_out / groups, k...), the same rule
        # with dims 0 and 1 swapped
        transposed = is_conv and bool(getattr(mod, 'transposed', False))
        if transposed and groups > 1:
            self.skip(path, mod, 'a grouped transposed conv has no rule')
            return
        if groups > 1 and rec.in_layout is not None and rec.out_layout is None:
            return  # the planner found no teacher groups (a bad ratio)
        out_d, in_d = (1, 0) if transposed else (0, 1)
        if groups == 1:
            n_in = in_l.counts()[in_l.index].double()
            dims = {out_d: dimmap(out_l),
                    in_d: dimmap(in_l, 1.0 / (in_l.factor * n_in))}
            t_groups = 1
        else:
            found = self._grouped(path, mod, in_l, out_l)
            if found is None:
                return
            dims, t_groups = found
        new = copy_structure(mod)
        w_map = ParamMap(dims, mod.weight.shape)
        self.set_param(new, 'weight', path, w_map, mod.weight, noisy=True,
                       in_dim=in_d)
        if mod.bias is not None:
            self.set_param(new, 'bias', path,
                           ParamMap({0: dimmap(out_l)}, mod.bias.shape), mod.bias)
        if is_conv:
            new.in_channels, new.out_channels = in_l.teacher_width, \
                out_l.teacher_width
            new.groups = t_groups
        else:
            new.in_features, new.out_features = in_l.teacher_width, \
                out_l.teacher_width
        branches = self.branches if groups == 1 else tuple(
            b for b in self.branches if b in GROUPED_BRANCHES)
        if branches and self._branchable(new):
            new = BranchConv2d(new, branches, self.init, self.generator)
            self.rules[f'{path}.weight'] = StateRule(
                f'{path}.weight', path, w_map, merged=True)
            # noise stays on ``weight`` (the replicated k×k kernel) only: the
            # new branches' weights are drawn per teacher position already
            self.branched.append(path)
        self.replace(path, new)
        self.widened.append(path)

    def _grouped(self, path, mod, in_l: Layout, out_l: Layout):
        """Teacher groups for a grouped conv: each carries one student group.

        Tries the student's group size first (groups replicated: ``r·G``
        groups), then the student's group count (each group widened).
        """
        groups = mod.groups
        cg_in, cg_out = mod.in_channels // groups, mod.out_channels // groups
        ct_in, ct_out = in_l.teacher_width, out_l.teacher_width
        for t_groups in dict.fromkeys((ct_in // cg_in, groups)):
            if t_groups < 1 or ct_in % t_groups or ct_out % t_groups:
                continue
            tg_in, tg_out = ct_in // t_groups, ct_out // t_groups
            gi = in_l.index.reshape(t_groups, tg_in)
            go = out_l.index.reshape(t_groups, tg_out)
            sg = gi // cg_in  # student group of each teacher input channel
            if not bool((sg == sg[:, :1]).all()) or not bool(
                    (go // cg_out == sg[:, :1]).all()):
                continue
            local = gi - sg * cg_in  # (t_groups, tg_in) student-local index
            # every student channel of the group present in each teacher group
            counts = torch.zeros(t_groups, cg_in, dtype=torch.long).scatter_add_(
                1, local, torch.ones_like(local))
            if not bool((counts > 0).all()):
                continue
            m = counts.gather(1, local).double()  # replicas meeting per output
            col = 1.0 / (in_l.factor.reshape(t_groups, tg_in) * m)
            per_group = col[:, :1]  # moved into the rows of the group
            col = col / per_group
            if not bool((local == local[:1]).all()) or not torch.allclose(
                    col, col[:1].expand_as(col)):
                continue  # per-group maps must be the same for a ParamMap
            first_local = torch.full((cg_in, ), tg_in, dtype=torch.long)
            first_local = first_local.scatter_reduce(
                0, local[0], torch.arange(tg_in), 'amin')
            rows = out_l.factor * per_group[:, 0].repeat_interleave(tg_out)
            dims = {0: dimmap(out_l, rows),
                    1: DimMap(local[0], col[0], first_local)}
            return dims, t_groups
        self.bad_ratio.append(
            f'{path} ({type(mod).__name__}, {groups} groups of {cg_in}->{cg_out} '
            f'channels): ratio {self.ratio:g} gives {ct_in}->{ct_out} channels '
            'that no whole number of replicated groups can carry')
        return None

    @staticmethod
    def _branchable(conv):
        # only convs that compute nn.Conv2d's forward (no adaptive padding...)
        return isinstance(conv, nn.Conv2d) and \
            type(conv).forward is nn.Conv2d.forward and \
            conv.kernel_size[0] == conv.kernel_size[1] > 1 and \
            conv.stride == (1, 1) and conv.dilation == (1, 1) and \
            conv.padding_mode == 'zeros'

    def norm(self, path, mod, rec):
        kind = rec.kind
        if kind == 'batchnorm':
            width = mod.num_features
        elif kind == 'groupnorm':
            width = mod.num_channels
        elif kind == 'layernorm2d':
            width = mod.normalized_shape[0]
        else:
            width = mod.normalized_shape[0]
        lay = rec.in_layout if rec.in_layout is not None else fixed(width)
        cw = lay.teacher_width
        pmap = ParamMap({0: dimmap(lay.exact())}, (width, ))
        affine = getattr(mod, 'affine', getattr(mod, 'elementwise_affine', True))
        device, dtype = self._device_dtype(mod)
        kw = dict(device=device, dtype=dtype)
        if kind == 'batchnorm':
            try:
                cls = carried_norm_class(mod)
            except TypeError as e:
                self.skip(path, mod, str(e))
                return
            new = cls(cw, mod.eps, mod.momentum, affine,
                      mod.track_running_stats, **kw)
            if isinstance(mod, nn.SyncBatchNorm):
                new.process_group = mod.process_group
        elif kind == 'groupnorm':
            group = width // mod.num_groups
            n = lay.counts()
            found = None
            for t_groups in dict.fromkeys((cw // group, mod.num_groups)):
                if cw % t_groups:
                    continue
                g = lay.index.reshape(t_groups, cw // t_groups)
                sg = g // group
                if not bool((sg == sg[:, :1]).all()):
                    continue
                local = g - sg * group
                c = torch.zeros(t_groups, group, dtype=torch.long).scatter_add_(
                    1, local, torch.ones_like(g))
                if bool((c > 0).all()):
                    found = t_groups
                    m = c.gather(1, local).double()  # multiplicity in the group
                    stat_weight = None if bool((c == c[:, :1]).all()) else \
                        (1.0 / (group * m)).reshape(-1)
                    break
            del n
            if found is None:
                self.bad_ratio.append(
                    f'{path} (GroupNorm, {mod.num_groups} groups of {group}): '
                    f'ratio {self.ratio:g} gives {cw} channels that no whole '
                    'number of replicated groups can carry')
                return
            new = CarriedGroupNorm(found, cw, mod.eps, affine, **kw)
            new._init_weights(None if stat_weight is None else
                              stat_weight.to(dtype or torch.float32))
        else:
            has_bias = getattr(mod, 'bias', None) is not None
            cls = CarriedLayerNorm2d if kind == 'layernorm2d' else \
                CarriedLayerNorm
            new = cls(cw, mod.eps, affine, bias=has_bias, **kw)
            counts = lay.counts()
            weight = None
            if not bool((counts == counts[0]).all()):
                weight = (1.0 / (width * counts[lay.index].double())).to(
                    dtype or torch.float32)
            new._init_weights(weight)
        new.train(mod.training)
        new._init_carry((1.0 / lay.factor).float())
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
        if rec.in_layout is not None:
            self.widened.append(path)

    def channel_scale(self, path, mod, lay: Layout):
        new = copy_structure(mod)
        for name, p in mod.named_parameters(recurse=False):
            if p.dim() == 1 and p.numel() == lay.width:
                self.set_param(new, name, path,
                               ParamMap({0: dimmap(lay.exact())}, p.shape), p)
        self.replace(path, new)
        self.widened.append(path)

    def _linear(self, path, lin, rows: DimMap, in_l: Layout):
        """A copy of ``lin`` with rows mapped by ``rows``, inputs by ``in_l``."""
        new = copy_structure(lin)
        n_in = in_l.counts()[in_l.index].double()
        self.set_param(new, 'weight', path,
                       ParamMap({0: rows, 1: dimmap(in_l, 1.0 / (
                           in_l.factor * n_in))}, lin.weight.shape),
                       lin.weight, noisy=True)
        if lin.bias is not None:
            self.set_param(new, 'bias', path, ParamMap({0: rows}, lin.bias.shape),
                           lin.bias)
        new.in_features, new.out_features = in_l.teacher_width, rows.teacher_size
        return new

    def attention(self, path, mod, rec):
        from .layout import hidden
        if getattr(mod, 'v_shortcut', False):
            self.skip(path, mod, 'v_shortcut attention has no rule')
            return
        qkv, proj = getattr(mod, 'qkv', None), getattr(mod, 'proj', None)
        if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear):
            self.skip(path, mod, 'attention without qkv / proj linears')
            return
        c_in, c, heads = mod.input_dims, mod.embed_dims, mod.num_heads
        d = mod.head_dims
        in_l = rec.in_layout or fixed(c_in)
        out_l = rec.out_layout or fixed(c)
        hid = hidden(c, self.ratio)
        if hid.teacher_width % d:
            self.bad_ratio.append(
                f'{path} ({type(mod).__name__}, {c} channels in {heads} heads of '
                f'{d}): ratio {self.ratio:g} gives {hid.teacher_width} '
                f'channels = {hid.teacher_width / d:g} heads; use a ratio '
                f'that is a multiple of 1/{heads}')
            return
        new = copy_structure(mod)
        qk = dimmap(hid.exact())  # q, k at student scale: exact scores
        v = dimmap(hid)
        new.qkv = self._linear(f'{path}.qkv', qkv, DimMap.concat([qk, qk, v]),
                               in_l)
        new.proj = self._linear(f'{path}.proj', proj, dimmap(out_l), hid)
        for name, child in mod.named_children():
            if name in ('qkv', 'proj'):
                continue
            kind = module_kind(child)
            if kind == 'channel_scale':  # LayerScale on the output
                sub = copy_structure(child)
                for pname, p in child.named_parameters(recurse=False):
                    if p.dim() == 1 and p.numel() == c:
                        self.set_param(sub, pname, f'{path}.{name}', ParamMap(
                            {0: dimmap(out_l.exact())}, p.shape), p)
                setattr(new, name, sub)
            elif kind not in ('homogeneous', None) or any(
                    True for _ in child.parameters()):
                self.skip(f'{path}.{name}', child,
                          f'{kind or "no rule"} inside attention')
        new.input_dims = in_l.teacher_width
        new.embed_dims = hid.teacher_width
        new.num_heads = hid.teacher_width // d
        self.replace(path, new)
        self.widened.append(path)

    def free_param(self, name, d, lay: Layout):
        try:
            p = self.student.get_parameter(name)
        except AttributeError:  # not a parameter: a buffer
            p = self.student.get_buffer(name)
        pmap = ParamMap({d: dimmap(lay)}, p.shape)
        owner_path, _, pname = name.rpartition('.')
        owner = self.teacher.get_submodule(owner_path) if owner_path \
            else self.teacher
        self.set_param(owner, pname, owner_path, pmap, p)
        self.widened.append(name)
