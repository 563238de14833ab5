"""Parameter sharing between the student and its dynamic teacher.

**Hard strategy** (default in GPD): the student owns no weights.  A
:class:`HardStudent` runs the unmodified student module (its class, head, loss
and all) through :func:`torch.func.functional_call` with the tensors that
:func:`~.cbr.derive_student_state` derives from the teacher on every call, so
the student's loss back-propagates into the teacher's one parameter set.
Norm affine parameters are shared; batch-norm running statistics are the
student's own (kept on the teacher as ``student_running_*``).

**Soft strategy**: student and teacher hold separate parameters; IR initialises
the teacher from the student and CBR (``extract_student``) folds the teacher
back at the end.  :func:`soft_pair` returns such a pair.
"""
import copy
from typing import Callable, Tuple

import torch.nn as nn
from torch.func import functional_call

from .cbr import derive_student_state, get_plan
from .ir import inverse_reparameterize

__all__ = ['HardStudent', 'soft_pair']


class HardStudent(nn.Module):
    """The hard strategy's student view of a dynamic teacher.

    The teacher is referenced, not registered as a submodule, so that its
    parameters appear once in a model that holds both (``state_dict``,
    optimizer, DDP).  Calling the view calls the student's ``forward`` (any
    signature, e.g. ``mode='loss'`` for MMEngine models).

    Args:
        teacher (nn.Module): The dynamic teacher (built by IR).
        grad_rescale (bool): See :func:`derive_student_state`. Defaults to False.
    """

    def __init__(self, teacher: nn.Module, grad_rescale: bool = False):
        super().__init__()
        get_plan(teacher)
        object.__setattr__(self, '_teacher', teacher)
        # made now, not on the first call: a compiled forward would guard on
        # its absence and recompile once
        object.__setattr__(self, '_caller', _Caller(self.template))
        self.grad_rescale = grad_rescale

    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    @property
    def template(self) -> nn.Module:
        """The student module whose ``forward`` runs (holds no live weights)."""
        return get_plan(self._teacher).template

    def state(self):
        """The student's tensors, derived from the teacher now (differentiable)."""
        return derive_student_state(self._teacher, self.grad_rescale)

    def train(self, mode: bool = True):
        super().train(mode)
        self.template.train(mode)
        return self

    def _apply(self, fn, *args, **kwargs):
        # ``.to(device)`` / ``.cuda()`` / ``.half()`` of the algorithm reach the
        # template too (not a registered submodule): every tensor it holds is
        # replaced by the derived state in a call, but the view must not keep
        # a CPU copy beside a CUDA teacher.
        super()._apply(fn, *args, **kwargs)
        self.template._apply(fn, *args, **kwargs)
        return self

    def call(self, fn: Callable, *args, **kwargs):
        """``fn(student, *args, **kwargs)`` with the student's tensors derived
        from the teacher now: any method of the student (``extract_feat``, a
        head's ``loss_by_feat`` ...), not only ``forward``."""
        template = self.template
        if template.training != self.training:
            template.train(self.training)
        caller = getattr(self, '_caller', None)
        if caller is None or caller.module is not template:
            caller = _Caller(template)
            object.__setattr__(self, '_caller', caller)  # not a submodule
        state = {f'module.{k}': v for k, v in self.state().items()}
        return functional_call(caller, state, (fn, ) + args, kwargs,
                               tie_weights=False, strict=False)

    def forward(self, *args, **kwargs):
        return self.call(_forward, *args, **kwargs)


def _forward(module: nn.Module, *args, **kwargs):
    return module(*args, **kwargs)


class _Caller(nn.Module):
    """Runs ``fn(module, ...)`` as its forward, so that ``functional_call`` can
    swap the module's tensors for a call of any of its methods."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn: Callable, *args, **kwargs):
        return fn(self.module, *args, **kwargs)


def soft_pair(student: nn.Module, ratio, **ir_kwargs) -> Tuple[nn.Module, nn.Module]:
    """The soft strategy: ``(student copy, dynamic teacher)`` with separate weights.

    The student keeps its own parameters; the teacher is IR of it.
    ``extract_student(teacher)`` gives the CBR student at the end.
    """
    teacher = inverse_reparameterize(student, ratio, **ir_kwargs)
    return copy.deepcopy(student), teacher
