"""GPD on single-stage mmdet detectors (RetinaNet, FCOS, ATSS ...).

Per model one pass gives everything GPD needs::

    feats  = det.extract_feat(inputs)          # FPN levels, (N, C, H_l, W_l)
    outs   = det.bbox_head(feats)              # (cls_scores, bbox_preds[, centerness])
    losses = det.bbox_head.loss_by_feat(*outs, gt_instances, img_metas)

so the student (hard strategy: through its view of T_d), the dynamic teacher
and the static teacher each run once per step. ``logits`` are the dense
classification maps (one per level, (N, A·K, H_l, W_l)); ``feats`` the FPN
levels (T_d's are C'-wide: the distiller folds them back to C).

Two-stage detectors (RPN + RoI head) are refused by IR, which names what has
no exact rule (RoIAlign, proposal decoding on the RPN's outputs).
"""
from typing import Dict, List

import torch
import torch.nn as nn

from .base import Task, call, template


def _is_detector(model: nn.Module) -> bool:
    return hasattr(model, 'extract_feat') and (
        hasattr(model, 'bbox_head') or hasattr(model, 'roi_head'))


def _head(model: nn.Module, key: str = 'model.architecture') -> nn.Module:
    det = template(model)
    head = getattr(det, 'bbox_head', None)
    if head is None or getattr(det, 'roi_head', None) is not None or \
            not hasattr(head, 'loss_by_feat'):
        raise TypeError(
            f'{key} builds {type(det).__name__}: GPD detection needs a '
            'single-stage dense detector (a bbox_head with loss_by_feat, no '
            'roi_head)')
    return head


def _layout(head: nn.Module):
    """What fixes the shape of the dense classification maps."""
    strides = getattr(getattr(head, 'prior_generator', None), 'strides', None)
    return dict(num_classes=head.num_classes,
                cls_out_channels=getattr(head, 'cls_out_channels', None),
                num_base_priors=getattr(head, 'num_base_priors', None),
                strides=[tuple(s) if isinstance(s, (tuple, list)) else s
                         for s in (strides or ())])


def _dense_pass(det: nn.Module, inputs: torch.Tensor, data_samples,
                with_loss: bool):
    from mmdet.models.utils import unpack_gt_instances
    feats = det.extract_feat(inputs)
    outs = det.bbox_head(feats)
    losses = None
    if with_loss:
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(data_samples)
        losses = det.bbox_head.loss_by_feat(*outs, gt_instances, img_metas,
                                            gt_ignore)
        # per-level lists -> one scalar each (what mmengine's parse_losses does)
        losses = {k: sum(x.mean() for x in v) if isinstance(v, (list, tuple))
                  else v for k, v in losses.items()}
    return dict(feats=tuple(feats), logits=list(outs[0])), losses


def _probe_samples(inputs: torch.Tensor):
    from mmdet.structures import DetDataSample
    h, w = inputs.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(inputs.shape[0])]


def _ir_forward(model: nn.Module, inputs: torch.Tensor):
    """Raw outputs for IR's trace and self-check (``mode='tensor'``, with the
    image metas a two-stage detector's RPN needs)."""
    return model(inputs, _probe_samples(inputs), mode='tensor')


