"""GPD on mmpretrain classifiers: (N, K) logits and the ClsHead's loss.

Feature taps (read by the static-teacher methods, ``mmgpd.models.methods``):

* ``'stage1'`` … ``'stageN'`` — the output of each backbone stage (N, C_i,
  H_i, W_i); ResNet-family backbones (``res_layers``: ResNet, ResNetV1c/d,
  ResNet_CIFAR, ResNeXt, SE-ResNet …) map stage ``i`` to ``backbone.layer<i>``;
  MobileNetV2 to the last layer of each stride (/4 ``layer2``, /8 ``layer3``,
  /16 ``layer5``, /32 ``conv2``);
* ``'pooled'`` — the neck's (N, C) output (the head's input);
* ``'logits'`` — always.

Other backbones, or other choices, name the modules with
``model.distiller.taps`` (:func:`tap_paths`).
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..recorders import FeatureRecorder
from .base import Task, template

#: MobileNetV2's last layer at strides 4, 8, 16, 32.
_MOBILENET_V2_STAGES = ('layer2', 'layer3', 'layer5', 'conv2')


def default_tap_paths(model: nn.Module) -> Dict[str, str]:
    """``{tap name: module path}`` this task knows for ``model`` (may be
    incomplete: :func:`tap_paths` names what is missing)."""
    model = template(model)
    out = {}
    backbone = getattr(model, 'backbone', None)
    names = getattr(backbone, 'res_layers', None)
    if names is None and type(backbone).__name__ == 'MobileNetV2':
        names = [n for n in _MOBILENET_V2_STAGES if hasattr(backbone, n)]
    for i, name in enumerate(names or ()):
        out[f'stage{i + 1}'] = f'backbone.{name}'
    if getattr(model, 'neck', None) is not None:
        out['pooled'] = 'neck'
    return out


def tap_paths(model: nn.Module, names: Sequence[str],
              overrides: Optional[Dict[str, str]] = None,
              key: str = 'model.distiller.taps') -> Dict[str, str]:
    """Module paths of the taps ``names`` (``'logits'`` needs none).

    Raises:
        KeyError: a name neither the task nor ``overrides`` maps (names
            ``key``).
    """
    known = default_tap_paths(model)
    known.update(overrides or {})
    missing = [n for n in names if n != 'logits' and n not in known]
    if missing:
        raise KeyError(
            f'{key}: no module path for the taps {missing} of '
            f'{type(template(model)).__name__} with a '
            f'{type(getattr(template(model), "backbone", None)).__name__} '
            f'backbone (known: {known}); name them, e.g. '
            f"dict(stage4='backbone.layer4')")
    return {n: known[n] for n in names if n != 'logits'}


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
                with_loss: bool = True,
                taps: Union[Sequence[str], Dict[str, str]] = ()):
        """``({'logits': (N, K), <tap>: tensor ...}, task losses or None)``.

        Args:
            taps (Sequence[str] | dict[str, str]): Tap names (module paths
                from :func:`default_tap_paths`) or ``{name: module path}``.
        """
        if not isinstance(taps, dict):
            taps = tap_paths(model, list(taps))
        taps = {k: v for k, v in taps.items() if k != 'logits'}
        with FeatureRecorder(model, taps) as rec:
            logits = model(inputs, mode='tensor')
        losses = _head(model)._get_loss(logits, data_samples) \
            if with_loss else None
        return dict(rec.taps, logits=logits), losses

    @staticmethod
    def tap_paths(model: nn.Module, names: Sequence[str],
                  overrides: Optional[Dict[str, str]] = None,
                  key: str = 'model.distiller.taps') -> Dict[str, str]:
        return tap_paths(model, names, overrides, key)

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
                data_samples, derived: Optional[Dict] = None) -> List:
        """Predictions of ``eval_model``; the other models' scores ride along
        as ``pred_score_<name>`` / ``pred_label_<name>``, and every model's
        sharpness (log-sum-exp of its logits, PESF-KD's measure) as the
        scalar field ``sharpness_<name>`` (GPDHook averages both).

        Args:
            derived (dict, optional): ``{name: (model name, {tap: path}, fn)}``:
                extra logits ``fn(outputs of that model)`` (PESF-KD's adapted
                teacher), reported like a model (only with
                ``evaluate_teachers``).
        """
        derived = derived if evaluate_teachers else None
        taps = {}
        for _, (source, paths, _) in (derived or {}).items():
            taps.setdefault(source, {}).update(paths)
        logits, outs = {}, {}
        for name, model in models.items():
            if name == eval_model or evaluate_teachers:
                with FeatureRecorder(model, taps.get(name, {})) as rec:
                    logits[name] = model(inputs, mode='tensor')
                outs[name] = dict(rec.taps, logits=logits[name])
        for name, (source, _, fn) in (derived or {}).items():
            if source in outs:
                logits[name] = fn(outs[source])
        samples = _head(models[eval_model])._get_predictions(
            logits[eval_model], data_samples)
        for name, value in logits.items():
            score = torch.softmax(value, dim=1)
            sharp = torch.logsumexp(value.float(), dim=1)
            for sample, s, label, h in zip(samples, score, score.argmax(dim=1),
                                           sharp):
                sample.set_field(s, f'pred_score_{name}')
                sample.set_field(label.view(1), f'pred_label_{name}')
                sample.set_field(h.view(1), f'sharpness_{name}')
        return samples
