"""GPD on mmpretrain classifiers: (N, K) logits and the ClsHead's loss."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .base import Task, template


def _head(model: nn.Module) -> nn.Module:
    head = getattr(template(model), 'head', None)
    if head is None or not hasattr(head, '_get_loss'):
        raise TypeError(f'{type(template(model)).__name__} has no mmpretrain '
                        'ClsHead; GPD classification needs an '
                        'ImageClassifier-like model')
    return head


class ClassificationTask(Task):
    """Adapter of mmpretrain ``ImageClassifier``-like models."""
    name = 'classification'

    @staticmethod
    def accepts(model: nn.Module) -> bool:
        return hasattr(getattr(model, 'head', None), '_get_loss')

    # ------------------------------------------------------------- building
    @staticmethod
    def ir_inputs(student: nn.Module):
        """``(example_inputs, forward_fn)`` for IR (None: the core's defaults)."""
        return None, None

    @staticmethod
    def check_teacher(cfg: dict, student: nn.Module) -> None:
        """A static teacher config must predict the student's classes."""
        t_cls = cfg.get('head', {}).get('num_classes')
        s_cls = getattr(student.head, 'num_classes', None)
        if t_cls is not None and s_cls is not None and t_cls != s_cls:
            raise ValueError(
                f'model.teacher.head.num_classes ({t_cls}) differs from the '
                f"student's model.architecture.head.num_classes ({s_cls})")

    # ------------------------------------------------------------ training
    @staticmethod
    def outputs(model: nn.Module, inputs: torch.Tensor, data_samples,
                with_loss: bool = True):
        """``({'logits': (N, K)}, task losses or None)``."""
        logits = model(inputs, mode='tensor')
        losses = _head(model)._get_loss(logits, data_samples) \
            if with_loss else None
        return dict(logits=logits), losses

    @staticmethod
    def gt(data_samples, device) -> Optional[torch.Tensor]:
        """(N,) gt labels for the distillation losses (DKD uses them)."""
        if not data_samples or 'gt_label' not in data_samples[0]:
            return None
        return torch.cat([s.gt_label for s in data_samples]).to(device)

    # ------------------------------------------------------------ predict
    @staticmethod
    def predict(models: Dict[str, nn.Module], eval_model: str,
                evaluate_teachers: bool, inputs: torch.Tensor,
                data_samples) -> List:
        """Predictions of ``eval_model``; the other models' scores ride along
        as ``pred_score_<name>`` / ``pred_label_<name>`` (GPDHook counts them)."""
        logits = {}
        for name, model in models.items():
            if name == eval_model or evaluate_teachers:
                logits[name] = model(inputs, mode='tensor')
        samples = _head(models[eval_model])._get_predictions(
            logits[eval_model], data_samples)
        for name, value in logits.items():
            score = torch.softmax(value, dim=1)
            for sample, s, label in zip(samples, score, score.argmax(dim=1)):
                sample.set_field(s, f'pred_score_{name}')
                sample.set_field(label.view(1), f'pred_label_{name}')
        return samples
