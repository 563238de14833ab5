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


class Task:
    """What GPD reads of one task (see the package docstring). Subclasses
    implement ``accepts``, ``ir_inputs``, ``check_teacher``, ``outputs``,
    ``gt`` and ``predict``; the two extra checks default to none."""
    name = ''

    @staticmethod
    def check_student(student: nn.Module) -> None:
        """Refuse a student the task cannot train (config errors)."""

    @staticmethod
    def check_teacher_model(teacher: nn.Module, student: nn.Module) -> None:
        """Refuse a built static teacher whose outputs do not line up."""
