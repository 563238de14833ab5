"""A model's op structure on a batch: does its forward depend on the batch size?

IR plans layouts on one image of the probe (the planner's tag bookkeeping
scales with the activations) and verifies on the whole probe.  A forward
whose *ops* change with the batch size (``squeeze()`` dropping the batch dim
of one image) must be planned again on the whole probe when the one-image
plan fails; a forward whose ops do not change fails the same way on any
batch, so a refusal found on one image stands.  :func:`op_signature` is the
cheap test: one plain forward (no tags) recording every torch function's
name and the rank of each tensor it returns.
"""
from typing import Callable, List, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ['op_signature']


class _Signature(TorchFunctionMode):

    def __init__(self):
        super().__init__()
        self.ops: List[Tuple[str, Tuple[int, ...]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):  # the usual case, without pytree
            ranks = (out.dim(), )
        else:
            leaves, _ = tree_flatten(out)
            ranks = tuple(t.dim() for t in leaves
                          if isinstance(t, torch.Tensor))
        self.ops.append((getattr(func, '__name__', None) or repr(func), ranks))
        return out


def op_signature(model, inputs, forward_fn: Callable) -> tuple:
    """``((op name, ranks of its tensor outputs), ...)`` of one eval-mode,
    no-grad forward of ``model`` on ``inputs`` (training flags restored)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), _Signature() as sig:
            forward_fn(model, inputs)
    finally:
        for m, flag in flags:
            m.training = flag
    return tuple(sig.ops)
