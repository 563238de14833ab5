"""Plan the layouts of a dynamic teacher by running the student and the teacher's code.

IR has to know, for every module it widens, the :class:`~.layout.Layout` of its
input and of its output.  Functional code between modules (``torch.cat``,
``x.chunk(2, 1)``, channel shuffles, ``q @ k.transpose(-2, -1)``, ``x * gamma``,
``torch.split(x, self.width)``) moves, splits and multiplies channels, so the
layouts cannot be derived from widths.  They are found by running the code:

1. **Student run.**  The student runs once on the probe batch under a
   :class:`~torch.overrides.TorchFunctionMode` that gives every tensor element an
   *id* (a float64 tag tensor of the same shape): the model inputs, the output of
   every module with a rule (conv, linear, norm, non-homogeneous activation,
   attention unit: its inside is not traced), every parameter used outside such a
   module, and the output of every computing op get fresh ids; data-movement ops
   (view, permute, cat, split, getitem, unfold, roll, ...) are applied to the ids
   as they are to the data.
2. **Teacher run.**  A copy of the student whose rule modules are stubs runs the
   same code (its own shapes, its own ``x.shape[1] // 2``, attributes such as
   ``num_heads`` updated by :mod:`.attrs`).  A stub returns ``expand`` of the
   student module's recorded output in the layout chosen for it, with *tags*:
   for every teacher element, the id of the student element it carries and its
   factor.  Data-movement ops are applied to the tags as to the data, so "ops act
   on layouts the way they act on tensors" holds by construction.  At every
   module input and computing op, the teacher tags are paired with the student's
   ids (:func:`canonical`): the result is one Layout along one dimension, or a
   named failure.
3. **Choices and constraints.**  The layout of a mixing layer's output is a
   choice (:class:`Choice`): fixed (it reaches the model's outputs), cyclic or
   grouped (a channel split at student channel p needs block | p), carried or
   exact (a non-homogeneous function, a constant added, or a product whose
   factors do not cancel needs an exact input).  The teacher run reports the
   choices that must change; they are applied and the teacher run repeated until
   nothing changes.  Free parameters (``cls_token``, ``gamma``, position
   embeddings, relative-position bias tables) follow the tensor they meet.
4. **Failures name their cause.**  The outputs of an op that fails, and every
   tensor computed from them (integer indices too: a k-NN graph's neighbours
   chosen by a refused ``normalize``), are *tainted*: the ops reading them run
   unchecked and the modules reading them take them as unwidened, so a
   refusal lists the op at fault in each block, not everything after it (and
   pairing those tensors, which never pair, is most of a refusal's cost).

The result, :class:`LayoutPlan`, lists per module call its kind and input /
output layouts, and per free parameter its layout; ``ir.py`` builds the teacher
from it.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from .indexing import select_along
from .kinds import MIXING, NORMS, module_kind, unit_kind
from .layout import Layout, fixed, hidden

__all__ = ['LayoutPlan', 'ModuleRecord', 'Choice', 'plan_layouts',
           'PlanningError']

# ----------------------------------------------------------------- op sets
_DTYPE_MOVES = {'to', 'float', 'double', 'half', 'bfloat16', 'type_as', 'type',
                'cpu', 'cuda', 'contiguous', 'clone', 'detach', 'detach_',
                'requires_grad_', 'float_power_'}
_MOVES = {
    'view', 'reshape', 'view_as', 'reshape_as', 'permute', 'transpose',
    'transpose_', 'swapaxes', 'movedim', 'moveaxis', 'flatten', 'unflatten',
    'squeeze', 'squeeze_', 'unsqueeze', 'unsqueeze_', 'expand', 'expand_as',
    'repeat', 'tile', 'roll', 'flip', 'cat', 'concat', 'concatenate', 'stack',
    'split', 'split_with_sizes', 'chunk', 'tensor_split', 'unbind', 'narrow',
    'select', '__getitem__', 'index_select', 'gather', 'unfold', 'fold',
    'pixel_shuffle', 'pixel_unshuffle', 'channel_shuffle', 'repeat_interleave',
    't', 'take_along_dim', '__setitem__', 'pad', 'masked_select'
}
#: ops that can drop elements: their outputs are checked for split borders
_SPLITS = {'split', 'split_with_sizes', 'chunk', 'tensor_split', 'unbind',
           'narrow', 'select', '__getitem__', 'index_select', 'gather',
           'take_along_dim', 'masked_select'}
#: computing ops that act on each slice along the layout dim with a positively
#: homogeneous (or linear) map: the layout passes, factors kept
_CHANNELWISE = {
    'relu', 'relu_', 'leaky_relu', 'leaky_relu_', 'dropout', 'dropout_',
    'dropout1d', 'dropout2d', 'dropout3d', 'feature_dropout', 'max_pool1d',
    'max_pool2d', 'max_pool3d', 'avg_pool1d', 'avg_pool2d', 'avg_pool3d',
    'adaptive_avg_pool1d', 'adaptive_avg_pool2d', 'adaptive_avg_pool3d',
    'adaptive_max_pool1d', 'adaptive_max_pool2d', 'adaptive_max_pool3d',
    'max_pool2d_with_indices', 'interpolate', 'upsample', 'upsample_nearest',
    'upsample_bilinear', 'neg', '__neg__', 'abs', 'lp_pool2d',
    'sum', 'mean', 'amax', 'amin', 'max', 'min', 'cumsum', 'nan_to_num'
}
_REDUCTIONS = {'sum', 'mean', 'amax', 'amin', 'max', 'min'}
#: element-wise functions that are not homogeneous: exact input needed
_NONLINEAR = {
    'gelu', 'silu', 'silu_', 'sigmoid', 'sigmoid_', 'hardsigmoid', 'hardswish',
    'hardswish_', 'tanh', 'tanh_', 'exp', 'exp_', 'log', 'sqrt', 'rsqrt', 'pow',
    '__pow__', '__rpow__', 'softplus', 'erf', 'relu6', 'hardtanh', 'hardtanh_',
    'elu', 'elu_', 'selu', 'celu', 'mish', 'softmax', 'log_softmax', 'sin',
    'cos', 'reciprocal', 'clamp', 'clamp_', 'clip', 'layer_norm', 'sign', 'square', 'logsigmoid',
    'glu', 'softsign', 'tanhshrink', 'threshold', 'rrelu', 'clamp_min',
    'clamp_max'
}
_ADDITIVE = {'add', '__add__', '__radd__', '__iadd__', 'add_', 'sub', '__sub__',
             '__rsub__', '__isub__', 'sub_', 'maximum', 'minimum', 'where',
             'masked_fill', 'masked_fill_', 'rsub'}
_MULTIPLICATIVE = {'mul', '__mul__', '__rmul__', '__imul__', 'mul_', 'multiply'}
_DIVISION = {'div', '__truediv__', '__itruediv__', 'div_', 'true_divide',
             '__rtruediv__', '__div__'}
_MATMUL = {'matmul', '__matmul__', '__rmatmul__', 'bmm'}
_SCALE_FREE = {'normalize'}
_SDPA = {'scaled_dot_product_attention'}
#: ops refused on widened tensors, with the reason
_REFUSED = {
    'alpha_dropout': 'affine in train mode (a · mask-dependent shift)',
    'feature_alpha_dropout': 'affine in train mode (a · mask-dependent shift)',
}
#: the tags of a tensor computed from a failed op (expanded: no memory)
_NO_ELEMENT = torch.tensor(-1.0, dtype=torch.float64)
_ONE = torch.tensor(1.0, dtype=torch.float64)
_IGNORED = {'size', 'dim', 'numel', '__len__', '__iter__', '__get__',
            'is_floating_point', 'get_device', 'is_contiguous',
            'element_size', 'storage_offset', 'stride', 'data_ptr',
            'untyped_storage', '__format__', '__bool__', 'new_zeros',
            'new_ones', 'new_empty', 'new_full', 'new_tensor', 'zeros_like',
            'ones_like', 'empty_like', 'full_like', 'rand_like', 'randn_like',
            'dim_order', '__reduce_ex__', '__deepcopy__', 'tolist', 'item',
            'eq', '__eq__', 'ne', '__ne__', 'gt', '__gt__', 'lt', '__lt__',
            'ge', '__ge__', 'le', '__le__', 'isnan', 'isinf', 'all', 'any',
            'argmax', 'argmin', 'topk', 'sort', 'argsort', 'nonzero',
            'bernoulli_', 'uniform_', 'normal_', 'floor_', 'floor', 'long',
            'int', 'bool', 'numpy', '__index__', '__int__', '__float__',
            'has_names', 'names', 'ndimension', 'nelement', 'equal'}


class PlanningError(Exception):
    """A conflict the choices cannot resolve (carried into UnsupportedModuleError)."""


@dataclass
class Choice:
    """The layout choice of one source (a mixing layer's output space)."""
    fixed: bool = False
    order: str = 'cyclic'
    block: int = 0  # 0: no block constraint (the whole width)
    exact: bool = False

    def layout(self, width: int, ratio: float) -> Layout:
        if self.fixed:
            return fixed(width)
        if self.order == 'grouped' or (self.block and self.block < width):
            block = self.block or width
            return hidden(width, ratio, 'grouped', block, self.exact)
        return hidden(width, ratio, 'cyclic', exact=self.exact)


@dataclass
class ModuleRecord:
    """One call of a module with a rule, as planned.

    Attributes:
        path (str): Module path.
        kind (str): Its rule kind (``kinds.py``).
        in_dim (int | None): Layout dim of the input (None: not widened).
        in_layout (Layout | None): Layout of the input.
        out_dim (int | None): Layout dim of the output.
        out_layout (Layout | None): Layout of the output.
        acts_on_layout (bool): Whether the module mixes / normalises along the
            layout dim (False: it acts on another dim and passes the layout).
    """
    path: str
    kind: str
    in_dim: Optional[int] = None
    in_layout: Optional[Layout] = None
    out_dim: Optional[int] = None
    out_layout: Optional[Layout] = None
    acts_on_layout: bool = True


@dataclass
class LayoutPlan:
    """The planned layouts (see the module docstring)."""
    modules: Dict[str, ModuleRecord] = field(default_factory=dict)
    params: Dict[str, Tuple[int, Layout]] = field(default_factory=dict)
    iterations: int = 0
    unsupported: List[Tuple[str, str, str]] = field(default_factory=list)
    bad_ratio: List[str] = field(default_factory=list)
    output_layouts: List[Optional[Tuple[int, Layout]]] = field(default_factory=list)


# ------------------------------------------------------------------ tags
class _Origins:
    """Id ranges: which origin (module output, param, op, input) an id comes from."""

    def __init__(self):
        self.bases: List[int] = []
        self.keys: List[tuple] = []
        self.shapes: List[tuple] = []
        self.dims: List[Optional[int]] = []
        self.sources: List[frozenset] = []
        self.fresh: Dict[int, torch.Tensor] = {}
        self.next = 0
        self._bases: Optional[torch.Tensor] = None  # self.bases as a tensor
        self.first: Dict[tuple, int] = {}  # key -> its first origin

    def new(self, shape, key, sources=frozenset(), dim=None) -> torch.Tensor:
        n = math.prod(shape)
        base = self.next
        self.next += max(n, 1)
        self.bases.append(base)
        self.first.setdefault(key, len(self.keys))
        self.keys.append(key)
        self.shapes.append(tuple(shape))
        self.dims.append(dim)
        self.sources.append(frozenset(sources))
        ids = torch.arange(base, base + n, dtype=torch.float64).reshape(shape)
        self.fresh[id(ids)] = ids
        return ids

    def select(self, ids: torch.Tensor, dim: int, index: torch.Tensor):
        """``ids.index_select(dim, index)``; for ids made by :meth:`new`
        (contiguous ranges) computed as ``first + index · stride``, one
        broadcast add (float64 ``index_select`` along an inner dim is slow)."""
        if self.fresh.get(id(ids)) is not ids:
            return select_along(ids, dim, index)
        view = [1] * ids.dim()
        view[dim] = -1
        step = (index.to(torch.float64) * ids.stride(dim)).reshape(view)
        return ids.narrow(dim, 0, 1) + step

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Origin number of every id (ids >= 0)."""
        if self._bases is None or len(self._bases) != len(self.bases):
            # (origins only grow: converted again when one was added)
            self._bases = torch.tensor(self.bases, dtype=torch.float64)
        return torch.searchsorted(self._bases, ids.reshape(-1), right=True) - 1

    def origins_of(self, ids: torch.Tensor) -> Set[int]:
        one = self.single(ids)  # the usual case, without sorting the ids
        if one is not None:
            return {one}
        ids = ids[ids >= 0]
        if ids.numel() == 0:
            return set()
        return set(self.lookup(torch.unique(ids)).tolist())

    def single(self, ids: torch.Tensor) -> Optional[int]:
        """The origin of ``ids`` if they all come from one (min / max test:
        origins are id ranges), else None."""
        valid = ids[ids >= 0] if bool((ids < 0).any()) else ids
        if valid.numel() == 0:
            return None
        lo, hi = self.lookup(torch.stack([valid.min(), valid.max()])).tolist()
        return lo if lo == hi else None

    def cut_block(self, o: int, dim: int, ids: torch.Tensor) -> int:
        """The largest block of origin ``o``'s channels along ``dim`` that the
        selection ``ids`` (valid ids of ``o``) cuts only at its borders: the
        gcd of the cut positions, the whole width when nothing is cut."""
        shape = self.shapes[o]
        width = shape[dim]
        # the coordinate along ``dim`` of each id (row-major origin), in
        # int64 in place (ids are exact integers in float64)
        coords = ids.reshape(-1).long().sub_(self.bases[o])
        inner = math.prod(shape[dim + 1:])
        if inner > 1:
            coords = coords.div_(inner, rounding_mode='floor')
        sel = torch.bincount(coords.remainder_(width), minlength=width) > 0
        block = width
        for e in (sel[1:] != sel[:-1]).nonzero()[:, 0].tolist():
            block = math.gcd(block, e + 1)
        return block

    def sources_of(self, ids: torch.Tensor) -> Set[tuple]:
        out = set()
        for o in self.origins_of(ids):
            out |= self.sources[o]
        return out


def _row_hash(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """An integer hash of each row of ids (wrapping int64 arithmetic)."""
    return (rows.long() * weights[:rows.shape[1]]).sum(1)


def _same_id_set(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the valid (>= 0) ids of ``a`` and ``b`` are the same set.

    A bitmap over the ids' range when it is small (ids of one split come from
    a few origins, i.e. a few id ranges), sorted uniques otherwise.
    """
    ranges = []
    for x in (a, b):
        lo, hi = torch.aminmax(x.reshape(-1)) if x.numel() else (None, None)
        if lo is not None and lo < 0:  # -1: no element (padding)
            x = x[x >= 0]
            lo, hi = torch.aminmax(x) if x.numel() else (None, None)
        if lo is None:
            ranges.append(None)
        else:
            ranges.append((x.reshape(-1), float(lo), float(hi)))
    if ranges[0] is None or ranges[1] is None:
        return ranges[0] is None and ranges[1] is None
    (a, alo, ahi), (b, blo, bhi) = ranges
    if alo != blo or ahi != bhi:
        return False
    span = int(ahi - alo) + 1
    if span > 4 * (a.numel() + b.numel()) + 1024:
        ua, ub = torch.unique(a), torch.unique(b)
        return ua.shape == ub.shape and torch.equal(ua, ub)
    seen = torch.zeros(2, span, dtype=torch.bool)
    seen[0].index_fill_(0, (a - alo).long(), True)
    seen[1].index_fill_(0, (b - alo).long(), True)
    return torch.equal(seen[0], seen[1])


def _constant_per_channel(fac: torch.Tensor, d: int) -> bool:
    """Whether ``fac`` is constant along every dim but ``d`` by its strides
    (an expanded per-channel factor: nothing to check)."""
    return all(fac.stride(k) == 0 for k in range(fac.dim())
               if k != d and fac.shape[k] > 1)


def canonical(t_tags: torch.Tensor, t_fac: torch.Tensor, s_tags: torch.Tensor,
              dim: Optional[int] = None):
    """Pair a teacher tensor's tags with the student tensor's ids.

    Returns:
        ``(d, Layout)`` with ``d`` the widened dim (non-negative), ``(None,
        None)`` when the teacher tensor is exactly the student's (fixed, factor
        1), or raises :class:`PlanningError` with the reason.
    """
    if t_tags.dim() != s_tags.dim():
        raise PlanningError(f'teacher tensor has {t_tags.dim()} dims, the '
                            f'student\'s {s_tags.dim()}')
    diff = [d for d in range(t_tags.dim()) if t_tags.shape[d] != s_tags.shape[d]]
    if dim is not None:
        dim = dim % t_tags.dim()
        if diff and diff != [dim]:
            raise PlanningError(f'widened along dims {diff}, not along dim {dim}')
        diff = [dim]
    if not diff:
        if torch.equal(t_tags, s_tags) and bool((t_fac == 1).all()):
            return None, None
        # same sizes: a permutation or a rescaling; find the dim below
        cands = [d for d in range(1, t_tags.dim()) if t_tags.shape[d] > 1] + \
            [0]
        for d in cands:
            try:
                return canonical(t_tags, t_fac, s_tags, d)
            except PlanningError:
                continue
        raise PlanningError('the teacher tensor is not a per-channel copy of '
                            "the student's")
    if len(diff) > 1:
        raise PlanningError(f'widened along more than one dim {diff}')
    d = diff[0]
    c_t, c_s = t_tags.shape[d], s_tags.shape[d]
    t_rows = t_tags.movedim(d, 0).reshape(c_t, -1)
    s_rows = s_tags.movedim(d, 0).reshape(c_s, -1)
    weights = torch.randint(1, 2**31, (t_rows.shape[1], ),
                            generator=torch.Generator().manual_seed(0))
    # candidates by a hash of the first few columns (ids of different student
    # channels differ in every column unless a tensor repeats them), then by
    # the whole rows if that does not pair them; the pairing is always
    # checked exactly below
    for cols in dict.fromkeys((min(8, t_rows.shape[1]), t_rows.shape[1])):
        th = _row_hash(t_rows[:, :cols], weights)
        sh = _row_hash(s_rows[:, :cols], weights)
        order = torch.argsort(sh)
        sorted_sh = sh[order]
        pos = torch.searchsorted(sorted_sh, th).clamp(max=c_s - 1)
        index = order[pos]
        paired = s_rows[index]
        if torch.equal(paired, t_rows):
            bad = None
            break
        bad = (paired != t_rows).any(1)
        if cols < t_rows.shape[1]:
            # a teacher row equal to a student row has its hash; when at most
            # one student row has the hash of a row that differs from its
            # candidate, that row equals no student row: no need to hash
            # whole rows
            cand = th[bad]
            lo = torch.searchsorted(sorted_sh, cand)
            hi = torch.searchsorted(sorted_sh, cand, right=True)
            proven = (hi - lo) <= 1
            if bool(proven.any()):
                bad = torch.zeros_like(bad).masked_scatter_(bad, proven)
                break
    if bad is not None:
        raise PlanningError(
            f'teacher channel {bad.nonzero()[0, 0].item()} along dim {d} does '
            'not carry a single student channel (a split or reshape does not '
            'fall on a border of the widened channels)')
    f_rows = t_fac.movedim(d, 0).reshape(c_t, -1)  # a view when expanded
    factor = f_rows[:, 0].clone()
    if not _constant_per_channel(t_fac, d):
        if bool((t_rows < 0).any()):
            dev = float(((f_rows - factor[:, None]).abs() *
                         (t_rows >= 0)).max())
        else:
            dev = float((f_rows.amax(1) - f_rows.amin(1)).max())
        if dev > 1e-9 * float(factor.abs().max()):
            raise PlanningError(f'factors vary within a channel along dim {d}')
    lay = Layout(index, factor, c_s)
    if not lay.complete:
        raise PlanningError(f'the teacher tensor misses student channels along '
                            f'dim {d}')
    return d, lay


# ------------------------------------------------------------------ runs
def _fn_name(func) -> str:
    name = getattr(func, '__name__', None)
    if name is None:
        name = repr(func)
    return name


def _tensors(tree) -> List[torch.Tensor]:
    """The tensors of a (nested) argument structure, in pytree order.

    Plain tuples, lists and dicts of tensors and scalars (every op's
    ``(args, kwargs)``) are walked directly; anything else (a namedtuple, a
    registered pytree node) goes through ``tree_flatten``.
    """
    out: List[torch.Tensor] = []
    if _walk(tree, out):
        return out
    leaves, _ = tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _walk(x, out) -> bool:
    """Append the tensors of ``x`` to ``out``; False when ``x`` holds a
    container :func:`tree_flatten` may order differently (then ``out`` is
    discarded)."""
    typ = type(x)
    if typ is tuple or typ is list:
        return all(_walk(v, out) for v in x)
    if typ is dict:
        # pytree orders a dict's values by its insertion order, as here
        return all(_walk(v, out) for v in x.values())
    if isinstance(x, torch.Tensor):
        out.append(x)
        return True
    return not isinstance(x, (tuple, list, dict)) and \
        not hasattr(x, '__dataclass_fields__')


class _Recorder(TorchFunctionMode):
    """Shared machinery of the student and teacher runs."""

    def __init__(self, model: nn.Module, origins: _Origins):
        super().__init__()
        self.origins = origins
        self.tags: Dict[int, torch.Tensor] = {}
        self.srcs: Dict[int, frozenset] = {}
        self.facs: Dict[int, torch.Tensor] = {}
        self.keep: List[torch.Tensor] = []
        self.paused = 0
        self.rule_depth = 0
        self.stack: List[str] = []
        self.param_names = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            self.param_names.setdefault(id(p), name)
        for name, b in model.named_buffers(remove_duplicate=False):
            if b.is_floating_point():
                self.param_names.setdefault(id(b), name)
        self.op_index = 0

    def where(self) -> str:
        return self.stack[-1] if self.stack else ''

    #: whether tensors carry factors beside their ids (the teacher's do; the
    #: student's are all 1 and never read)
    track_factors = True

    def tag(self, t: torch.Tensor, tags: torch.Tensor, fac=None, srcs=None):
        if srcs is not None:
            self.srcs[id(t)] = srcs
        self.tags[id(t)] = tags
        if self.track_factors:
            self.facs[id(t)] = fac if fac is not None else \
                torch.ones_like(tags)
        self.keep.append(t)

    def release(self):
        """Drop every recorded tensor (the ids of a run are activation-size
        float64 tensors, and the runs reference each other through the
        planner: freed now, not at the next cyclic garbage collection)."""
        for table in ('tags', 'facs', 'srcs', 'keep', 'known', 'tainted', 'ops',
                      'module_out', 'module_in', 'module_in_all',
                      'module_struct', 'dims'):
            getattr(self, table, {}).clear()

    def tagged(self, t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.tags

    def _involved(self, args, kwargs) -> bool:
        for t in _tensors((args, kwargs)):
            if id(t) in self.tags or id(t) in self.param_names:
                return True
        return False

    def ensure_param_tags(self, args, kwargs):
        for t in _tensors((args, kwargs)):
            if id(t) not in self.tags and id(t) in self.param_names:
                self.tag_param(t, self.param_names[id(t)])

    def tag_param(self, t, name):
        raise NotImplementedError

    def on_tags(self, func, args, kwargs):
        """Apply a data-movement op to the tags (and to the factors)."""
        name = _fn_name(func)

        def sub(which):
            def f(x):
                if isinstance(x, torch.Tensor):
                    if id(x) in self.tags:
                        return (self.tags if which == 't' else self.facs)[id(x)]
                    if x.is_floating_point():
                        fill = -1.0 if which == 't' else 1.0
                        return torch.full(x.shape, fill, dtype=torch.float64)
                return x
            return f

        if name in _DTYPE_MOVES:
            src = args[0]
            return self.tags.get(id(src)), self.facs.get(id(src))
        if name in ('view', 'view_as'):  # tags need not be contiguous
            func = torch.Tensor.reshape if name == 'view' else \
                torch.Tensor.reshape_as
            if len(args) > 1 and isinstance(args[1], torch.dtype):
                return self.tags.get(id(args[0])), self.facs.get(id(args[0]))
        if name in ('unfold', 'fold', 'pixel_shuffle', 'pixel_unshuffle'):
            # zero padding must read as "no element" (-1), factor 1
            t, f = self._padded_op(func, args, kwargs)
            return t, f
        kw_t, kw_f = dict(kwargs), dict(kwargs)
        if name == 'pad':
            kw_t['value'], kw_f['value'] = -1.0, 1.0
            if len(args) > 3:
                args = args[:3]
        out = []
        kinds = (('t', kw_t), ('f', kw_f)) if self.track_factors else \
            (('t', kw_t), )
        for which, kw in kinds:
            a = tree_map(sub(which), args)
            out.append(func(*a, **kw))
        if not self.track_factors:
            out.append(None)
        if name == '__setitem__':
            return tree_map(sub('t'), args)[0], (tree_map(sub('f'), args)[0]
                                                 if self.track_factors else None)
        return out[0], out[1]


def _padded(recorder, func, args, kwargs):
    def sub(which):
        def f(x):
            if isinstance(x, torch.Tensor) and id(x) in recorder.tags:
                if which == 't':
                    return recorder.tags[id(x)] + 1
                return recorder.facs[id(x)] - 1
            return x
        return f
    t = func(*tree_map(sub('t'), args), **kwargs)
    t = tree_map(lambda x: x - 1 if isinstance(x, torch.Tensor) else x, t)
    if not recorder.track_factors:
        return t, None
    f = func(*tree_map(sub('f'), args), **kwargs)
    return t, tree_map(lambda x: x + 1 if isinstance(x, torch.Tensor) else x, f)


_Recorder._padded_op = _padded


class _StudentRun(_Recorder):
    """Records the student: ids of every tensor, module outputs, op outputs."""

    track_factors = False

    def __init__(self, model, origins, rule_paths):
        super().__init__(model, origins)
        self.ops: List[dict] = []
        self.module_out: Dict[Tuple[str, int], list] = {}
        self.module_in: Dict[Tuple[str, int], torch.Tensor] = {}
        self.calls: Dict[str, int] = {}
        self.rule_paths = rule_paths
        self.split_blocks: Dict[tuple, int] = {}
        self.dims: Dict[int, int] = {}  # channel dim of tensors, where known

    def tag_param(self, t, name):
        self.tag(t, self.origins.new(t.shape, ('param', name)),
                 srcs=frozenset())

    def _split_blocks(self, outs):
        """Where a split cuts a mixing layer's output channels: the block of
        its replica layout must divide the cut (the planner starts from it)."""
        for ids in outs:
            ids = ids.reshape(-1)
            if bool((ids < 0).any()):
                ids = ids[ids >= 0]
            if ids.numel() == 0:
                continue
            one = self.origins.single(ids)
            org = None if one is not None else self.origins.lookup(ids)
            for o in ([one] if one is not None else torch.unique(org).tolist()):
                dim = self.origins.dims[o]
                if dim is None or not self.origins.sources[o]:
                    continue
                block = self.origins.cut_block(
                    o, dim, ids if one is not None else ids[org == o])
                if block == self.origins.shapes[o][dim]:  # not cut
                    continue
                for src in self.origins.sources[o]:
                    self.split_blocks[src] = math.gcd(
                        self.split_blocks.get(src, 0), block)

    def _in_srcs(self, args, kwargs) -> frozenset:
        out = frozenset()
        for t in _tensors((args, kwargs)):
            out = out | self.srcs.get(id(t), frozenset())
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused or self.rule_depth or not self._involved(args, kwargs):
            return func(*args, **kwargs)
        name = _fn_name(func)
        self.ensure_param_tags(args, kwargs)
        out = func(*args, **kwargs)
        if name in _IGNORED:
            return out
        record = {'name': name, 'where': self.where(),
                  'in': [self.tags.get(id(t)) for t in _tensors((args, kwargs))]}
        if name in _MOVES or name in _DTYPE_MOVES:
            t_out, _ = self.on_tags(func, args, kwargs)
            if name in _DTYPE_MOVES and args and id(args[0]) in self.dims:
                self.dims[id(out)] = self.dims[id(args[0])]
            if name == '__setitem__':
                self.tag(args[0], t_out)
                record['out'] = [t_out]
            else:
                outs, touts = _tensors(out), _tensors(t_out)
                srcs = self._in_srcs(args, kwargs)
                for o, to in zip(outs, touts):
                    self.tag(o, to, srcs=srcs)
                record['out'] = touts
                if name in _SPLITS:
                    self._split_blocks(touts)
        else:
            outs = _tensors(out)
            srcs = self._in_srcs(args, kwargs)
            tags, record['out_origins'] = [], []
            in_dim = None
            for t in _tensors((args, kwargs)):
                if id(t) in self.dims:
                    in_dim = (tuple(t.shape), self.dims[id(t)])
                    break
            for o in outs:
                dim = in_dim[1] if in_dim is not None and \
                    tuple(o.shape) == in_dim[0] else None
                tags.append(self.origins.new(o.shape, ('op', self.op_index, name),
                                             srcs, dim))
                if dim is not None:
                    self.dims[id(o)] = dim
                record['out_origins'].append(len(self.origins.bases) - 1)
            for o, tg in zip(outs, tags):
                self.tag(o, tg, srcs=srcs)
            record['out'] = tags
            if name.endswith('_') or name.startswith('__i'):
                if outs and args and isinstance(args[0], torch.Tensor) \
                        and args[0] is not outs[0]:
                    self.tag(args[0], tags[0])
        self.ops.append(record)
        self.op_index += 1
        return out


class _Stub(nn.Module):
    """Stands in for a module with a rule during the teacher run."""

    def __init__(self, path, original, run):
        super().__init__()
        object.__setattr__(self, '_orig', original)
        object.__setattr__(self, '_run', run)
        self._path = path

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, '_orig'), name)

    def forward(self, *args, **kwargs):
        return self._run.stub_call(self._path, self._orig, args, kwargs)


