"""A test-only hook, imported by the SyncBN configs of tests/tools/test_sync_bn.py.

``CheckDynamicTeacherAfterWrap`` looks at the model the Runner trains — after
``Runner.wrap_model`` reverted (one process) or converted (``cfg.sync_bn``, DDP)
its batch norms — and writes ``sync_bn_rank<R>.json`` to the work dir:

* ``before``: at iteration 0, before any step: the classes of T_d's batch norms
  and of the student's (the template a ``HardStudent`` runs), and
  ``max|T_d(x) − S(x)| / max|S(x)|`` on a fixed random batch, in eval mode and
  in train mode (``torch.manual_seed`` before each forward; on a copy of the
  model, so that the run's statistics do not move);
* ``after``: after training, T_d's and S's batch-norm statistics (to compare the
  ranks) and whether S's statistics moved (the student's own
  ``student_running_*`` are updated).
"""
import copy
import json
import os.path as osp
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _norm_classes(model):
    out = {}
    for _, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            name = type(m).__name__
            out[name] = out.get(name, 0) + 1
    return out


def _deviation(a, b):
    return float((a - b).abs().max() / b.abs().max())


@HOOKS.register_module(force=True)
class CheckDynamicTeacherAfterWrap(Hook):
    priority = 'VERY_LOW'

    def __init__(self, batch_size=8):
        self.batch_size = batch_size
        self.report = {}
        self.initial = None

    @staticmethod
    def _algorithm(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner):
        algorithm = self._algorithm(runner)
        teacher = algorithm.dynamic_teacher
        template = algorithm.student.template
        report = dict(wrapped=type(runner.model).__name__,
                      teacher_norms=_norm_classes(teacher),
                      student_norms=_norm_classes(template))
        # the carried norms kept what IR gave them
        carried = [m for m in teacher.modules() if hasattr(m, 'carry_scale')
                   and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        report['carried_with_student_stats'] = sum(
            hasattr(m, 'student_running_mean') for m in carried)
        report['carried_norms'] = len(carried)
        report['max_carry_scale'] = max(
            float(m.carry_scale.max()) for m in carried) if carried else 0.0
        # T_d(x) == S(x) at iteration 0, on a copy (statistics of the run untouched)
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(self.batch_size, 3, 32, 32, generator=gen)
        model = copy.deepcopy(algorithm)
        with torch.no_grad():
            model.eval()
            t = model.dynamic_teacher(x, mode='tensor')
            s = model.student(x, mode='tensor')
            report['dev_eval'] = _deviation(t, s)
            model.train()
            torch.manual_seed(0)
            t = model.dynamic_teacher(x, mode='tensor')
            torch.manual_seed(0)
            s = model.student(x, mode='tensor')
            report['dev_train'] = _deviation(t, s)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        self.report['before'] = report
        self.initial = {k: v.clone() for k, v in teacher.named_buffers()
                        if 'student_running_mean' in k}

    def after_train(self, runner):
        algorithm = self._algorithm(runner)
        teacher = algorithm.dynamic_teacher
        buffers = {k: v.tolist() for k, v in teacher.named_buffers()
                   if k.endswith('running_mean') or k.endswith('running_var')}
        moved = [k for k, v in self.initial.items()
                 if not torch.equal(v, teacher.get_buffer(k))]
        self.report['after'] = dict(
            buffers=buffers, student_stats_moved=len(moved),
            student_stats=len(self.initial),
            teacher_norms=_norm_classes(teacher),
            student_norms=_norm_classes(algorithm.student.template))
        path = osp.join(runner.work_dir, f'sync_bn_rank{get_rank()}.json')
        with open(path, 'w') as f:
            json.dump(self.report, f)
