"""What GPD needs to know of a task: how a model gives its outputs, task loss
and predictions.

:func:`task_for` picks the adapter from the student: an mmpretrain classifier
(:class:`ClassificationTask`) or an mmdet detector, single-stage or two-stage
(:class:`DetectionTask`). The algorithm (``GPD``) and the distiller stay
task-agnostic: they see, per model, a dict of outputs — ``'logits'`` ((N, K)
logits, or one dense classification map per FPN level) and, for detectors,
``'feats'`` (the FPN levels) — and each model's own task losses.
"""
import torch.nn as nn

from .base import Task, call
from .classification import ClassificationTask
from .detection import DetectionTask

__all__ = ['task_for', 'Task', 'ClassificationTask', 'DetectionTask', 'call']

TASKS = (ClassificationTask, DetectionTask)


def task_for(student: nn.Module):
    """The task adapter of ``student`` (``model.architecture``)."""
    for task in TASKS:
        if task.accepts(student):
            return task()
    raise TypeError(
        f'model.architecture builds {type(student).__name__}: GPD supports '
        'mmpretrain classifiers (a ClsHead as .head) and mmdet detectors '
        '(BaseDetector)')
