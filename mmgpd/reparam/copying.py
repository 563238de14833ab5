"""Copies of module structure without copies of the weights.

IR copies the student several times: the teacher skeleton the rules then widen,
the layout planner's teacher run, the module each rule rebuilds, and the plan's
template.  Each copy's tensors are either replaced at once (every widened
tensor) or never read (the template runs on derived tensors), so copying them
is wasted time and memory: :func:`copy_structure` shares them, and
:func:`own_tensors` gives the finished teacher its own copy of whatever it
still shares with the student.
"""
import copy
import itertools

import torch.nn as nn

__all__ = ['copy_structure', 'own_tensors']


def copy_structure(module: nn.Module, buffers: bool = True) -> nn.Module:
    """A deep copy of ``module`` whose parameters (and buffers, unless
    ``buffers=False``: then they are copied) ARE the original's: the same
    objects, tying inside the copy kept.  Plain tensor attributes and
    everything else are copied as by ``copy.deepcopy``."""
    shared = itertools.chain(module.parameters(),
                             module.buffers() if buffers else ())
    return copy.deepcopy(module, {id(t): t for t in shared})


def own_tensors(module: nn.Module, other: nn.Module) -> nn.Module:
    """Replace, in place, every parameter / buffer of ``module`` that is also
    one of ``other``'s by a clone (one clone per shared tensor, so tied
    tensors stay tied).  Returns ``module``."""
    shared = {id(t) for t in itertools.chain(other.parameters(),
                                             other.buffers())}
    clones = {}
    for sub in module.modules():
        for table, make in ((sub._parameters, _clone_param),
                            (sub._buffers, _clone_tensor)):
            for name, t in table.items():
                if t is not None and id(t) in shared:
                    if id(t) not in clones:
                        clones[id(t)] = make(t)
                    table[name] = clones[id(t)]
    return module


def _clone_param(p: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(p.detach().clone(), p.requires_grad)


def _clone_tensor(t):
    return t.detach().clone()
