"""GPD: the MMEngine algorithm that trains a student with a dynamic teacher.

The algorithm holds

* the student S (``architecture``: any mmpretrain classifier config, e.g.
  inherited from an ``mmpretrain::`` config) — under the hard strategy a
  parameter-free view of the dynamic teacher (``self.student``);
* the optional static teacher T_s (``teacher`` + ``teacher_ckpt``): frozen,
  always in eval mode, never re-initialised by the Runner;
* the distiller (:class:`~mmgpd.models.GPDDistiller`), which owns T_d and the
  loss terms.

One data preprocessor — the student's, with its batch augments (Mixup /
CutMix) — feeds all models, so they see the same batch.
"""
import contextlib
import copy
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mmgpd.registry import MODELS
from mmgpd.reparam import UnsupportedModuleError
from mmgpd.reparam.layers import merge_once

from ..tasks import task_for
from ..utils import mark_initialized

MODEL_NAMES = ('student', 'dynamic_teacher', 'static_teacher')


@MODELS.register_module()
class GPD(BaseModel):
    """Gap Preserving Distillation for mmpretrain classifiers and mmdet detectors.

    Args:
        architecture (dict): Config of the student: an mmpretrain classifier or
            an mmdet detector (single-stage or two-stage) (e.g. ``{{_base_.model}}`` of an
            ``mmpretrain::`` / ``mmdet::`` config). Its task adapter
            (``mmgpd.models.tasks``) says how outputs, losses and predictions
            are read.
        distiller (dict): Config of the :class:`GPDDistiller`.
        teacher (dict, optional): Config of the static teacher T_s.
        teacher_ckpt (str, optional): Checkpoint of T_s (required with
            ``teacher``).
        eval_model (str): Which model ``predict`` / validation report as the
            prediction: ``'student'``, ``'dynamic_teacher'`` or
            ``'static_teacher'``. Defaults to ``'student'``.
        evaluate_teachers (bool): Also attach T_d's and T_s's predictions to the
            validation samples (as ``pred_score_<name>`` / ``pred_label_<name>``)
            so that :class:`~mmgpd.engine.GPDHook` can report the gap.
            Defaults to True.
        data_preprocessor (dict, optional): Settings of the student's data
            preprocessor (merged into ``architecture``); the student's
            preprocessor, with its batch augments, feeds every model.
        channels_last (bool): Run S, T_d and T_s in ``torch.channels_last``:
            after IR (which runs contiguous), every 4-D parameter and buffer
            of T_d, T_s, the methods' connectors and the student (under the
            hard strategy its template, whose weights CBR derives from T_d in
            the same format) is converted, and the preprocessed 4-D inputs of
            every forward are made channels_last. Exactness is unchanged (the
            same math, other strides). Defaults to False.
        init_cfg (dict, optional): Unused.
    """

    def __init__(self,
                 architecture: dict,
                 distiller: dict = dict(type='mmgpd.GPDDistiller'),
                 teacher: Optional[dict] = None,
                 teacher_ckpt: Optional[str] = None,
                 eval_model: str = 'student',
                 evaluate_teachers: bool = True,
                 data_preprocessor: Optional[dict] = None,
                 channels_last: bool = False,
                 init_cfg=None):
        if eval_model not in MODEL_NAMES:
            raise ValueError(f'model.eval_model must be one of {MODEL_NAMES}, '
                             f'got {eval_model!r}')
        if eval_model == 'static_teacher' and teacher is None:
            raise ValueError("model.eval_model='static_teacher' needs model.teacher")
        if eval_model == 'dynamic_teacher' and \
                not distiller.get('enable_dynamic_teacher', True):
            raise ValueError("model.eval_model='dynamic_teacher' needs "
                             'model.distiller.enable_dynamic_teacher=True')
        architecture = copy.deepcopy(architecture)
        if isinstance(data_preprocessor, dict):
            # A top-level ``data_preprocessor`` (as mmpretrain configs set it)
            # configures the student's own preprocessor, which feeds all models.
            architecture.setdefault('data_preprocessor',
                                    copy.deepcopy(data_preprocessor))
        student = MODELS.build(architecture)
        super().__init__(data_preprocessor=student.data_preprocessor,
                         init_cfg=init_cfg)
        self.task = task_for(student)
        self.task.check_student(student)
        # Initialise (or load the pretrained) student before IR copies it.
        student.init_weights()
        self.distiller = MODELS.build(copy.deepcopy(distiller))
        example_inputs, forward_fn = self.task.ir_inputs(student)
        try:
            self.student = self.distiller.build_dynamic_teacher(
                student, example_inputs, forward_fn)
        except UnsupportedModuleError as exc:  # name the config key first
            raise UnsupportedModuleError(
                [('model.architecture', type(student).__name__,
                  f'no exact IR rule for the {len(exc.modules)} module(s) / '
                  'op(s) below')] + exc.modules) from None
        self.eval_model = eval_model
        self.evaluate_teachers = evaluate_teachers
        self.teacher = None
        if teacher is not None:
            self.teacher = self._build_static_teacher(teacher, teacher_ckpt,
                                                      student)
        elif teacher_ckpt is not None:
            raise ValueError('model.teacher_ckpt is set but model.teacher is not')
        if len(self.distiller.methods) and self.teacher is None:
            raise ValueError('model.distiller.method distils a static teacher: '
                             'set model.teacher and model.teacher_ckpt')
        self.tap_paths = {'student': {}, 'static_teacher': {}}
        self._probe(student)
        if not isinstance(channels_last, bool):
            raise TypeError('model.channels_last must be a bool, got '
                            f'{channels_last!r}')
        self.channels_last = channels_last
        if channels_last:
            # HardStudent._apply reaches the (unregistered) template too
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ probe
    def _probe(self, student: nn.Module) -> None:
        """One probe pass (eval mode, no_grad) after IR: the shapes of the taps
        the methods read (their connectors are built now, so the optimizer
        sees them) and the folds of T_d's taps (the layouts IR planned: right
        after IR, T_d's taps are the expansion of S's)."""
        from mmgpd.reparam.ir import default_probe_inputs

        from ..recorders import resolve_fold
        distiller = self.distiller
        has_td = self.dynamic_teacher is not None
        det_feats = has_td and distiller.feat_loss is not None and \
            self.task.name == 'detection'
        if not len(distiller.methods) and not det_feats:
            return
        overrides = distiller.taps
        s_names = list(distiller.student_taps)
        self.tap_paths['student'] = self.task.tap_paths(
            student, s_names, overrides.get('student'),
            'model.distiller.taps.student')
        if len(distiller.methods):
            self.tap_paths['static_teacher'] = self.task.tap_paths(
                self.teacher, list(distiller.teacher_taps),
                overrides.get('static_teacher'),
                'model.distiller.taps.static_teacher')
        inputs, _ = self.task.ir_inputs(student)
        if inputs is None:
            inputs = default_probe_inputs(
                student, generator=torch.Generator().manual_seed(0))
        models = self.models()
        if not len(distiller.methods):
            models.pop('static_teacher', None)
        modes = {n: m.training for n, m in models.items()}
        outs = {}
        try:
            with torch.no_grad():
                for name, model in models.items():
                    model.eval()
                    paths = self.tap_paths.get(name, self.tap_paths['student'])
                    outs[name], _ = self.task.outputs(model, inputs, None,
                                                      with_loss=False,
                                                      taps=paths)
        finally:
            for name, model in models.items():
                model.train(modes[name])
        if has_td:
            fold = [n for n in s_names if distiller.fold_dynamic_teacher_taps]
            if det_feats:
                fold += [f'fpn{i}' for i in range(len(outs['student']['feats']))]
                for i, f in enumerate(outs['student']['feats']):
                    outs['student'][f'fpn{i}'] = f
                    outs['dynamic_teacher'][f'fpn{i}'] = \
                        outs['dynamic_teacher']['feats'][i]
            paths = self.tap_paths['student']
            for name in fold:
                distiller.tap_folds[name] = resolve_fold(
                    self.dynamic_teacher, name, outs['student'][name],
                    outs['dynamic_teacher'][name],
                    paths.get(name, 'neck' if name.startswith('fpn') else None))
        shapes = {}
        for name, out in outs.items():
            shapes[name] = {k: v.shape for k, v in out.items()
                            if isinstance(v, torch.Tensor)}
            if name == 'dynamic_teacher' and distiller.fold_dynamic_teacher_taps:
                shapes[name] = {k: (distiller.tap_folds[k](out[k]).shape
                                    if k in distiller.tap_folds else s)
                                for k, s in shapes[name].items()}
        if len(distiller.methods):
            distiller.prepare_methods(shapes)

    # ------------------------------------------------------------------ build
    def _build_static_teacher(self, cfg, ckpt, student):
        from mmengine.runner import load_checkpoint
        self.task.check_teacher(cfg, student)
        teacher = MODELS.build(copy.deepcopy(cfg))
        if not self.task.accepts(teacher):
            raise TypeError(f'model.teacher builds {type(teacher).__name__}, '
                            f'not a model of the student\'s task '
                            f'({self.task.name})')
        self.task.check_teacher_model(teacher, student)
        if ckpt is None:
            raise ValueError('model.teacher_ckpt is required with model.teacher '
                             '(a static teacher must be trained)')
        if '://' not in ckpt and not osp.isfile(osp.expanduser(ckpt)):
            raise FileNotFoundError(f'model.teacher_ckpt: {ckpt} does not exist')
        try:
            load_checkpoint(teacher, ckpt, map_location='cpu', strict=True,
                            revise_keys=[(r'^module\.', ''),
                                         (r'^architecture\.', '')])
        except Exception as exc:  # noqa: BLE001 - name the key, keep the cause
            raise RuntimeError(f'model.teacher_ckpt: cannot load {ckpt} into '
                               f'model.teacher: {exc}') from exc
        for p in teacher.parameters():
            p.requires_grad_(False)
        return mark_initialized(teacher).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: BN statistics never move
        return self

    @property
    def dynamic_teacher(self) -> nn.Module:
        return self.distiller.dynamic_teacher

    def models(self) -> Dict[str, nn.Module]:
        """``{name: model}`` of S, T_d and (if any) T_s."""
        out = {'student': self.student}
        if self.dynamic_teacher is not None:
            out['dynamic_teacher'] = self.dynamic_teacher
        if self.teacher is not None:
            out['static_teacher'] = self.teacher
        return out

    # ------------------------------------------------------------------ train
    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """MMEngine's ``BaseModel.train_step``, the parameter update outside
        ``torch.compile``.

        With ``compile=True`` MMEngine's Runner compiles this method. The
        preprocessing, the forwards of S / T_d / T_s and the loss terms are
        compiled; ``optim_wrapper.update_params`` (backward — AOTAutograd's
        compiled backward still runs —, loss scaling, ``clip_grad``, the
        optimizer step) runs eagerly: a compiled optimizer step guards on the
        learning rate, a Python float that an lr schedule changes every
        iteration, so it would recompile each iteration until Dynamo's
        recompile limit.
        """
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_losses, log_vars = self.parse_losses(losses)
        _update_params(optim_wrapper, parsed_losses)
        return log_vars

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples=None, mode='tensor'):
        if self.channels_last and isinstance(inputs, torch.Tensor) and \
                inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.models()[self.eval_model](inputs, mode='tensor')
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs: torch.Tensor, data_samples: List) -> dict:
        """All GPD loss terms on one (preprocessed, batch-augmented) batch."""
        outputs, task = {}, {}
        names = ['student']
        if self.distiller.gpd_enabled:
            names.append('dynamic_teacher')
        models = self.models()
        # S (hard strategy: CBR of T_d's merged kernels) and T_d read each
        # branch conv's merged kernel once per step
        with merge_once(self.dynamic_teacher) if len(names) > 1 and \
                not torch.compiler.is_compiling() else contextlib.nullcontext():
            for name in names:
                outputs[name], task[name] = self.task.outputs(
                    models[name], inputs, data_samples,
                    taps=self.tap_paths['student'])
        if self.teacher is not None and self.distiller.uses_static_teacher:
            with torch.no_grad():
                outputs['static_teacher'], _ = self.task.outputs(
                    self.teacher, inputs, data_samples, with_loss=False,
                    taps=self.tap_paths['static_teacher'])
        gt = self.task.gt(data_samples, inputs.device)
        return self.distiller.loss(outputs, task, gt)

    def predict(self, inputs: torch.Tensor, data_samples=None) -> List:
        """Predictions of ``eval_model``; with ``evaluate_teachers`` the other
        models' predictions ride along (``pred_*_<name>`` fields)."""
        return self.task.predict(self.models(), self.eval_model,
                                 self.evaluate_teachers, inputs, data_samples,
                                 derived=self._derived_logits())

    def _derived_logits(self) -> Optional[dict]:
        """PESF-KD's adapted teacher logits for validation (their sharpness is
        logged): ``adapted_static_teacher`` (the adapter S distils from) and
        ``adapted_static_teacher_to_dynamic_teacher``."""
        if self.teacher is None:
            return None
        out = {}
        for target in self.distiller.methods:
            for m in self.distiller.methods_of(target):
                if not m.adapts_teacher:
                    continue
                name = 'adapted_static_teacher' + (
                    '' if target == 'student' else f'_to_{target}')
                paths = {k: v for k, v in self.tap_paths['static_teacher'].items()
                         if k in m.teacher_taps}
                out[name] = ('static_teacher', paths,
                             lambda o, m=m: m.adapt_teacher(o))
        return out or None


@torch.compiler.disable(reason='optimizer step: eager (lr changes per iteration)')
def _update_params(optim_wrapper, loss: torch.Tensor) -> None:
    optim_wrapper.update_params(loss)