class _TeacherRun(_Recorder):
    """The teacher's code on tags: pairs every tensor with the student's."""

    def __init__(self, model, origins, student: _StudentRun, plan_ctx):
        super().__init__(model, origins)
        self.student = student
        self.ctx = plan_ctx
        self.calls: Dict[str, int] = {}
        self.param_layouts = plan_ctx.param_layouts
        self.known: Dict[int, tuple] = {}
        #: ids of tensors computed from an op that failed (see ``taint``)
        self.tainted: Set[int] = set()

    # --------------------------------------------------------------- params
    def tag_param(self, t, name):
        s_ids = self.student_param_ids(name, t)
        lay = self.param_layouts.get(name)
        if lay is None or t.shape == s_ids.shape:
            self.tag(t, s_ids)
            return
        d, layout = lay
        self.tag(t, select_along(s_ids, d, layout.index),
                 _factor_tensor(layout, d, t.dim(), t.shape))

    def student_param_ids(self, name, t):
        i = self.origins.first.get(('param', name))
        if i is None:
            raise PlanningError(f'parameter {name} was not used by the student '
                                'run')
        shape = self.origins.shapes[i]
        base = self.origins.bases[i]
        return torch.arange(base, base + math.prod(shape),
                            dtype=torch.float64).reshape(shape)

    # ---------------------------------------------------------------- layouts
    def layout_of(self, t: torch.Tensor, s_ids: torch.Tensor, dim=None):
        if not self.tagged(t):
            return None, None
        tags = self.tags[id(t)]
        known = self.known.get(id(tags))
        if known is not None and known[0] is s_ids and (
                dim is None or known[1] is None or dim % t.dim() == known[1]):
            return known[1], known[2]
        return canonical(tags, self.facs[id(t)], s_ids, dim)

    def out_tags(self, s_ids, d, lay):
        """Tags (and factors) of a teacher tensor that carries ``s_ids`` in
        layout ``lay`` along ``d``; remembered so that pairing it again with
        the same student ids costs nothing."""
        if lay is None:
            tags, fac = s_ids, torch.ones_like(s_ids)
        else:
            tags = self.origins.select(s_ids, d, lay.index)
            fac = _factor_tensor(lay, d, s_ids.dim(), None, s_ids)
        self.known[id(tags)] = (s_ids, d, lay, tags)
        return tags, fac

    # ---------------------------------------------------------------- stubs
    def stub_call(self, path, module, args, kwargs):
        self.paused += 1
        try:
            return self._stub_call(path, module, args, kwargs)
        finally:
            self.paused -= 1

    def _stub_call(self, path, module, args, kwargs):
        call = self.calls.get(path, 0)
        self.calls[path] = call + 1
        key = (path, call)
        if key not in self.student.module_out:
            raise PlanningError(f'{path} was not called by the student run')
        s_in = self.student.module_in.get(key)
        s_out = self.student.module_out[key]
        kind = unit_kind(module)
        x = _tensors((args, kwargs))[0] if _tensors((args, kwargs)) else None
        rec = ModuleRecord(path, kind)
        if kind == 'refused':
            from .kinds import REFUSED, qualname
            for sub, m in module.named_modules():
                if unit_kind(m) == 'refused':
                    self.ctx.fail(f'{path}.{sub}' if sub else path,
                                  type(m).__name__, REFUSED[qualname(m)])
            return self.student.module_struct[key](
                [v.clone() for v, _ in s_out])
        if x is not None and s_in is not None and self.tagged(x) and \
                id(x) not in self.tainted:  # (a failed op's: read as fixed)
            try:
                rec.in_dim, rec.in_layout = self.layout_of(x, s_in)
                pref = _CHANNEL_DIM.get(kind)
                if kind == 'layernorm2d' and kwargs.get('data_format') == \
                        'channel_last':
                    pref = -1
                if rec.in_layout is not None and x.shape == s_in.shape and \
                        pref is not None and rec.in_dim != pref % x.dim():
                    # same sizes (a rescaled or permuted tensor): read it
                    # along the module's own channel dim
                    rec.in_dim, rec.in_layout = self.layout_of(x, s_in, pref)
            except PlanningError as e:
                self.ctx.fail(path, type(module).__name__, f'its input: {e}',
                              self.tags[id(x)])
                rec.in_dim = None
        self.call_kwargs = kwargs
        if kind == 'roi_pool':
            self._roi_inputs(path, module, key, args, kwargs, rec)
        self.ctx.module_rule(self, rec, module, x, s_in)
        prev = self.ctx.records.get(path)
        if prev is not None and not _same_record(prev, rec):
            if kind == 'nonhomogeneous' and prev.in_layout is not None and \
                    rec.in_layout is not None:
                # one module, two spaces: evaluated on exact inputs it needs
                # no carry (its rule is then the identity)
                self.ctx.flip(self.ctx.sources(self, x), exact=True)
                prev_x = self.ctx.prev_sources.get(path)
                if prev_x is not None:
                    self.ctx.flip(self.ctx.sources(self, prev_x), exact=True)
            else:
                self.ctx.fail(path, type(module).__name__,
                              'called twice with different layouts')
        if x is not None and self.tagged(x):
            self.ctx.prev_sources[path] = x  # its sources, when needed
        self.ctx.records[path] = rec
        if rec.out_dim is not None:
            for o in self.student.module_origins.get(key, ()):
                self.ctx.origin_dims[o] = rec.out_dim
        outs = []
        for s_val, s_ids in s_out:
            if rec.out_layout is None:
                t_val, (tg, fc) = s_val, self.out_tags(s_ids, None, None)
            else:
                t_val = rec.out_layout.expand(s_val, rec.out_dim)
                tg, fc = self.out_tags(s_ids, rec.out_dim, rec.out_layout)
            if t_val is s_val:
                t_val = t_val.clone()  # a tensor of its own (tags go by id)
            self.tag(t_val, tg, fc)
            outs.append(t_val)
        structure = self.student.module_struct[key]
        return structure(outs)

    def _roi_inputs(self, path, module, key, args, kwargs, rec):
        """RoI pooling (``roi_pool``): every feature map it reads (the FPN
        levels) must be in the layout of the first (joined when they are not:
        one output layout for the pooled RoIs of all levels), and the boxes
        (every input that is not a 4-D feature map) must be the student's
        own, exactly (the planner fixes the spaces they are decoded from)."""
        ins = _tensors((args, kwargs))
        s_ins = self.student.module_in_all.get(key, [])
        feats = []
        for t, s in zip(ins, s_ins):
            if s is None or not self.tagged(t):
                continue
            try:
                d, lay = self.layout_of(t, s) if t.shape != s.shape or \
                    not torch.equal(self.tags[id(t)], s) or not bool(
                        (self.facs[id(t)] == 1).all()) else (None, None)
            except PlanningError as e:
                self.ctx.fail(path, type(module).__name__,
                              f'an input of RoI pooling: {e}')
                continue
            if t.dim() == 4:
                feats.append((t, d, lay))
            elif lay is not None:
                srcs = self.ctx.sources(self, t)
                if not any(k[0] == 'module' for k in srcs):
                    self.ctx.fail(path, type(module).__name__,
                                  'its boxes differ from the student\'s and '
                                  'come from no layer whose output can be '
                                  'kept fixed')
                self.ctx.flip(srcs, fixed=True)
        if len(feats) > 1:
            ref = feats[0]
            if any(d != ref[1] or (lay is None) != (ref[2] is None) or (
                    lay is not None and not lay.same(ref[2]))
                    for _, d, lay in feats[1:]):
                srcs = set()
                for t, _, _ in feats:
                    srcs |= self.ctx.sources(self, t)
                if not self.ctx.join(srcs):
                    self.ctx.fail(path, type(module).__name__,
                                  'its feature levels are in different '
                                  'layouts that no join makes equal')

    # -------------------------------------------------------------- functions
    # ---------------------------------------------------------------- taint
    def is_tainted(self, args, kwargs=None) -> bool:
        return bool(self.tainted) and any(
            id(t) in self.tainted for t in _tensors((args, kwargs or {})))

    def taint(self, out, tag: bool):
        """Mark the tensors of ``out`` as computed from a failed op (``tag``:
        and give them "no element" tags, so that the ops reading them stay in
        step with the student's records)."""
        for t in _tensors(out):
            self.tainted.add(id(t))
            self.keep.append(t)
            if tag:
                self.tag(t, _NO_ELEMENT.expand(t.shape),
                         _ONE.expand(t.shape))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused or self.rule_depth:
            return func(*args, **kwargs)
        tainted = self.is_tainted(args, kwargs)
        if not self._involved(args, kwargs):
            out = func(*args, **kwargs)
            if tainted:  # e.g. integer indices computed from a failed op
                self.taint(out, tag=False)
            return out
        name = _fn_name(func)
        self.paused += 1
        try:
            self.ensure_param_tags(args, kwargs)
        finally:
            self.paused -= 1
        if name in _IGNORED:
            out = func(*args, **kwargs)
            if tainted:
                self.taint(out, tag=False)
            return out
        k = self.op_index
        self.op_index += 1
        if k >= len(self.student.ops) or self.student.ops[k]['name'] != name:
            other = self.student.ops[k]['name'] if k < len(self.student.ops) \
                else 'nothing'
            raise PlanningError(
                f'the teacher\'s code called {name}() where the student called '
                f'{other}() (at {self.where() or "<model>"}): control flow '
                'depends on the width')
        rec = self.student.ops[k]
        failures = len(self.ctx.failures)
        if not tainted:
            self.paused += 1
            try:
                args, kwargs = self.ctx.before_op(self, name, args, kwargs, rec)
            finally:
                self.paused -= 1
        try:
            out = func(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise PlanningError(
                f'{name}() fails on the teacher\'s tensors: '
                f'{str(e).splitlines()[0]} (a width the code reads is not '
                'widened, or the op has no layout rule)') from e
        self.paused += 1
        try:
            if tainted:
                # computed from a failed op: its own failures would only
                # repeat that one's (and pairing it costs the most)
                self.taint(args[0] if out is None else out, tag=True)
            else:
                self.ctx.after_op(self, func, name, args, kwargs, out, rec)
                if len(self.ctx.failures) > failures:
                    self.taint(args[0] if out is None else out, tag=False)
        finally:
            self.paused -= 1
        return out


def _same_record(a: ModuleRecord, b: ModuleRecord) -> bool:
    def same(x, y):
        if x is None or y is None:
            return x is y
        return x.same(y)
    return a.in_dim == b.in_dim and a.out_dim == b.out_dim and \
        same(a.in_layout, b.in_layout) and same(a.out_layout, b.out_layout)


def _factor_tensor(lay: Layout, d: int, ndim: int, shape=None, like=None):
    shape = list(like.shape if like is not None else shape)
    view = [1] * ndim
    view[d] = -1
    out = lay.factor.reshape(view)
    shape[d] = lay.teacher_width
    return out.expand(shape)


# ------------------------------------------------------------------ planner
_CHANNEL_DIM = {'conv': 1, 'linear': -1, 'batchnorm': 1, 'groupnorm': 1,
                'layernorm': -1, 'layernorm2d': 1, 'attention': -1,
                'roi_pool': 1}


class _Planner:
    """Choices, records and the rules of the teacher run (one iteration)."""

    def __init__(self, ratio: float):
        self.ratio = ratio
        self.choices: Dict[tuple, Choice] = {}
        self.parent: Dict[tuple, tuple] = {}
        self.param_layouts: Dict[str, Tuple[int, Layout]] = {}
        self.origin_dims: Dict[int, int] = {}
        self.origins: Optional[_Origins] = None
        self._flipped = False
        #: (where, op) of the conflicts resolved by keeping spaces unwidened
        self.kept: List[Tuple[str, str]] = []
        self.last_run = None  # the latest teacher run (errors name its place)
        self.reset()

    def reset(self):
        self.records: Dict[str, ModuleRecord] = {}
        self.prev_sources: Dict[str, set] = {}
        self.failures: List[Tuple[str, str, str]] = []
        self.bad_ratio: List[str] = []
        self.changed = False

    # ----------------------------------------------------------- choices
    def find(self, key):
        while self.parent.get(key, key) != key:
            key = self.parent[key]
        return key

    def choice(self, key) -> Choice:
        return self.choices.setdefault(self.find(key), Choice())

    def _set(self, key, **fields):
        c = self.choice(key)
        for k, v in fields.items():
            if getattr(c, k) != v:
                setattr(c, k, v)
                self.changed = True
                self._flipped = True

    def flip(self, sources, **fields):
        for key in sources:
            if key[0] != 'module':
                continue
            c = self.choice(key)
            if 'block' in fields:
                b = fields['block']
                new = math.gcd(c.block, b) if c.block else b
                self._set(key, block=new, order='grouped')
            else:
                self._set(key, **fields)

    def join(self, sources):
        keys = [k for k in sources if k[0] == 'module']
        if len(keys) < 2:
            return False
        roots = {self.find(k) for k in keys}
        if len(roots) < 2:
            return False
        roots = sorted(roots)
        merged = Choice()
        for r in roots:
            c = self.choices.get(r, Choice())
            merged.fixed |= c.fixed
            merged.exact |= c.exact
            if c.order == 'grouped' or c.block:
                merged.order = 'grouped'
                merged.block = math.gcd(merged.block, c.block) if merged.block \
                    else c.block
        for r in roots[1:]:
            self.parent[r] = roots[0]
            self.choices.pop(r, None)
        self.choices[roots[0]] = merged
        self.changed = True
        return True

    def fail(self, where, typ, why, tags=None):
        self.failures.append((where, typ, why))

    def sources(self, run, t) -> Set[tuple]:
        if not run.tagged(t):
            return set()
        return self.origins.sources_of(run.tags[id(t)])

    # ------------------------------------------------------------ modules
    def module_rule(self, run, rec: ModuleRecord, module, x, s_in):
        kind = rec.kind
        if kind in ('layernorm', ) and len(getattr(module, 'normalized_shape',
                                                   (0, ))) != 1:
            self.fail(rec.path, type(module).__name__,
                      'LayerNorm over more than the last dim')
        s_out_val, s_out_ids = run.student.module_out[(rec.path,
                                                       run.calls[rec.path] - 1)][0]
        ndim = s_out_val.dim()
        cdim = _CHANNEL_DIM.get(kind)
        if cdim is not None:
            cdim = cdim % ndim
        if kind == 'layernorm2d' and run.call_kwargs.get('data_format') == \
                'channel_last':
            cdim = ndim - 1
        if kind == 'channel_scale':
            fmt = getattr(module, 'data_format', None)
            cdim = (ndim - 1) if fmt == 'channels_last' or (
                fmt is None and type(module).__name__ == 'LayerScale') else 1
            if fmt == 'channels_first':
                cdim = 1
        if kind in MIXING or kind == 'attention':
            src = ('module', rec.path)
            if rec.in_layout is not None and rec.in_dim != cdim:
                if kind != 'linear':
                    self.fail(rec.path, type(module).__name__,
                              f'its input is widened along dim {rec.in_dim}, '
                              f'not along its channels (dim {cdim})')
                    return
                rec.acts_on_layout = False  # e.g. a token-mixing linear
                if module.bias is not None and not rec.in_layout.is_exact:
                    self.flip(self.sources(run, x), exact=True)
                rec.out_dim, rec.out_layout = rec.in_dim, rec.in_layout
                return
            width = s_out_val.shape[cdim]
            if getattr(module, 'groups', 1) > 1 and rec.in_layout is not None:
                rec.out_dim = cdim
                rec.out_layout = _grouped_out(module, rec.in_layout)
                if rec.out_layout is None:  # a bad ratio: the builder names it
                    rec.out_layout = hidden(width, self.ratio)
                return
            choice = self.choice(src)
            lay = choice.layout(width, self.ratio)
            rec.out_dim = cdim
            rec.out_layout = None if lay.is_identity else lay
            return
        if rec.in_layout is None:
            return  # a fixed space stays fixed
        if kind in NORMS or kind == 'layernorm2d':
            if rec.in_dim != cdim:
                if kind in ('layernorm', ) and rec.in_layout.is_exact:
                    rec.acts_on_layout = False
                elif kind == 'layernorm':
                    self.flip(self.sources(run, x), exact=True)
                    rec.acts_on_layout = False
                else:
                    self.fail(rec.path, type(module).__name__,
                              f'input widened along dim {rec.in_dim}, not its '
                              f'channels (dim {cdim})')
                    return
        elif kind == 'channel_scale':
            if rec.in_dim != cdim:
                rec.acts_on_layout = False
        rec.out_dim, rec.out_layout = rec.in_dim, rec.in_layout

    # ---------------------------------------------------------------- ops
    def before_op(self, run, name, args, kwargs, srec):
        if name in ('layer_norm', 'group_norm'):
            return self._norm_params(run, name, args, kwargs, srec)
        binary = name in _ADDITIVE or name in _MULTIPLICATIVE or \
            name in _DIVISION
        if not (binary or name in ('cat', 'concat', 'concatenate', 'stack')):
            return args, kwargs
        ins = _tensors((args, kwargs))
        s_ins = srec['in']
        if len(ins) != len(s_ins):
            return args, kwargs
        lays = {}
        for t, s in zip(ins, s_ins):
            if s is None or not run.tagged(t):
                continue
            try:
                lays[id(t)] = run.layout_of(t, s) if t.shape != s.shape or \
                    not torch.equal(run.tags[id(t)], s) else (None, None)
            except PlanningError:
                lays[id(t)] = (None, None)
        widened = [(t, lays[id(t)]) for t in ins
                   if lays.get(id(t), (None, None))[1] is not None]
        if not widened:
            return args, kwargs
        ref_t, (ref_d, ref_lay) = widened[0]
        if binary and any(lay.teacher_width != ref_lay.teacher_width
                          for _, (_, lay) in widened[1:]):
            # the op will fail on the teacher: resolve it as the rule would
            self._binary(run, name, args, [(t, d, lay) for t, (d, lay) in
                                           widened], srec['where'], 'additive')
        if name in ('cat', 'concat', 'concatenate', 'stack'):
            cat_dim = args[1] if len(args) > 1 else kwargs.get('dim', 0)
            if (cat_dim % ref_t.dim()) == ref_d:
                return args, kwargs
        replace = {}
        for i, (t, s) in enumerate(zip(ins, s_ins)):
            if s is None or id(t) in replace or \
                    lays.get(id(t), (None, None))[1] is not None:
                continue
            d = ref_d - (ref_t.dim() - t.dim())
            if d < 0 or t.shape[d] != ref_lay.width or \
                    t.shape[d] == ref_lay.teacher_width:
                continue
            o = self.origins.single(run.tags[id(t)])
            if o is None or self.origins.keys[o][0] != 'param':
                continue
            pname = self.origins.keys[o][1]
            if name in _MULTIPLICATIVE or (name in _DIVISION and i > 0):
                factor = torch.ones_like(ref_lay.factor)
            elif name in _DIVISION:
                factor = 1.0 / ref_lay.factor
            else:
                factor = ref_lay.factor
            lay = Layout(ref_lay.index, factor, ref_lay.width)
            new = lay.expand(t.detach(), d).to(t.dtype)
            run.tag(new, select_along(run.tags[id(t)], d, lay.index),
                    _factor_tensor(lay, d, t.dim(), t.shape))
            replace[id(t)] = new
            self._param_layout(run, pname, run.tags[id(t)], d, lay)
        if not replace:
            return args, kwargs

        def sub(x):
            return replace.get(id(x), x) if isinstance(x, torch.Tensor) else x
        return tree_map(sub, args), tree_map(sub, kwargs)

    def _norm_params(self, run, name, args, kwargs, srec):
        """Functional ``layer_norm(x, shape, weight, bias)`` over the widened
        last dim: weight and bias are parameters copied by the layout."""
        x = args[0]
        s = srec['in'][0] if srec['in'] else None
        if s is None or not run.tagged(x) or name != 'layer_norm':
            return args, kwargs
        try:
            d, lay = run.layout_of(x, s)
        except PlanningError:
            return args, kwargs
        if lay is None or d != x.dim() - 1:
            return args, kwargs
        args = list(args)
        for i in (2, 3):
            t = args[i] if len(args) > i else kwargs.get(
                ('weight', 'bias')[i - 2])
            if not isinstance(t, torch.Tensor) or t.shape[-1] != lay.width or \
                    not run.tagged(t):
                continue
            keys = {self.origins.keys[o] for o in self.origins.origins_of(
                run.tags[id(t)])}
            if len(keys) != 1 or next(iter(keys))[0] != 'param':
                continue
            ex = lay.exact()
            new = ex.expand(t.detach(), -1).to(t.dtype)
            run.tag(new, select_along(run.tags[id(t)], t.dim() - 1, ex.index))
            self._param_layout(run, next(iter(keys))[1], run.tags[id(t)],
                               t.dim() - 1, ex)
            if len(args) > i:
                args[i] = new
            else:
                kwargs = dict(kwargs, **{('weight', 'bias')[i - 2]: new})
        return tuple(args), kwargs

    def _param_layout(self, run, pname, ids, d, lay):
        o = self.origins.single(ids)
        base, shape = self.origins.bases[o], self.origins.shapes[o]
        line = ids.movedim(d, 0).reshape(ids.shape[d], -1)[:, 0] - base
        coords = torch.stack(torch.unravel_index(line.long(), shape))
        p = None
        for k in range(len(shape)):
            if torch.equal(coords[k], torch.arange(ids.shape[d])) and all(
                    (coords[m] == coords[m][0]).all() for m in range(len(shape))
                    if m != k):
                p = k
        if p is None:
            self.fail(pname, 'parameter', 'meets a widened tensor along a dim '
                      'that is not one of its own')
            return
        prev = self.param_layouts.get(pname)
        if prev is None or prev[0] != p or not prev[1].same(lay):
            self.param_layouts[pname] = (p, lay)
            self.changed = True

    def after_op(self, run, func, name, args, kwargs, out, srec):
        s_outs = srec['out']
        t_outs = _tensors(out)
        where = srec['where']
        if name in _MOVES or name in _DTYPE_MOVES:
            if name == 'pad':
                self._pad_rule(run, args, kwargs, srec, where)
            t_tags, t_facs = run.on_tags(func, args, kwargs)
            if name == '__setitem__':
                run.tag(args[0], t_tags, t_facs)
                return
            tt, tf = _tensors(t_tags), _tensors(t_facs)
            for o, a, b in zip(t_outs, tt, tf):
                run.tag(o, a, b)
            if name in _SPLITS:
                self._check_split(run, srec, tt, tf, where, name)
            return
        ins = _tensors((args, kwargs))
        s_ins = srec['in']
        lays = []
        for t, s in zip(ins, s_ins):
            if s is None or not run.tagged(t):
                lays.append((t, None, None))
                continue
            try:
                d, lay = run.layout_of(t, s)
            except PlanningError as e:
                self.fail(where, 'op', f'{name}(): {e}')
                d, lay = None, None
                self._fallback_tags(run, t_outs, s_outs)
                return
            lays.append((t, d, lay))
        d_out, lay_out = self._op_rule(run, name, args, kwargs, lays, out,
                                       s_outs, where)
        for o, s in zip(t_outs, s_outs):
            if lay_out is None:
                if o.shape != s.shape:
                    self.fail(where, 'op', f'{name}() gives a widened output '
                              'from no widened input')
                    run.tag(o, torch.full(o.shape, -1.0, dtype=torch.float64))
                    continue
                run.tag(o, *run.out_tags(s, None, None))
            else:
                exp = list(s.shape)
                exp[d_out] = lay_out.teacher_width
                if list(o.shape) != exp:
                    self.fail(where, 'op', f'{name}() output has shape '
                              f'{tuple(o.shape)}, expected {tuple(exp)}')
                    run.tag(o, torch.full(o.shape, -1.0, dtype=torch.float64))
                    continue
                tg, fc = run.out_tags(s, d_out, lay_out)
                run.tag(o, tg, fc)
        for org in srec.get('out_origins', ()):
            if lay_out is not None:
                self.origin_dims[org] = d_out
        if name.endswith('_') or name.startswith('__i'):
            if t_outs and args and isinstance(args[0], torch.Tensor):
                run.tags[id(args[0])] = run.tags.get(id(t_outs[0]))
                run.facs[id(args[0])] = run.facs.get(id(t_outs[0]))

    def _pad_rule(self, run, args, kwargs, srec, where):
        """Padding: never along the widened dim; a non-zero value needs exact."""
        x = args[0]
        s = srec['in'][0] if srec['in'] else None
        if s is None or not run.tagged(x):
            return
        try:
            d, lay = run.layout_of(x, s)
        except PlanningError:
            return
        if lay is None:
            return
        pad = args[1] if len(args) > 1 else kwargs.get('pad')
        mode = args[2] if len(args) > 2 else kwargs.get('mode', 'constant')
        value = args[3] if len(args) > 3 else kwargs.get('value', None)
        padded = {x.dim() - 1 - i // 2 for i, p in enumerate(pad) if p}
        if d in padded:
            self.fail(where, 'op', 'pad() along the widened channels')
        elif mode == 'constant' and value and not lay.is_exact:
            self.flip(self.sources(run, x), exact=True)

    def _fallback_tags(self, run, t_outs, s_outs):
        for o in t_outs:
            run.tag(o, torch.full(o.shape, -1.0, dtype=torch.float64))

    @staticmethod
    def _same_pieces(run, tt, tf, ss) -> bool:
        """Whether a teacher piece carries exactly the student piece's ids:
        paired by :func:`canonical` when it is a per-channel copy (the usual
        case; remembered for the ops that read it), else compared as sets."""
        try:
            d, lay = canonical(tt, tf, ss)
        except PlanningError:
            return _same_id_set(tt, ss)
        run.known[id(tt)] = (ss, d, lay, tt)
        return True

    def _check_split(self, run, srec, t_tags, t_facs, where, name):
        """Every output of a split must carry exactly the student's output ids."""
        if len(t_tags) != len(srec['out']):
            self.fail(where, 'op', f'{name}() gives {len(t_tags)} pieces on the '
                      f'teacher, {len(srec["out"])} on the student: a size the '
                      'code passes (an attribute such as a width) is not widened')
            return
        for tt, tf, ss in zip(t_tags, t_facs, srec['out']):
            if self._same_pieces(run, tt, tf, ss):
                continue
            a = torch.unique(tt[tt >= 0])
            b = torch.unique(ss[ss >= 0])
            bad = torch.cat([a[~torch.isin(a, b)], b[~torch.isin(b, a)]])
            self._flipped = False
            for o in self.origins.origins_of(bad):
                dim = self.origin_dims.get(o)
                if dim is None:
                    continue
                block = self.origins.cut_block(
                    o, dim, b[(self.origins.lookup(b) == o)])
                self.flip(self.origins.sources[o], block=block)
            if not self._flipped:
                # no block can follow this split (e.g. channel shuffles that
                # re-split replicas): those spaces keep the student's width
                srcs = set()
                for o in self.origins.origins_of(bad):
                    srcs |= self.origins.sources[o]
                self.flip(srcs, fixed=True)
                if self._flipped:
                    self.kept.append((where, name))
            if not self._flipped:
                self.fail(where, 'op', f'{name}() splits the widened channels '
                          'where the teacher cannot follow')

    # ---------------------------------------------------------- op rules
    def _op_rule(self, run, name, args, kwargs, lays, out, s_outs, where):
        widened = [(t, d, lay) for t, d, lay in lays if lay is not None]
        if not widened:
            return None, None
        if name in _CHANNELWISE:
            t, d, lay = widened[0]
            if name in _REDUCTIONS:
                dims = args[1] if len(args) > 1 else kwargs.get('dim')
                if name in ('max', 'min') and isinstance(dims, torch.Tensor):
                    return self._binary(run, name, args, lays, where, 'additive')
                keep = kwargs.get('keepdim', args[2] if len(args) > 2 and
                                  isinstance(args[2], bool) else False)
                if dims is None:
                    dims = list(range(t.dim()))
                if isinstance(dims, int):
                    dims = [dims]
                dims = sorted(x % t.dim() for x in dims)
                if d in dims:
                    ok = (name == 'sum' and torch.allclose(
                        torch.zeros(lay.width, dtype=torch.float64).index_add(
                            0, lay.index, lay.factor), torch.ones(lay.width,
                                                                dtype=torch.float64)))
                    ok |= name in ('amax', 'amin', 'max', 'min') and lay.is_exact
                    counts = lay.counts()
                    uniform = bool((counts == counts[0]).all())
                    if name == 'mean' and uniform:
                        if not lay.is_exact:
                            self.flip(self.sources(run, t), exact=True)
                        ok = True
                    if not ok:
                        self.fail(where, 'op', f'{name}() over the widened '
                                  'channels')
                    return None, None
                if not keep:
                    d -= sum(1 for x in dims if x < d)
            return d, lay
        if name in _NONLINEAR or name in _SCALE_FREE:
            t, d, lay = widened[0]
            dim = kwargs.get('dim', args[1] if len(args) > 1 and
                             isinstance(args[1], int) else None)
            if name == 'normalize' and dim is None:
                dim = 1
            if name == 'layer_norm':
                shape = args[1] if len(args) > 1 else kwargs['normalized_shape']
                dim = [t.dim() - 1 - i for i in range(len(shape))]
            dims = dim if isinstance(dim, (list, tuple)) else \
                ([dim] if dim is not None else [])
            over = any(x % t.dim() == d for x in dims)
            if name == 'layer_norm' and over:
                counts = lay.counts()
                if not bool((counts == counts[0]).all()):
                    self.fail(where, 'op', 'layer_norm() over widened channels '
                              'with unequal replica counts')
                elif not lay.is_exact:
                    self.flip(self.sources(run, t), exact=True)
                return d, lay.exact()
            if name in ('softmax', 'log_softmax', 'normalize', 'glu') and over:
                self.fail(where, 'op', f'{name}() over the widened channels')
                return d, lay.exact()
            if name in _SCALE_FREE:
                return d, lay.exact()
            if not lay.is_exact:
                self.flip(self.sources(run, t), exact=True)
            return d, lay.exact()
        if name in _ADDITIVE:
            return self._binary(run, name, args, lays, where, 'additive')
        if name in _MULTIPLICATIVE:
            return self._binary(run, name, args, lays, where, 'mul')
        if name in _DIVISION:
            return self._binary(run, name, args, lays, where, 'div')
        if name in _MATMUL:
            return self._matmul(run, lays, where, name)
        if name in _SDPA:
            return self._sdpa(run, lays, where)
        t, d, lay = widened[0]
        if name in _REFUSED:
            self.fail(where, 'op', f'{name}() on a widened tensor: '
                      f'{_REFUSED[name]}')
            return d, lay
        self.fail(where, 'op', f'functional {name}() on a widened tensor has no '
                  'rule')
        return d, lay

    def _binary(self, run, name, args, lays, where, mode):
        if name == 'where':
            lays = lays[1:]
        out_rank = max(t.dim() for t, _, _ in lays)
        widened = [(t, d + out_rank - t.dim(), lay) for t, d, lay in lays
                   if lay is not None]
        t0, d0, l0 = widened[0]
        for t, d, lay in widened[1:]:
            if d != d0 or not lay.same_map(l0):
                srcs = set()
                for tt, _, _ in widened:
                    srcs |= self.sources(run, tt)
                if not self.join(srcs):
                    self._flipped = False
                    self.flip(srcs, fixed=True)
                    if self._flipped:
                        self.kept.append((where, name))
                    else:
                        self.fail(where, 'op', f'{name}() of tensors widened in '
                                  'different layouts')
                return d0, l0
        if mode == 'additive':
            params = [(t, self._param_of(run, t)) for t, _, _ in widened]
            ref = next(((t, d, lay) for (t, d, lay), (_, pn) in
                        zip(widened, params) if pn is None), None)
            if ref is not None:
                for (t, d, lay), (_, pn) in zip(widened, params):
                    if pn is not None and not torch.allclose(lay.factor,
                                                             ref[2].factor):
                        # a parameter follows the tensor it is added to
                        pd, play = self.param_layouts[pn]
                        self.param_layouts[pn] = (pd, Layout(
                            play.index, ref[2].factor, play.width))
                        self.changed = True
                        return ref[1], ref[2]
            for t, d, lay in widened[1:]:
                if not torch.allclose(lay.factor, l0.factor):
                    srcs = set()
                    for tt, _, _ in widened:
                        srcs |= self.sources(run, tt)
                    self.flip(srcs, exact=True)
                    return d0, l0
            consts = [a for a in args if isinstance(a, (int, float)) and a != 0
                      and not isinstance(a, bool)]
            consts += [t for t, d, lay in lays if lay is None and
                       isinstance(t, torch.Tensor) and t.dtype != torch.bool]
            if name.startswith('masked_fill') and len(args) > 2 and \
                    args[2] != 0:
                consts.append(args[2])
            if consts and not l0.is_exact:
                srcs = set()
                for tt, _, _ in widened:
                    srcs |= self.sources(run, tt)
                self.flip(srcs, exact=True)
            return d0, l0
        factor = torch.ones_like(l0.factor)
        for t, d, lay in widened:
            if mode == 'div' and t is not lays[0][0]:
                factor = factor / lay.factor
            elif mode == 'div' and name == '__rtruediv__':
                factor = factor / lay.factor
            else:
                factor = factor * lay.factor
        return d0, Layout(l0.index, factor, l0.width)

    def _param_of(self, run, t) -> Optional[str]:
        """The planned free parameter a (widened) tensor was derived from."""
        if not run.tagged(t):
            return None
        o = self.origins.single(run.tags[id(t)])
        if o is not None:
            key = self.origins.keys[o]
            if key[0] == 'param' and key[1] in self.param_layouts:
                return key[1]
        return None

    def _matmul(self, run, lays, where, name):
        (a, da, la), (b, db, lb) = lays[0], lays[1]
        if a.dim() < 2 or b.dim() < 2:
            self.fail(where, 'op', f'{name}() of vectors on widened tensors')
            return None, None
        ra = None if la is None else da - a.dim()
        rb = None if lb is None else db - b.dim()
        out_rank = max(a.dim(), b.dim())
        if ra == -1 or rb == -2:
            if ra != -1 or rb != -2 or not la.same_map(lb):
                self.fail(where, 'op', f'{name}() contracts widened channels '
                          'with a tensor widened otherwise')
                return None, None
            s = torch.zeros(la.width, dtype=torch.float64).index_add(
                0, la.index, la.factor * lb.factor)
            if not torch.allclose(s, torch.ones_like(s)):
                if not la.is_exact:
                    self.flip(self.sources(run, a), exact=True)
                else:
                    self.flip(self.sources(run, b), exact=True)
            return None, None
        outs = []
        if ra is not None and ra == -2:
            outs.append((out_rank - 2, la))
        if rb is not None and rb == -1:
            outs.append((out_rank - 1, lb))
        batch = [(out_rank + r, l) for r, l in ((ra, la), (rb, lb))
                 if r is not None and r <= -3]
        if batch:
            if len(batch) == 2 and (batch[0][0] != batch[1][0] or
                                    not batch[0][1].same_map(batch[1][1])):
                self.fail(where, 'op', f'{name}() of tensors widened along '
                          'different batch dims')
                return None, None
            f = torch.ones_like(batch[0][1].factor)
            for _, l in batch:
                f = f * l.factor
            outs.append((batch[0][0], Layout(batch[0][1].index, f,
                                             batch[0][1].width)))
        if len(outs) != 1:
            self.fail(where, 'op', f'{name}() gives a tensor widened along two '
                      'dims')
            return None, None
        return outs[0]

    def _sdpa(self, run, lays, where):
        (q, dq, lq), (k, dk, lk), (v, dv, lv) = lays[:3]
        if lq is None or lk is None or lv is None or not (
                dq == dk == dv and dq < q.dim() - 2 and lq.same_map(lk) and
                lk.same_map(lv)):
            self.fail(where, 'op', 'scaled_dot_product_attention() on tensors '
                      'not widened by whole heads')
            return dv, lv
        if not lq.is_exact:
            self.flip(self.sources(run, q), exact=True)
        if not lk.is_exact:
            self.flip(self.sources(run, k), exact=True)
        return dv, lv


def _grouped_out(module, in_l: Layout) -> Optional[Layout]:
    """The output layout of a grouped conv, which follows its input's.

    Teacher groups either replicate whole student groups (the student's group
    size) or widen each group (the student's group count); each output channel
    carries the factor of its group's inputs.
    """
    groups = module.groups
    cg_in, cg_out = module.in_channels // groups, module.out_channels // groups
    ct_in = in_l.teacher_width
    for t_groups in dict.fromkeys((ct_in // cg_in, groups)):
        if ct_in % t_groups:
            continue
        tg_in = ct_in // t_groups
        gi = in_l.index.reshape(t_groups, tg_in)
        sg = gi // cg_in
        if not bool((sg == sg[:, :1]).all()):
            continue
        fac = in_l.factor.reshape(t_groups, tg_in)
        if not torch.allclose(fac, fac[:, :1].expand_as(fac)):
            continue
        per = tg_in // cg_in if tg_in % cg_in == 0 else None
        if per is None:
            continue
        local = torch.arange(per * cg_out) % cg_out
        idx = (local[None, :] + sg[:, :1] * cg_out).reshape(-1)
        f = fac[:, :1].expand(t_groups, per * cg_out).reshape(-1)
        lay = Layout(idx, f, module.out_channels)
        if lay.complete:
            return lay
    return None


# ------------------------------------------------------------------ driver
def _unit_paths(model: nn.Module):
    """``{path: kind}`` of the outermost modules with a rule (named_modules is
    pre-order, so a unit's submodules follow it directly and are skipped)."""
    units, inside = {}, None
    for path, m in model.named_modules():
        if inside is not None and path.startswith(inside):
            continue
        kind = unit_kind(m)
        if kind is not None:
            units[path] = kind
            inside = path + '.'
    return units


def _inside(path: str, units) -> bool:
    """Whether ``path`` is a submodule of one of ``units`` (module paths)."""
    cut = path.rfind('.')
    while cut > 0:
        if path[:cut] in units:
            return True
        cut = path.rfind('.', 0, cut)
    return False


def _student_run(student, inputs, forward_fn, origins):
    units = _unit_paths(student)
    run = _StudentRun(student, origins, units)
    run.module_struct = {}
    run.module_origins = {}
    run.module_in_srcs = {}
    run.module_in_all = {}
    handles = []

    def pre(path):
        def hook(module, args, kwargs):
            run.stack.append(path)
            if run.paused or run.rule_depth:
                run.rule_depth += 1
                return
            run.paused += 1
            try:
                ts = _tensors((args, kwargs))
                call = run.calls.get(path, 0)
                if ts:
                    run.ensure_param_tags(args, kwargs)
                    run.module_in[(path, call)] = run.tags.get(id(ts[0]))
                    run.module_in_all[(path, call)] = [
                        run.tags.get(id(t)) for t in ts]
                    if units[path] == 'roi_pool':  # the features, not boxes
                        feats = [t for t in ts if t.dim() == 4]
                        run.module_in_srcs[(path, call)] = run._in_srcs(
                            feats, {})
                    else:
                        run.module_in_srcs[(path, call)] = run._in_srcs(
                            args, kwargs)
            finally:
                run.paused -= 1
            run.rule_depth += 1
        return hook

    def post(path):
        def hook(module, args, kwargs, output):
            run.stack.pop()
            run.rule_depth -= 1
            if run.paused or run.rule_depth:
                return
            run.paused += 1
            try:
                call = run.calls.get(path, 0)
                run.calls[path] = call + 1
                leaves, spec = tree_flatten(output)
                pos = [i for i, x in enumerate(leaves)
                       if isinstance(x, torch.Tensor)]
                outs = []
                if (units[path] in MIXING and getattr(module, 'groups', 1) == 1) \
                        or units[path] == 'attention':
                    srcs = frozenset({('module', path)})
                else:  # norms, activations, scales pass their input's layout
                    srcs = run.module_in_srcs.pop((path, call), frozenset())
                kind = units[path]
                cdim = _CHANNEL_DIM.get(kind)
                if kind == 'layernorm2d' and kwargs.get('data_format') == \
                        'channel_last':
                    cdim = -1
                if cdim is None:  # activations, scales: their input's dim
                    ins = _tensors((args, kwargs))
                    cdim = run.dims.get(id(ins[0])) if ins else None
                for i in pos:
                    t = leaves[i]
                    dim = None if cdim is None else cdim % t.dim()
                    ids = origins.new(t.shape, ('module', path, call), srcs,
                                      dim)
                    if dim is not None:
                        run.dims[id(t)] = dim
                    run.module_origins.setdefault((path, call), []).append(
                        len(origins.bases) - 1)
                    run.tag(t, ids, srcs=srcs)
                    outs.append((t.detach().clone(), ids))
                run.module_out[(path, call)] = outs

                def rebuild(ts, leaves=leaves, spec=spec, pos=pos):
                    from torch.utils._pytree import tree_unflatten
                    new = list(leaves)
                    for i, t in zip(pos, ts):
                        new[i] = t
                    return tree_unflatten(new, spec)
                run.module_struct[(path, call)] = rebuild
            finally:
                run.paused -= 1
        return hook

    for path, module in student.named_modules():
        if path in units:
            handles.append(module.register_forward_pre_hook(pre(path),
                                                            with_kwargs=True))
            handles.append(module.register_forward_hook(post(path),
                                                        with_kwargs=True))
        elif unit_kind(module) is None and not _inside(path, units):
            handles.append(module.register_forward_pre_hook(
                lambda m, a, path=path: _push(run, path)))
            handles.append(module.register_forward_hook(
                lambda m, a, o: _pop(run)))
    try:
        with torch.no_grad(), run:
            for i, t in enumerate(_tensors(inputs)):
                run.tag(t, origins.new(t.shape, ('input', i)))
            outputs = forward_fn(student, inputs)
    finally:
        for h in handles:
            h.remove()
    return run, outputs


def _teacher_run(teacher_template, student_run, inputs, forward_fn, planner,
                 attr_fn):
    from .copying import copy_structure
    # the structure is copied, the parameters shared: the run never writes
    # them, and the ones it widens are replaced on the copy (setattr below)
    teacher = copy_structure(teacher_template, buffers=False)
    origins = student_run.origins
    run = _TeacherRun(teacher, origins, student_run, planner)
    if planner.last_run is not None:  # the previous iteration's
        planner.last_run.release()
    planner.last_run = run
    units = _unit_paths(teacher)
    stubs = {}
    for path in units:
        original = teacher.get_submodule(path)
        stubs[id(original)] = _Stub(path, original, run)
    replace_modules(teacher, stubs)
    # free parameters planned so far: widened before the run
    for pname, (d, lay) in planner.param_layouts.items():
        owner_path, _, attr = pname.rpartition('.')
        owner = teacher.get_submodule(owner_path) if owner_path else teacher
        old = getattr(owner, attr)
        new = lay.expand(old.detach(), d).to(old.dtype)
        if isinstance(old, nn.Parameter):
            new = nn.Parameter(new, old.requires_grad)
            setattr(owner, attr, new)
        else:
            owner._buffers[attr] = new
    run.param_names = {}
    for name, p in teacher.named_parameters(remove_duplicate=False):
        run.param_names.setdefault(id(p), name)
    for name, b in teacher.named_buffers(remove_duplicate=False):
        if b.is_floating_point():
            run.param_names.setdefault(id(b), name)
    if attr_fn is not None:
        attr_fn(teacher, planner)
    handles = []
    for path, module in teacher.named_modules():
        if isinstance(module, _Stub) or _inside(path, units):
            continue
        handles.append(module.register_forward_pre_hook(
            lambda m, a, path=path: _push(run, path)))
        handles.append(module.register_forward_hook(
            lambda m, a, o: _pop(run)))
    s_inputs = _tensors(inputs)
    try:
        with torch.no_grad(), run:
            for t in s_inputs:
                run.tag(t, student_run.tags[id(t)])
            outputs = forward_fn(teacher, inputs)
    finally:
        for h in handles:
            h.remove()
    return run, outputs


def plan_layouts(student: nn.Module, inputs, forward_fn: Callable, ratio: float,
                 attr_fn: Optional[Callable] = None,
                 max_iterations: int = 16) -> LayoutPlan:
    """Plan every widened module's layouts (see the module docstring).

    Args:
        student (nn.Module): The student, in eval mode; not modified.
        inputs: Probe batch for ``forward_fn``.
        forward_fn (callable): ``(model, inputs) -> outputs``.
        ratio (float): Width ratio.
        attr_fn (callable, optional): ``(teacher_copy, planner)``: updates the
            attributes a forward reads (``num_heads``, ``width``...).

    Returns:
        LayoutPlan: with ``unsupported`` filled when some op / module cannot be
        widened exactly (the caller raises).
    """
    origins = _Origins()
    s_run, s_outputs = _student_run(student, inputs, forward_fn, origins)
    planner = _Planner(ratio)
    planner.origins = origins
    try:
        return _plan(student, inputs, forward_fn, attr_fn, max_iterations,
                     s_run, s_outputs, planner)
    finally:
        # the runs hold the ids of every activation and reference each other
        # through the planner: free them now
        if planner.last_run is not None:
            planner.last_run.release()
        planner.last_run = None
        s_run.release()


def _plan(student, inputs, forward_fn, attr_fn, max_iterations, s_run,
          s_outputs, planner) -> LayoutPlan:
    for src, block in s_run.split_blocks.items():
        planner.flip({src}, block=block)
    s_out_tags = [s_run.tags.get(id(t)) for t in _tensors(s_outputs)]
    # layers the forward declares output boundaries (outputs read by code
    # that must see the student's values, e.g. an RPN's decoded proposals)
    bounds = getattr(forward_fn, 'output_boundaries', None)
    for path in (bounds(student) if bounds is not None else ()):
        if path not in s_run.rule_paths or \
                s_run.rule_paths[path] not in MIXING:
            raise ValueError(f'output boundary {path!r} is not a conv / '
                             'linear layer of the model')
        planner.flip({('module', path)}, fixed=True)
    # the dims of the modules' output origins
    plan = LayoutPlan()
    error = None
    for it in range(max_iterations):
        planner.reset()
        error = None
        try:
            t_run, t_outputs = _teacher_run(student, s_run, inputs, forward_fn,
                                            planner, attr_fn)
        except PlanningError as e:
            error = (_where(planner), 'op', str(e))
            if not planner.changed:
                break
            continue
        except Exception as e:  # noqa: BLE001  a shape error in the model's code
            error = (_where(planner), type(e).__name__,
                     f'{e}'.split('\n')[0] + ' (the teacher\'s code fails on '
                     'the widened tensors: a width it reads is not widened, or '
                     'an op has no layout rule)')
            if not planner.changed:
                break
            continue
        _record_origin_dims(planner, s_run)
        outs = []
        for t, s in zip(_tensors(t_outputs), s_out_tags):
            if s is None or not t_run.tagged(t) or id(t) in t_run.tainted:
                outs.append(None)
                continue
            try:
                d, lay = t_run.layout_of(t, s)
            except PlanningError as e:
                planner.fail('<outputs>', 'output', str(e))
                outs.append(None)
                continue
            if lay is not None:
                planner.flip(planner.sources(t_run, t), fixed=True)
            outs.append(None if lay is None else (d, lay))
        plan.iterations = it + 1
        if not planner.changed:
            plan.output_layouts = outs
            break
    plan.modules = dict(planner.records)
    plan.params = dict(planner.param_layouts)
    plan.unsupported = list(planner.failures)
    from .kinds import REFUSED, qualname
    for path, kind in s_run.rule_paths.items():  # classes with no rule at all
        if kind == 'refused' and any(k[0] == path for k in s_run.module_out):
            module = student.get_submodule(path)
            for sub, m in module.named_modules():
                if unit_kind(m) == 'refused':
                    entry = (f'{path}.{sub}' if sub else path,
                             type(m).__name__, REFUSED[qualname(m)])
                    if entry not in plan.unsupported:
                        plan.unsupported.append(entry)
    plan.bad_ratio = list(dict.fromkeys(planner.bad_ratio))
    if error is not None:
        plan.unsupported.append(error)
    elif planner.changed:
        plan.unsupported.append(('<model>', 'plan', 'the layout choices did not '
                                 f'settle in {max_iterations} iterations'))
    plan.choices = {k: planner.choice(k) for k in list(planner.choices)}
    plan.kept = list(dict.fromkeys(planner.kept))
    plan.fixed_sources = sorted(k[1] for k, c in plan.choices.items()
                                if c.fixed)
    return plan


def _where(planner) -> str:
    run = getattr(planner, 'last_run', None)
    return run.stack[-1] if run is not None and run.stack else '<model>'


def _record_origin_dims(planner, s_run):
    for o, key in enumerate(planner.origins.keys):
        if key[0] == 'module':
            rec = planner.records.get(key[1])
            if rec is not None and rec.out_dim is not None:
                planner.origin_dims[o] = rec.out_dim


def replace_modules(root: nn.Module, new_by_id: Dict[int, nn.Module]):
    """Replace every reference to a module (a module registered under two
    names, e.g. mmcv FFN's ``activate`` and ``layers.0.1``) by its new one."""
    for module in list(root.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and id(child) in new_by_id:
                module._modules[name] = new_by_id[id(child)]


def _push(run, path):
    run.stack.append(path)


def _pop(run):
    run.stack.pop()
