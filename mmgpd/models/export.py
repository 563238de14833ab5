"""The deployable student out of a GPD algorithm (CBR) and its plain checkpoint.

One implementation serves ``GPDHook``'s ``student_latest.pth`` /
``student_best.pth`` and ``tools/extract_student.py``.
"""
import copy
import os
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn

from mmgpd.reparam import HardStudent, extract_student

__all__ = ['student_from_algorithm', 'plain_checkpoint', 'save_atomic']

SOURCES = ('student', 'dynamic_teacher')


def student_from_algorithm(algorithm: nn.Module, source: str = 'student'):
    """A plain module of the student's class, in eval mode.

    Args:
        algorithm (GPD): A (possibly DDP-unwrapped) GPD algorithm.
        source (str): ``'student'``: the student GPD trained (hard strategy:
            CBR of T_d with the student's own BN statistics; soft strategy: the
            student's own parameters). ``'dynamic_teacher'``: CBR of T_d.
    """
    if source not in SOURCES:
        raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
    student = algorithm.student
    if source == 'dynamic_teacher' or isinstance(student, HardStudent):
        out = extract_student(algorithm.dynamic_teacher)
    else:
        out = copy.deepcopy(student)
    return out.eval()


def plain_checkpoint(student: nn.Module, meta: Optional[dict] = None) -> dict:
    """``{'state_dict': tensors on CPU, 'meta': plain data}``.

    Loadable with ``torch.load(weights_only=True)`` and by mmengine's
    ``load_checkpoint`` / ``load_from`` / ``init_cfg=dict(type='Pretrained')``.
    """
    state = OrderedDict((k, v.detach().cpu().clone())
                        for k, v in student.state_dict().items())
    return {'state_dict': state, 'meta': dict(meta or {})}


def save_atomic(obj, path: str):
    """``torch.save`` to a temporary file beside ``path``, then rename it.

    A crash leaves either the old file or the new one, never half of one.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.',
                               dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
