"""Where a dynamic teacher first deviates from its student.

Runs both models once (eval mode, no grad) with forward hooks on the modules
IR planned, folds each teacher output back to the student's layout
(``Layout.fold`` along the planned dim) and names the first module, in the
student's call order, whose output deviates beyond the tolerance.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten

__all__ = ['locate_deviation']


def _first_tensor(out):
    leaves, _ = tree_flatten(out)
    for t in leaves:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t
    return None


def _record(model: nn.Module, paths) -> Tuple[List, list]:
    seen, handles = [], []
    for path in paths:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue

        def hook(m, a, out, path=path):
            t = _first_tensor(out)
            if t is not None:
                seen.append((path, t.detach().float().clone()))
        handles.append(mod.register_forward_hook(hook))
    return seen, handles


def locate_deviation(student, teacher, inputs, forward_fn, tol) -> str:
    """A sentence naming the first deviating module (or why none was found)."""
    plan = getattr(teacher, 'gpd_plan', None)
    if plan is None or not plan.layouts:
        return 'no planned modules to compare'
    paths = list(plan.layouts)
    s_seen, s_h = _record(student, paths)
    t_seen, t_h = _record(teacher, paths)
    flags = [(m, m.training) for m in list(student.modules()) +
             list(teacher.modules())]
    student.eval()
    teacher.eval()
    try:
        with torch.no_grad():
            forward_fn(student, inputs)
            forward_fn(teacher, inputs)
    except Exception as e:  # noqa: BLE001
        return f'module-by-module comparison failed: {type(e).__name__}: {e}'
    finally:
        for h in s_h + t_h:
            h.remove()
        for m, f in flags:
            m.training = f
    t_by = {}
    for path, t in t_seen:
        t_by.setdefault(path, []).append(t)
    count = {}
    for path, s in s_seen:
        k = count.get(path, 0)
        count[path] = k + 1
        ts = t_by.get(path, [])
        if k >= len(ts):
            continue
        t = ts[k]
        dim, lay = plan.layouts[path]
        try:
            if lay is not None:
                t = lay.fold(t.double(), dim).float()
        except ValueError:
            return (f'first deviating module: {path} '
                    f'({type(student.get_submodule(path)).__name__}): its output '
                    f'has shape {tuple(t.shape)}, the planned layout {lay}')
        if t.shape != s.shape:
            return (f'first deviating module: {path}: output shape '
                    f'{tuple(t.shape)} vs the student\'s {tuple(s.shape)}')
        ref = s.abs().max().item()
        dev = (t - s).abs().max().item() / (ref if ref > 0 else 1.0)
        if not dev <= tol:
            return (f'first deviating module: {path} '
                    f'({type(student.get_submodule(path)).__name__}), relative '
                    f'deviation {dev:.3g} of its output')
    return ('every planned module agrees with the student: the deviation comes '
            'from functional code between them (reshapes, splits or products '
            'the planner could not see)')
