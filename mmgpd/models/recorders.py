"""Feature taps: named intermediate tensors of a model, recorded by forward hooks.

:class:`FeatureRecorder` records the outputs of named modules during one
forward of an unmodified model (mmrazor-recorder style: no forward is
re-implemented). For the hard strategy's student view
(:class:`~mmgpd.reparam.HardStudent`) the hooks sit on the view's template,
which runs under :func:`torch.func.functional_call` with the tensors derived
from T_d: hooks fire there and record the student's (differentiable) tensors.

Hooks are installed only inside the ``with`` block (never before IR, which
deep-copies the student with its hooks) and removed on exit.

:class:`TapFold` puts a dynamic teacher's tap back in the student's space with
the layout IR planned for it (:mod:`mmgpd.reparam.layout`); :func:`resolve_fold`
picks that layout.
"""
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from mmgpd.reparam import ReplicaMap

from .tasks.base import template

__all__ = ['FeatureRecorder', 'TapFold', 'resolve_fold', 'pick_tensor']


def pick_tensor(output, path: str = '') -> torch.Tensor:
    """The tensor a tap records of a module's output.

    A tensor is itself; a tuple / list (mmpretrain backbones and necks return
    one entry per ``out_indices``, the deepest last; Swin stages return
    ``(x, hw_shape)``) gives its last tensor entry.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in reversed(output):
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f'tap {path!r}: the module returns {type(output).__name__}, '
                    'not a tensor or a tuple of tensors')


class FeatureRecorder:
    """Record the outputs of named modules of ``model`` during a forward.

    Example::

        with FeatureRecorder(model, dict(stage4='backbone.layer4')) as rec:
            logits = model(x, mode='tensor')
        rec.taps  # {'stage4': (N, C, H, W)}

    Args:
        model (nn.Module): The model (a :class:`HardStudent` view: its
            template's modules are hooked).
        paths (dict[str, str]): ``{tap name: module path}``.

    Each record is a clone of the output (an in-place op after the tapped
    module — ``ReLU(inplace=True)`` — cannot overwrite it); the clone keeps the
    autograd graph. A tapped module that runs twice in one forward is an
    error (which call would be meant is ambiguous).
    """

    def __init__(self, model: nn.Module, paths: Dict[str, str]):
        self.model = model
        self.paths = dict(paths)
        root = template(model)
        self.modules = {}
        for name, path in self.paths.items():
            try:
                self.modules[name] = root.get_submodule(path)
            except AttributeError:
                raise KeyError(
                    f'tap {name!r}: {type(root).__name__} has no module '
                    f'{path!r} (set model.distiller.taps)') from None
        self.taps: Dict[str, torch.Tensor] = {}
        self._handles = []

    def _hook(self, name):
        def hook(module, args, output):
            if name in self.taps:
                raise RuntimeError(
                    f'tap {name!r}: module {self.paths[name]!r} ran twice in '
                    'one forward; tap a module that runs once')
            self.taps[name] = pick_tensor(output, self.paths[name]).clone()
        return hook

    def __enter__(self) -> 'FeatureRecorder':
        self.taps = {}
        self._handles = [m.register_forward_hook(self._hook(name))
                         for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False


class TapFold:
    """A dynamic teacher's tap in the student's space: ``fold`` along ``dim``.

    Attributes:
        dim (int | None): The widened dim (None: not widened, identity).
        layout (Layout | None): The planned layout (None with ``dim``: the
            cyclic replica map, :func:`~mmgpd.reparam.fold_to_student`).
        source (str): Where the layout comes from: ``'plan:<module path>'``,
            ``'replica'`` (cyclic fallback) or ``'identity'``.
    """

    def __init__(self, dim: Optional[int], layout=None, width: int = 0,
                 source: str = 'identity'):
        self.dim, self.layout, self.width, self.source = dim, layout, width, source

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim is None:
            return x
        if self.layout is not None:
            return self.layout.fold(x, self.dim)
        return ReplicaMap(self.width, x.shape[self.dim]).fold(x, self.dim)

    def __repr__(self):
        return f'TapFold(dim={self.dim}, {self.source})'


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    scale = b.abs().max().clamp_min(1e-12)
    return bool(((a - b).abs().max() / scale) <= tol)


def _candidates(plan, path: Optional[str]) -> Iterable:
    """Planned ``(source, dim, layout)`` in order of preference: the module
    itself, the units inside it (last first), then all others (last first)."""
    layouts = list(getattr(plan, 'layouts', {}).items())
    inside, others = [], []
    for p, (d, lay) in layouts:
        if lay is None:
            continue
        if path is not None and p == path:
            yield f'plan:{p}', d, lay
        elif path and p.startswith(path + '.'):
            inside.append((f'plan:{p}', d, lay))
        else:
            others.append((f'plan:{p}', d, lay))
    yield from reversed(inside)
    yield from reversed(others)


def resolve_fold(teacher: nn.Module, name: str, student_tap: torch.Tensor,
                 teacher_tap: torch.Tensor, path: Optional[str] = None,
                 tol: float = 1e-3) -> TapFold:
    """The fold that puts T_d's tap ``name`` back in the student's space.

    Right after IR every hidden tensor of T_d is ``expand`` of S's (up to the
    symmetry-breaking noise), so the right layout is the one whose ``fold``
    gives S's tap on a probe batch. Candidates, in order: the planned layout
    of the tapped module ``path`` (``teacher.gpd_plan.layouts``), the planned
    layouts of the units inside it (a stage's last block's output), any other
    planned layout of the right widths; only where none reproduces S's tap,
    the cyclic replica map (:func:`~mmgpd.reparam.fold_to_student`).

    Args:
        teacher (nn.Module): The dynamic teacher (has ``gpd_plan``), as IR
            left it.
        name (str): Tap name (for errors).
        student_tap, teacher_tap (Tensor): The tap of S and of T_d on the same
            probe batch.
        path (str, optional): Module path of the tap (None: no module, e.g.
            an FPN level).
        tol (float): Max relative deviation of ``fold(teacher_tap)`` from
            ``student_tap``.

    Raises:
        ValueError: The shapes differ in more than one dim, or no fold
            reproduces S's tap.
    """
    s, t = student_tap.detach().double(), teacher_tap.detach().double()
    if s.dim() != t.dim():
        raise ValueError(f'tap {name!r}: S gives {tuple(s.shape)}, T_d '
                         f'{tuple(t.shape)}')
    dims = [d for d in range(s.dim()) if s.shape[d] != t.shape[d]]
    if not dims:
        return TapFold(None)
    if len(dims) > 1:
        raise ValueError(f'tap {name!r}: S gives {tuple(s.shape)} and T_d '
                         f'{tuple(t.shape)}, widened in more than one dim')
    dim = dims[0]
    width, wide = s.shape[dim], t.shape[dim]
    plan = getattr(teacher, 'gpd_plan', None)
    seen = []
    for source, _, lay in _candidates(plan, path):
        if lay.width != width or lay.teacher_width != wide or \
                any(lay.same(o) for o in seen):
            continue
        seen.append(lay)
        if _close(lay.fold(t, dim), s, tol):
            return TapFold(dim, lay, width, source)
    if _close(ReplicaMap(width, wide).fold(t, dim), s, tol):
        return TapFold(dim, None, width, 'replica')
    raise ValueError(
        f'tap {name!r} ({path or "no module"}): T_d\'s {tuple(t.shape)} is not '
        f'the expansion of S\'s {tuple(s.shape)} under any planned layout '
        f'({len(seen)} tried) nor the replica map; keep T_d\'s taps wide '
        '(model.distiller.fold_dynamic_teacher_taps=False)')