class DetectionTask(Task):
    """Adapter of single-stage mmdet detectors with sigmoid classification."""
    name = 'detection'

    @staticmethod
    def accepts(model: nn.Module) -> bool:
        return _is_detector(model)

    # ------------------------------------------------------------- building
    @staticmethod
    def ir_inputs(student: nn.Module):
        """``(example_inputs, forward_fn)`` for IR: 2 random 64² images."""
        g = torch.Generator().manual_seed(0)
        return torch.randn(2, 3, 64, 64, generator=g), _ir_forward

    @staticmethod
    def check_student(student: nn.Module) -> None:
        if getattr(student, 'roi_head', None) is not None:
            return  # IR refuses it with the modules it cannot widen
        head = _head(student)
        if not getattr(head, 'use_sigmoid_cls', True):
            raise ValueError(
                'model.architecture.bbox_head: a softmax classification head '
                '(loss_cls.use_sigmoid=False) is not supported by the dense KD '
                'of GPD detection; use a sigmoid head')

    @staticmethod
    def check_teacher(cfg: dict, student: nn.Module) -> None:
        t_cls = cfg.get('bbox_head', {}).get('num_classes')
        s_cls = getattr(getattr(student, 'bbox_head', None), 'num_classes', None)
        if t_cls is not None and s_cls is not None and t_cls != s_cls:
            raise ValueError(
                f'model.teacher.bbox_head.num_classes ({t_cls}) differs from '
                f"the student's model.architecture.bbox_head.num_classes "
                f'({s_cls}): a static teacher must detect the same classes')

    @staticmethod
    def check_teacher_model(teacher: nn.Module, student: nn.Module) -> None:
        """The static teacher's dense maps must line up with the student's."""
        t = _layout(_head(teacher, 'model.teacher'))
        s = _layout(_head(student))
        diff = {k: (t[k], s[k]) for k in t if t[k] != s[k]}
        if diff:
            what = ', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())
            raise ValueError(
                f'model.teacher.bbox_head does not match the student\'s '
                f'model.architecture.bbox_head ({what}; teacher vs student): '
                'the static teacher must detect the same classes with the same '
                'priors and strides')

    # ------------------------------------------------------------ training
    @staticmethod
    def outputs(model: nn.Module, inputs: torch.Tensor, data_samples,
                with_loss: bool = True, taps=()):
        """``({'feats', 'logits', 'fpn0', …}, task losses or None)``: one pass
        of ``model``. Taps: ``'fpn0'`` … ``'fpnL'`` (the FPN levels, also in
        ``feats``; always given — they need no hook, so callers holding the
        ``{}`` of :meth:`tap_paths` get them too) and ``'logits'`` (the dense
        classification maps)."""
        out, losses = call(model, _dense_pass, inputs, data_samples, with_loss)
        names = [n for n in taps if n != 'logits']
        DetectionTask.tap_paths(model, names)
        for level, feat in enumerate(out['feats']):
            out[f'fpn{level}'] = feat
        for name in names:
            if name not in out:
                raise KeyError(f'tap {name!r}: the detector has '
                               f'{len(out["feats"])} FPN levels')
        return out, losses

    @staticmethod
    def tap_paths(model: nn.Module, names, overrides=None,
                  key: str = 'model.distiller.taps'):
        """FPN levels need no module path (``{}``); other names are an error."""
        bad = [n for n in names if n != 'logits' and not (
            n.startswith('fpn') and n[3:].isdigit())]
        if bad or overrides:
            raise KeyError(f'{key}: detectors have the taps fpn0 ... fpnL and '
                           f"logits only (got {bad or sorted(overrides)})")
        return {}

    @staticmethod
    def gt(data_samples, device):
        return None

    # ------------------------------------------------------------ predict
    @staticmethod
    def predict(models: Dict[str, nn.Module], eval_model: str,
                evaluate_teachers: bool, inputs: torch.Tensor,
                data_samples, derived=None) -> List:
        """``eval_model``'s detections as ``pred_instances``; with
        ``evaluate_teachers`` the other models' as ``pred_instances_<name>``
        (:class:`mmgpd.evaluation.PerModelMetric` scores each)."""
        extra = {}
        for name, model in models.items():
            if name != eval_model and evaluate_teachers:
                copies = [type(s)(metainfo=s.metainfo) for s in data_samples]
                extra[name] = model(inputs, copies, mode='predict')
        samples = models[eval_model](inputs, data_samples, mode='predict')
        for name, results in extra.items():
            for sample, res in zip(samples, results):
                sample.set_field(res.pred_instances, f'pred_instances_{name}')
        return samples
