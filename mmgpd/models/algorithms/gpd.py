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
import copy
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mmgpd.registry import MODELS
from mmgpd.reparam import HardStudent

from ..utils import mark_initialized

MODEL_NAMES = ('student', 'dynamic_teacher', 'static_teacher')


def _head(model: nn.Module) -> nn.Module:
    """The classification head of a (view of an) mmpretrain classifier."""
    if isinstance(model, HardStudent):
        model = model.template
    head = getattr(model, 'head', None)
    if head is None or not hasattr(head, '_get_loss'):
        raise TypeError(f'{type(model).__name__} has no mmpretrain ClsHead; GPD '
                        'classification needs an ImageClassifier-like model')
    return head


def _num_classes(model: nn.Module) -> Optional[int]:
    return getattr(getattr(model, 'head', None), 'num_classes', None)


@MODELS.register_module()
class GPD(BaseModel):
    """Gap Preserving Distillation for mmpretrain classifiers.

    Args:
        architecture (dict): Config of the student (an mmpretrain classifier).
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
        # Initialise (or load the pretrained) student before IR copies it.
        student.init_weights()
        self.distiller = MODELS.build(copy.deepcopy(distiller))
        self.student = self.distiller.build_dynamic_teacher(student)
        self.eval_model = eval_model
        self.evaluate_teachers = evaluate_teachers
        self.teacher = None
        if teacher is not None:
            self.teacher = self._build_static_teacher(teacher, teacher_ckpt,
                                                      student)
        elif teacher_ckpt is not None:
            raise ValueError('model.teacher_ckpt is set but model.teacher is not')

    # ------------------------------------------------------------------ build
    @staticmethod
    def _build_static_teacher(cfg, ckpt, student):
        from mmengine.runner import load_checkpoint
        t_cls, s_cls = cfg.get('head', {}).get('num_classes'), _num_classes(student)
        if t_cls is not None and s_cls is not None and t_cls != s_cls:
            raise ValueError(
                f'model.teacher.head.num_classes ({t_cls}) differs from the '
                f"student's model.architecture.head.num_classes ({s_cls})")
        teacher = MODELS.build(copy.deepcopy(cfg))
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

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.models()[self.eval_model](inputs, mode='tensor')
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs: torch.Tensor, data_samples: List) -> dict:
        """All GPD loss terms on one (preprocessed, batch-augmented) batch."""
        logits, task = {}, {}
        names = ['student']
        if self.distiller.gpd_enabled:
            names.append('dynamic_teacher')
        models = self.models()
        for name in names:
            logits[name] = models[name](inputs, mode='tensor')
            task[name] = _head(models[name])._get_loss(logits[name], data_samples)
        if self.teacher is not None and self.distiller.kd_loss is not None:
            with torch.no_grad():
                logits['static_teacher'] = self.teacher(inputs, mode='tensor')
        return self.distiller.loss(logits, task, data_samples)

    def predict(self, inputs: torch.Tensor, data_samples=None) -> List:
        """Predictions of ``eval_model``; with ``evaluate_teachers`` the other
        models' scores ride along as ``pred_score_<name>`` / ``pred_label_<name>``."""
        models = self.models()
        logits = {}
        for name, model in models.items():
            if name == self.eval_model or self.evaluate_teachers:
                logits[name] = model(inputs, mode='tensor')
        samples = _head(models[self.eval_model])._get_predictions(
            logits[self.eval_model], data_samples)
        for name, value in logits.items():
            score = torch.softmax(value, dim=1)
            for sample, s, label in zip(samples, score, score.argmax(dim=1)):
                sample.set_field(s, f'pred_score_{name}')
                sample.set_field(label.view(1), f'pred_label_{name}')
        return samples
