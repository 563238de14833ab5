"""The record IR leaves on the dynamic teacher: what CBR needs to fold it back."""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn

from .parammap import ParamMap

__all__ = ['StateRule', 'ReparamPlan']


@dataclass
class StateRule:
    """How one entry of the student's state (parameter or buffer) comes from T_d.

    Attributes:
        student_name (str): Key in the student's ``state_dict`` / named tensors.
        teacher_name (str): Parameter / buffer of the teacher, or, with
            ``merged``, the path of a :class:`BranchConv2d`.
        pmap (ParamMap | None): CBR map; None means the same tensor.
        merged (bool): Take ``merged_weight()`` of the branch conv.
        is_param (bool): Whether the student entry is a parameter.
    """
    student_name: str
    teacher_name: str
    pmap: Optional[ParamMap] = None
    merged: bool = False
    is_param: bool = True


@dataclass
class ReparamPlan:
    """Everything CBR needs to fold a dynamic teacher back into its student.

    Attributes:
        template (nn.Module): A copy of the student at IR time (its structure;
            its tensors are replaced by derived ones).
        rules (list[StateRule]): One per student parameter and buffer.
        ratio (float): The expansion ratio.
        branches (tuple[str]): Extra branches grown on eligible convs.
        init (str): ``'preserve'`` or ``'scratch'``.
        noise (float): Std of the symmetry-breaking noise.
        noise_mode (str): ``'zero_sum'`` or ``'iid'`` (see ``noise.add_noise``).
        ir_deviation (float): max|T_d − S| / max|S| measured on the probe batch.
        widened (list[str]): Paths of the modules that were widened.
        branched (list[str]): Paths of the convs that grew branches.
    """
    template: nn.Module
    rules: List[StateRule]
    ratio: float
    branches: Tuple[str, ...] = ()
    init: str = 'preserve'
    noise: float = 0.0
    noise_mode: str = 'zero_sum'
    ir_deviation: float = float('nan')
    widened: List[str] = field(default_factory=list)
    branched: List[str] = field(default_factory=list)
    forward_fn: Optional[Callable] = None
    #: ``{module path: (dim, Layout)}`` of each planned module's output
    #: (``dim`` None / Layout None: not widened); see ``layout_of``.
    layouts: Dict[str, Tuple] = field(default_factory=dict)
    #: layout-planning iterations (``propagate.py``)
    plan_iterations: int = 0

    def layout_of(self, path: str):
        """``(dim, Layout)`` of the output of the module at ``path``."""
        if path not in self.layouts:
            raise KeyError(f'{path} is not a planned module of this teacher')
        return self.layouts[path]


