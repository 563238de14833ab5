"""The interface of a static-teacher distillation method.

A method distils the frozen static teacher T_s into one model, the *distilled
model*: the student S, or (stacked with GPD) the dynamic teacher T_d.
:class:`~mmgpd.models.GPDDistiller` builds one instance per KD target
(``model.distiller.method``), so a method never knows which pair it serves:
connectors sized for S (C-wide features) and for T_d (C'-wide, or C-wide when
the distiller folds T_d's taps) are separate parameters.

Life cycle::

    method = MODELS.build(cfg)                 # no connectors yet
    method.prepare(student_shapes, teacher_shapes)   # once, in GPD.__init__,
                                               # from a probe pass after IR
    terms = method(student_out, teacher_out, gt)     # every training step

``student_out`` / ``teacher_out`` are ``{tap name: tensor}`` with ``'logits'``
always present and the names in :attr:`student_taps` / :attr:`teacher_taps`
(task-defined, e.g. ``'stage1'`` … ``'stageN'``, ``'pooled'`` for
classifiers; ``'fpn0'`` … for detectors). The teacher's are computed under
``no_grad`` with T_s in eval mode.
"""
from typing import Dict, Optional, Tuple

import torch
from mmengine.model import BaseModule

__all__ = ['DistillMethod']


class DistillMethod(BaseModule):
    """Base of the static-teacher methods (ReviewKD, PESF-KD, KCD, DPK).

    Subclasses set :attr:`student_taps` / :attr:`teacher_taps` (class or
    instance attributes: the features they read besides ``'logits'``),
    implement :meth:`forward` and, when they own connectors, :meth:`prepare`.
    State refreshed by hooks (:meth:`update`) must live in buffers so that
    checkpoints and ``--resume`` carry it.
    """
    #: Taps of the distilled model (S or T_d) the method reads besides logits.
    student_taps: Tuple[str, ...] = ()
    #: Taps of the static teacher the method reads besides logits.
    teacher_taps: Tuple[str, ...] = ()
    #: Whether :meth:`adapt_teacher` gives adapted teacher logits (PESF-KD);
    #: GPDHook then logs their sharpness.
    adapts_teacher: bool = False

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self._prepared = False

    @property
    def prepared(self) -> bool:
        return self._prepared

    def prepare(self, student_shapes: Dict[str, torch.Size],
                teacher_shapes: Dict[str, torch.Size]) -> None:
        """Build the connectors of one (distilled model, T_s) pair.

        Args:
            student_shapes (dict[str, torch.Size]): Shapes of the distilled
                model's taps on the probe batch (``'logits'`` included).
            teacher_shapes (dict[str, torch.Size]): Shapes of T_s's taps.
        """
        self._prepared = True

    def forward(self, student: Dict[str, torch.Tensor],
                teacher: Dict[str, torch.Tensor],
                gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Named loss terms (keys containing ``'loss'`` are summed).

        Args:
            student (dict[str, Tensor]): The distilled model's outputs
                (``'logits'`` (N, K) and its :attr:`student_taps`).
            teacher (dict[str, Tensor]): T_s's outputs (no gradient).
            gt (Tensor, optional): (N,) labels.
        """
        raise NotImplementedError

    def adapt_teacher(self, teacher: Dict[str, torch.Tensor]
                      ) -> Optional[torch.Tensor]:
        """The teacher logits the distilled model learns from, when the method
        changes them (PESF-KD's adapter); None otherwise."""
        return None

    def check_taps(self, shapes: Dict[str, torch.Size], taps, side: str):
        """Raise a ``KeyError`` naming the missing taps of one side."""
        missing = [t for t in taps if t not in shapes]
        if missing:
            raise KeyError(
                f'{type(self).__name__} reads the {side} taps {missing}, which '
                f'the task did not record (recorded: {sorted(shapes)}); set '
                'model.distiller.taps for this model')
