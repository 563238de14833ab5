"""Channel-Branch Reparameterization (CBR): the student folded out of T_d.

For every student tensor, its :class:`~.ir.StateRule` says where it lives in the
dynamic teacher: branch convs are merged into one kernel (``merged_weight()``),
then the first replica block is taken and rescaled by its :class:`ParamMap`
(``W[o, i] = n_o · Ŵ[o, i]`` for hidden outputs); norm affine parameters are
sliced (shared, unscaled); batch-norm running statistics come from the student's
own buffers kept on the teacher.

:func:`derive_student_state` is differentiable (the hard strategy's student
view runs on it every step); :func:`extract_student` detaches it into a plain
module of the student's class.
"""
import copy
from typing import Dict

import torch
import torch.nn as nn

from .layers import full_precision

__all__ = ['derive_student_state', 'extract_student', 'get_plan']


def get_plan(teacher: nn.Module):
    """The :class:`~.ir.ReparamPlan` of a dynamic teacher built by IR.

    Raises:
        ValueError: If ``teacher`` was not built by ``inverse_reparameterize``.
    """
    plan = getattr(teacher, 'gpd_plan', None)
    if plan is None:
        raise ValueError(
            f'{type(teacher).__name__} has no gpd_plan: it was not built by '
            'mmgpd.reparam.inverse_reparameterize')
    return plan


def derive_student_state(teacher: nn.Module,
                         grad_rescale: bool = False) -> Dict[str, torch.Tensor]:
    """CBR as a differentiable function of the teacher's current tensors.

    Args:
        teacher (nn.Module): A dynamic teacher (has ``gpd_plan``).
        grad_rescale (bool): Divide the student's gradient on each shared
            tensor by the CBR factor once more, undoing the factor² change of the
            student's effective learning rate (docs/design.md). Defaults to False.

    Returns:
        dict[str, Tensor]: One tensor per student parameter and buffer, keyed
        like the student's ``named_parameters()`` / ``named_buffers()``, in
        the teacher's dtypes: computed with autocast off (fp32 parameters give
        fp32 student weights under fp16 / bf16 autocast).
        Buffers are the teacher's own tensors (updated in place by a student
        forward in train mode).
    """
    plan = get_plan(teacher)
    # CBR's contract / rescale / merges stay fp32
    with full_precision('cuda'), full_precision('cpu'):
        return _derive(teacher, plan, grad_rescale)


def _derive(teacher, plan, grad_rescale):
    state = {}
    for rule in plan.rules:
        pmap = rule.pmap
        if rule.merged:
            conv = teacher.get_submodule(rule.teacher_name)
            if pmap is not None and pmap.is_prefix_block:
                # merge only the student's block: branches are linear per block
                sizes = pmap.block_sizes()
                block = conv.merged_weight(sizes.get(0), sizes.get(1))
                state[rule.student_name] = _like(
                    pmap.rescale(block, grad_rescale), conv.weight)
                continue
            source = conv.merged_weight()
        else:
            source = _get_tensor(teacher, rule.teacher_name)
        state[rule.student_name] = source if pmap is None else \
            _like(pmap.contract(source, grad_rescale), source)
    return state


def _like(value: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``value`` in ``source``'s memory format where that is channels_last
    (a 4-D teacher weight in ``torch.channels_last`` gives a channels_last
    student weight, whatever strides the slicing left)."""
    cl = torch.channels_last
    if value.dim() == 4 and source.dim() == 4 and \
            not source.is_contiguous() and source.is_contiguous(memory_format=cl) \
            and not value.is_contiguous(memory_format=cl):
        return value.contiguous(memory_format=cl)
    return value


def _get_tensor(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition('.')
    return getattr(module.get_submodule(owner) if owner else module, attr)


def extract_student(teacher: nn.Module) -> nn.Module:
    """CBR: a plain student module (the student's own class) from ``teacher``.

    Branches are merged and replicas folded; ``state_dict()`` keys and shapes
    equal the original student's.  The returned module is independent of the
    teacher (its tensors are copies) and is in the teacher's training mode.
    """
    plan = get_plan(teacher)
    student = copy.deepcopy(plan.template)
    with torch.no_grad():
        state = derive_student_state(teacher)
        for name, value in state.items():
            target = _get_tensor(student, name)
            if target.shape != value.shape:
                raise RuntimeError(
                    f'CBR produced {tuple(value.shape)} for {name}, the student '
                    f'has {tuple(target.shape)}')
            owner, _, attr = name.rpartition('.')
            mod = student.get_submodule(owner) if owner else student
            if isinstance(target, nn.Parameter):
                setattr(mod, attr, nn.Parameter(value.detach().clone(),
                                                target.requires_grad))
            else:
                mod._buffers[attr] = value.detach().clone()
    student.train(teacher.training)
    return student
