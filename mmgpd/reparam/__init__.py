"""The GPD reparameterization core (pure PyTorch, no MMEngine imports).

* :func:`inverse_reparameterize` — IR: the dynamic teacher T_d grown out of the
  student (wider, optionally multi-branch, the same function at init).
* :func:`extract_student` — CBR: the plain student folded out of T_d.
* :class:`HardStudent` / :func:`derive_student_state` — the hard strategy's
  differentiable student view of T_d's parameters; :func:`soft_pair` — the
  soft strategy.

See ``docs/design.md`` for the math.  Where things live: ``layout.py`` (a
tensor's layout: index map and factor), ``propagate.py`` (the layouts of every
widened space, planned by running the student's and the teacher's code),
``rules.py`` (one rule per kind of ``kinds.py``), ``attrs.py`` (attributes a
forward reads), ``ir.py`` (IR), ``cbr.py`` (CBR), ``verify.py`` (where a teacher
deviates), ``replica.py`` (the cyclic replica map and ``fold_to_student``).
"""
from .cbr import derive_student_state, extract_student, get_plan
from .errors import IRVerificationError, UnsupportedModuleError
from .ir import (DEFAULT_BRANCHES, ReparamPlan, default_forward,
                 default_probe_inputs, inverse_reparameterize,
                 max_relative_deviation, verify_teacher)
from .layers import BRANCHES, BranchConv2d
from .layout import Layout
from .replica import ReplicaMap, check_ratio, fold_to_student, teacher_width
from .sharing import HardStudent, soft_pair

__all__ = [
    'inverse_reparameterize', 'extract_student', 'derive_student_state',
    'HardStudent', 'soft_pair', 'get_plan', 'ReparamPlan', 'ReplicaMap', 'Layout',
    'BranchConv2d', 'BRANCHES', 'DEFAULT_BRANCHES', 'UnsupportedModuleError',
    'IRVerificationError', 'check_ratio', 'fold_to_student', 'teacher_width', 'default_forward',
    'default_probe_inputs', 'max_relative_deviation', 'verify_teacher'
]
