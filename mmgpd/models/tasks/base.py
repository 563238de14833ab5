"""Shared helpers of the task adapters."""
from typing import Callable

import torch.nn as nn

from mmgpd.reparam import HardStudent


def call(model: nn.Module, fn: Callable, *args, **kwargs):
    """``fn(model, ...)``; for the hard strategy's student view, with the
    student's tensors derived from the dynamic teacher (``HardStudent.call``)."""
    if isinstance(model, HardStudent):
        return model.call(fn, *args, **kwargs)
    return fn(model, *args, **kwargs)


def template(model: nn.Module) -> nn.Module:
    """The module whose structure ``model`` runs (the view's template)."""
    return model.template if isinstance(model, HardStudent) else model
