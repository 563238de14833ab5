"""Static-teacher distillation methods (registered in ``mmgpd.registry.MODELS``).

Each method distils the frozen static teacher T_s into one model — the student
S alone (``enable_dynamic_teacher=False``), or S and GPD's dynamic teacher T_d
(one instance per KD target, built by :class:`~mmgpd.models.GPDDistiller`) —
through the interface of :class:`DistillMethod`.
"""
from .base import DistillMethod
from .dpk import DPK
from .kcd import KCD
from .pesf_kd import PESFKD, TeacherAdapter
from .review_kd import ABF, ReviewKD

__all__ = ['DistillMethod', 'KCD', 'DPK', 'ReviewKD', 'ABF', 'PESFKD',
           'TeacherAdapter']
