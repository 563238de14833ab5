"""Find, by running the student once, which channel spaces the teacher may widen.

The student is run on a probe batch under a :class:`torch.overrides.TorchFunctionMode`
that tags every tensor with its *origin*: the channel-mixing layers (conv /
linear) whose output it is, through any chain of channel-wise operations (norms,
activations, pooling, residual additions, reshapes...), plus ``'input'`` for the
model's input and ``('param', name)`` for free parameters (``cls_token``...).

From the origins:

* **output boundaries** are the mixing layers whose outputs reach the model's
  outputs: their output keeps its size (classifier, box / class predictors);
* a mixing layer, norm or activation whose input derives only from the model's
  input or from output boundaries is in a *fixed* space (the stem's input);
* everything else is *hidden* and is widened.

Functional operations that run on hidden tensors outside a module with a rule are
recorded, so that IR can refuse ops it cannot prove exact (``torch.sigmoid`` in
a custom gate...) instead of building a silently inexact teacher.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Set, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .kinds import MIXING, UNIT_KINDS, module_kind

__all__ = ['TraceResult', 'trace_student', 'SAFE_FUNCTIONS']

INPUT = 'input'

# Functions that are exact on carried tensors (channel-wise and positively
# homogeneous, or pure data movement).  Anything else on a hidden tensor outside
# a module with a rule makes IR refuse.
SAFE_FUNCTIONS = frozenset({
    'add', '__add__', '__radd__', '__iadd__', 'add_', 'sub', '__sub__',
    '__rsub__', 'neg', '__neg__', 'cat', 'concat', 'stack', 'reshape', 'view',
    'view_as', 'permute', 'transpose', 'flatten', 'unflatten', 'contiguous',
    'expand', 'expand_as', '__getitem__', 'split', 'chunk', 'unbind', 'squeeze',
    'unsqueeze', 'interpolate', 'upsample', 'relu', 'relu_', 'max_pool1d',
    'max_pool2d', 'max_pool3d', 'avg_pool1d', 'avg_pool2d', 'avg_pool3d',
    'adaptive_avg_pool1d', 'adaptive_avg_pool2d', 'adaptive_max_pool2d',
    'dropout', 'size', 'dim', 'numel', 'clone', 'to', 'float', 'half',
    'type_as', 'pad', 'max', 'maximum', 'detach', 'requires_grad_',
    '__get__', '__len__', '__iter__', 'shape', 'dtype', 'device', 'type',
    'new_zeros', 'new_ones', 'new_empty', 'zeros_like', 'ones_like',
    'is_floating_point', 'get_device', 'ndim', 'split_with_sizes',
    'narrow', 'select', 'index_select', 'roll', 'repeat', 'tile', 'flip',
    'mean',  # over tokens / space: channel-wise; over channels the probe check catches it
    'sum', '__setitem__', 'is_contiguous', 'element_size', 'storage_offset',
    'stride', 'data_ptr', 'untyped_storage', '__format__', '__bool__',
})


@dataclass
class TraceResult:
    """What one probe forward of the student showed.

    Attributes:
        executed (set[str]): Paths of the leaf / unit modules that ran.
        input_origin (dict[str, frozenset]): Origin of each executed module's input.
        output_layers (set[str]): Mixing layers whose output reaches the outputs.
        hidden_params (set[str]): Free parameters combined with hidden tensors.
        free_params (set[str]): All free parameters seen in the forward.
        unsafe_ops (list[tuple]): ``(function name, module path, origin)`` of
            functional ops on tensors outside modules with a rule.
        mixed (list[tuple]): ``(module path, origin)`` of modules whose input
            mixes fixed and hidden spaces.
    """
    executed: Set[str] = field(default_factory=set)
    input_origin: Dict[str, FrozenSet] = field(default_factory=dict)
    output_layers: Set[str] = field(default_factory=set)
    mixing_layers: Set[str] = field(default_factory=set)
    hidden_params: Set[str] = field(default_factory=set)
    free_params: Set[str] = field(default_factory=set)
    unsafe_ops: List[Tuple[str, str, FrozenSet]] = field(default_factory=list)
    origins_seen: Set[FrozenSet] = field(default_factory=set)
    input_shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)

    def is_hidden_layer(self, path: str) -> bool:
        return path in self.mixing_layers and path not in self.output_layers

    def widened(self, origin: FrozenSet) -> bool:
        """Whether a tensor of this origin is carried widened by the teacher."""
        for tag in origin:
            if isinstance(tag, tuple):
                if tag[0] == 'layer' and self.is_hidden_layer(tag[1]):
                    return True
                if tag[0] == 'param' and tag[1] in self.hidden_params:
                    return True
        return False

    def mixes_spaces(self, origin: FrozenSet) -> bool:
        """Whether ``origin`` joins a hidden space with a fixed one."""
        if not self.widened(origin):
            return False
        for tag in origin:
            if tag == INPUT:
                return True
            if isinstance(tag, tuple) and tag[0] == 'layer' and \
                    tag[1] in self.output_layers:
                return True
        return False


class _OriginMode(TorchFunctionMode):

    def __init__(self, result: TraceResult, param_tags, stack: List[str],
                 rule_depth: List[int]):
        super().__init__()
        self.result = result
        self.origin: Dict[int, FrozenSet] = {}
        self.keep: List[torch.Tensor] = []  # keeps ids unique during the trace
        self.param_tags = param_tags
        self.stack = stack
        self.rule_depth = rule_depth

    def origin_of(self, t: torch.Tensor) -> FrozenSet:
        tag = self.param_tags.get(id(t))
        if tag is not None:
            return frozenset([tag])
        return self.origin.get(id(t), frozenset())

    def set_origin(self, t: torch.Tensor, origin: FrozenSet):
        self.origin[id(t)] = origin
        self.keep.append(t)
        self.result.origins_seen.add(origin)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        leaves, _ = tree_flatten((args, kwargs))
        origin = frozenset().union(*(self.origin_of(t) for t in leaves
                                     if isinstance(t, torch.Tensor)))
        if origin:
            if self.rule_depth[0] == 0:
                name = getattr(func, '__name__', repr(func))
                if name not in SAFE_FUNCTIONS:
                    where = self.stack[-1] if self.stack else ''
                    self.result.unsafe_ops.append((name, where, origin))
            out_leaves, _ = tree_flatten(out)
            for t in out_leaves:
                if isinstance(t, torch.Tensor):
                    self.set_origin(t, origin)
        return out


def trace_student(model: nn.Module, inputs, forward_fn: Callable) -> TraceResult:
    """Run ``forward_fn(model, inputs)`` once (no grad) and collect origins.

    Args:
        model (nn.Module): The student; its parameters and buffers are not
            changed (run it in eval mode for that).
        inputs: The probe batch passed to ``forward_fn``.
        forward_fn (callable): ``(model, inputs) -> outputs`` (any nesting).

    Returns:
        TraceResult
    """
    result = TraceResult()
    stack: List[str] = []
    rule_depth = [0]
    param_tags = {}
    for mod_path, module in model.named_modules():
        if module_kind(module) == 'container':
            for pname, p in module.named_parameters(recurse=False):
                full = f'{mod_path}.{pname}' if mod_path else pname
                param_tags[id(p)] = ('param', full)
    mode = _OriginMode(result, param_tags, stack, rule_depth)
    handles = []

    def pre_hook(path, is_rule):

        def hook(module, args, kwargs=None):
            stack.append(path)
            if is_rule:
                leaves, _ = tree_flatten(args)
                origin = frozenset().union(*(mode.origin_of(t) for t in leaves
                                             if isinstance(t, torch.Tensor)))
                result.executed.add(path)
                tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
                if tensors:
                    result.input_shapes.setdefault(path, tuple(tensors[0].shape))
                result.input_origin[path] = result.input_origin.get(
                    path, frozenset()) | origin
                rule_depth[0] += 1

        return hook

    def post_hook(path, is_rule, is_mixing):

        def hook(module, args, output):
            stack.pop()
            if is_rule:
                rule_depth[0] -= 1
                if is_mixing:
                    result.mixing_layers.add(path)
                    leaves, _ = tree_flatten(output)
                    for t in leaves:
                        if isinstance(t, torch.Tensor):
                            mode.set_origin(t, frozenset([('layer', path)]))

        return hook

    unit_prefixes: List[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + '.') for p in unit_prefixes):
            continue  # inside a unit (attention...): its rule covers the children
        kind = module_kind(module)
        if kind in UNIT_KINDS:
            unit_prefixes.append(path)
        is_rule = kind != 'container'
        is_mixing = kind in MIXING or kind == 'attention'
        handles.append(module.register_forward_pre_hook(pre_hook(path, is_rule)))
        handles.append(module.register_forward_hook(
            post_hook(path, is_rule, is_mixing)))

    leaves, _ = tree_flatten(inputs)
    try:
        with torch.no_grad(), mode:
            for t in leaves:
                if isinstance(t, torch.Tensor):
                    mode.set_origin(t, frozenset([INPUT]))
            outputs = forward_fn(model, inputs)
            out_leaves, _ = tree_flatten(outputs)
            out_origin = frozenset().union(*(mode.origin_of(t) for t in out_leaves
                                             if isinstance(t, torch.Tensor)))
    finally:
        for h in handles:
            h.remove()
    result.output_layers = {
        tag[1] for tag in out_origin
        if isinstance(tag, tuple) and tag[0] == 'layer'
    }
    result.free_params = {tag[1] for tag in param_tags.values()}
    for origin in result.origins_seen:
        params = [t[1] for t in origin if isinstance(t, tuple) and t[0] == 'param']
        if params and any(
                isinstance(t, tuple) and t[0] == 'layer'
                and result.is_hidden_layer(t[1]) for t in origin):
            result.hidden_params.update(params)
    return result
