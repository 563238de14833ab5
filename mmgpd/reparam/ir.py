"""Inverse Reparameterization (IR): grow the dynamic teacher out of the student.

``inverse_reparameterize(student, ratio)`` returns a new module of the student's
own class, wider (and optionally multi-branch), that computes exactly the same
function at initialisation.  The student is not modified.

How (docs/design.md):

1. the layouts of every widened space are planned by running the student and
   the teacher's own code on element ids (``propagate.py``): fixed spaces
   (model input, outputs), cyclic or grouped replica maps, carried or exact
   factors, free parameters, and anything that has no rule (named);
2. every module with a rule is replaced by its widened counterpart
   (``rules.py``), each weight built by a :class:`~.parammap.ParamMap` (kept for
   CBR); attributes a forward reads are widened (``attrs.py``);
3. eligible k×k stride-1 convs grow branches (``BranchConv2d``); optional
   N(0, noise) breaks the replicas' symmetry;
4. the teacher verifies itself on the probe batch (eval mode) and IR raises
   :class:`IRVerificationError`, naming the first deviating module
   (``verify.py``), when ``max|T_d(x) − S(x)| > tol · max|S(x)|``.

The returned teacher carries its :class:`ReparamPlan` as ``teacher.gpd_plan``;
``extract_student`` (CBR) and the hard strategy's student view use it.
"""
import gc
import inspect
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..utils.allocator import heap_reuse
from .attrs import widen_attributes
from .copying import copy_structure
from .errors import IRVerificationError, UnsupportedModuleError
from .layers import BRANCHES
from .noise import NOISE_MODES, NoiseStream, add_noise, expected_draws
from .plan import ReparamPlan, StateRule
from .propagate import plan_layouts
from .replica import check_ratio
from .rules import Builder
from .trace import op_signature
from .verify import locate_deviation

__all__ = [
    'inverse_reparameterize', 'ReparamPlan', 'StateRule', 'default_forward',
    'default_probe_inputs', 'max_relative_deviation', 'DEFAULT_BRANCHES'
]

#: The branch set used by ``branches=True``: merging them costs element-wise ops
#: only.  ``'1x1_kxk'`` is available but costs a C_out·C_in²·k² product per merge.
DEFAULT_BRANCHES = ('1x1', '1x1_avg')


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
    if noise_mode not in NOISE_MODES:
        raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got '
                         f'{noise_mode!r}')
    forward_fn = forward_fn or default_forward
    if example_inputs is None:
        example_inputs = default_probe_inputs(student, generator=generator)

    build = dict(ratio=ratio, branches=branches, init=init, noise=noise,
                 noise_mode=noise_mode, forward_fn=forward_fn,
                 generator=generator)
    noisy = noise > 0 and noise_mode == 'iid'
    tol = tol if tol is not None else (1e-4 if noisy else 1e-5)
    # heap_reuse: IR's activation-size temporaries, not re-faulted
    with heap_reuse(), _no_full_gc():
        return _plan_build_verify(student, example_inputs, build, verify,
                                  forward_fn, tol)


@contextmanager
def _no_full_gc():
    """Python's cyclic GC off while IR runs (restored after).

    IR copies the model's structure four times (hundreds of thousands of
    Python objects for an HRNet), which triggers a full collection over the
    whole process (the model, mmengine's registries...): measured 0.30 s of
    HRNet-w18's 2.2 s IR, collecting nothing.  IR frees its own cycles (the
    planner's runs) explicitly, and what else it leaves is collected at the
    next collection after it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plan_build_verify(student, example_inputs, build, verify, forward_fn,
                       tol) -> nn.Module:
    """Plan on one image, build, verify on the whole probe (a failure is
    retried on the whole probe: see below)."""
    one = _first_image(example_inputs)
    if one is not None:
        # layouts do not depend on the batch: plan on one image (the tag
        # bookkeeping scales with the activations), verify on the whole
        # probe; a failure is retried on the whole probe, unless it is a
        # refusal and the forward runs the same ops on any batch (then the
        # retry would refuse alike: see trace.py)
        try:
            teacher = _build_teacher(student, one, **build)
            if verify:
                teacher.gpd_plan.ir_deviation = verify_teacher(
                    student, teacher, example_inputs, forward_fn, tol)
            return teacher
        except (UnsupportedModuleError, ValueError):
            if op_signature(student, one, forward_fn) == op_signature(
                    student, example_inputs, forward_fn):
                raise
        except (IRVerificationError, RuntimeError):
            pass
    teacher = _build_teacher(student, example_inputs, **build)
    if verify:
        teacher.gpd_plan.ir_deviation = verify_teacher(
            student, teacher, example_inputs, forward_fn, tol)
    return teacher


def _first_image(inputs) -> Optional[torch.Tensor]:
    """``inputs[:1]`` for a batch tensor of two or more images, else None."""
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2 \
            and inputs.shape[0] >= 2:
        return inputs[:1]
    return None


def _build_teacher(student, plan_inputs, ratio, branches, init, noise,
                   noise_mode, forward_fn, generator) -> nn.Module:
    """Plan layouts on ``plan_inputs``, apply the rules, add noise: T_d with
    its :class:`ReparamPlan` (not verified)."""
    # noise: its N(0, 1) values are drawn on another core while IR plans
    # (Python-bound), added once T_d is built (see noise.py)
    stream = NoiseStream(generator, expected_draws(student, ratio, noise_mode)) \
        if noise > 0 else None
    teacher, builder, layout_plan = _widen(student, plan_inputs, ratio,
                                           branches, init, forward_fn,
                                           generator, stream)
    if stream is not None:
        add_noise(teacher, builder.noisy, noise, stream, noise_mode)
    teacher.gpd_plan = ReparamPlan(
        template=copy_structure(student),  # runs on derived tensors only
        rules=_complete_rules(student, teacher, builder.rules),
        ratio=ratio, branches=branches, init=init, noise=noise,
        noise_mode=noise_mode,
        widened=builder.widened, branched=builder.branched,
        forward_fn=forward_fn, layouts=builder.layouts,
        plan_iterations=layout_plan.iterations)
    return teacher


def _widen(student, plan_inputs, ratio, branches, init, forward_fn,
           generator, stream=None):
    """Plan layouts (``stream`` drawing ahead meanwhile) and apply the rules:
    ``(T_d, builder, layout plan)``; raises on what has no exact rule or a
    ratio the model cannot take."""
    modes = _Modes(student)
    student.eval()
    try:
        with stream.drawing_ahead() if stream is not None else nullcontext():
            layout_plan = plan_layouts(
                student, plan_inputs, forward_fn, ratio,
                attr_fn=lambda t, planner: widen_attributes(t, ratio))
    finally:
        modes.restore()
    builder = Builder(student, ratio, layout_plan, branches, init, generator)
    builder.build()
    if builder.unsupported:
        raise UnsupportedModuleError(_dedupe(builder.unsupported))
    if builder.bad_ratio:
        raise ValueError(
            f'ratio {ratio:g} cannot be taken by this model:\n  - ' +
            '\n  - '.join(dict.fromkeys(builder.bad_ratio)))
    teacher = builder.teacher
    widen_attributes(teacher, ratio)
    return teacher, builder, layout_plan


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
        where = locate_deviation(student, teacher, inputs, forward_fn, tol)
        raise IRVerificationError(
            f'the dynamic teacher deviates from the student by {dev:.3g} '
            f'(max relative) on the probe batch, above the tolerance {tol:g}; '
            f'{where}', where=where)
    return dev


def _dedupe(items):
    return list(dict.fromkeys(items))
