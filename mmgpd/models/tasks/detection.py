"""GPD on mmdet detectors: single-stage (RetinaNet, FCOS, ATSS ...) and
two-stage (Faster / Mask / Cascade R-CNN).

Per model one pass gives everything GPD needs::

    feats  = det.extract_feat(inputs)          # FPN levels, (N, C, H_l, W_l)
    outs   = det.bbox_head(feats)              # (cls_scores, bbox_preds[, centerness])
    losses = det.bbox_head.loss_by_feat(*outs, gt_instances, img_metas)

so the student (hard strategy: through its view of T_d), the dynamic teacher
and the static teacher each run once per step. ``logits`` are the dense
classification maps (one per level, (N, A·K, H_l, W_l); a softmax head's,
e.g. SSD's, viewed per anchor as (N, K + 1, A, H_l, W_l): :func:`_class_maps`);
``feats`` the FPN levels (T_d's are C'-wide: the distiller folds them back to
C).

Two-stage detectors (RPN + RoI head, :func:`_two_stage_pass`): ``logits`` are
the RPN's objectness maps (sigmoid: the dense KD of the gap term applies to
them), ``feats`` the FPN levels, ``roi_logits`` the RoI class scores on the
sampled RoIs; T_d replays the student's proposals, anchor / RoI assignments
and samples, so both train their heads on the same RoIs.  For IR
(:func:`_ir_forward`) the RPN's and RoI heads' prediction layers are output
boundaries (:func:`output_boundaries`), RoI pooling is a carried unit
(``reparam/kinds.py`` ``roi_pool``) and the RoI head is probed on fixed boxes.
"""
import copy
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


def _class_maps(head: nn.Module, maps) -> list:
    """The dense classification maps as the KD losses take them.

    Sigmoid heads: as the head gives them, ``(N, A·K, H, W)`` per level
    (``DenseKDLoss``). Softmax heads (``use_sigmoid_cls=False``, e.g. mmdet's
    ``SSDHead``: ``cls_out_channels = K + 1``, channels anchor-major, ``a ·
    (K + 1) + k``, as its ``loss_by_feat`` reads them): a view
    ``(N, K + 1, A, H, W)``, one distribution over the classes per anchor
    (``SoftmaxDenseKDLoss``)."""
    if getattr(head, 'use_sigmoid_cls', True):
        return list(maps)
    k1 = head.cls_out_channels
    out = []
    for x in maps:
        n, c, h, w = x.shape
        if c % k1:
            raise ValueError(f'bbox_head: {c} class channels are not a '
                             f'multiple of cls_out_channels={k1}')
        out.append(x.view(n, c // k1, k1, h, w).transpose(1, 2))
    return out


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
    return dict(feats=tuple(feats),
                logits=_class_maps(det.bbox_head, outs[0])), losses


#: attribute of a batch's first data sample holding the student's proposals
#: and sampled RoIs for the other models' passes on the same batch
_SHARED = '_gpd_two_stage'


class _Replay:
    """Records the calls of a sampler's / assigner's ``method`` (the student's
    pass) or replays the recorded results in the same order (the other
    models' passes): every model trains its RPN and RoI heads on the
    student's sampled anchors, proposals and RoIs, stage by stage."""

    def __init__(self, log: list, replay: bool, where: str):
        self.log, self.replay, self.where, self.k = log, replay, where, 0
        self.patched = []

    def patch(self, obj, method: str):
        if obj is None:
            return
        for one in obj if isinstance(obj, (list, tuple)) else [obj]:
            original = getattr(one, method)

            def wrapped(*args, original=original, **kwargs):
                if self.replay:
                    if self.k >= len(self.log):
                        raise RuntimeError(
                            f'{self.where}: this model asks for more samples '
                            f'than the student drew ({len(self.log)}): its '
                            'RPN / RoI stages differ from the student\'s')
                    out = self.log[self.k]
                else:
                    out = original(*args, **kwargs)
                    self.log.append(out)
                self.k += 1
                return out
            one.__dict__[method] = wrapped
            self.patched.append((one, method))

    def restore(self):
        for one, method in self.patched:
            one.__dict__.pop(method, None)


def _two_stage_pass(det: nn.Module, inputs: torch.Tensor, data_samples,
                    with_loss: bool):
    """One pass of a two-stage detector (mmdet's ``TwoStageDetector.loss``
    with its RPN outputs and RoI class scores kept).

    The first model to run on a batch (the student: ``GPD.loss`` runs it
    first) decodes its proposals, assigns and samples anchors and RoIs as
    mmdet does, and leaves them on the batch (:data:`_SHARED`); every later
    model on the same batch (T_d) gets the same proposals and replays the
    same assignments and samples, so its RPN and RoI losses (each cascade
    stage included: a stage's RoIs are the student's) are computed on the
    student's anchors and RoIs, and its RoI class scores line up with the
    student's row by row.

    Returns ``({'feats', 'logits', 'roi_logits'[, 'mask_logits']}, losses |
    None)``: ``logits`` the RPN objectness maps (one per level, (N, A, H, W),
    sigmoid), ``roi_logits`` the RoI class scores ((R, K + 1), softmax; one
    per cascade stage) on the sampled RoIs (with a loss only);
    ``mask_logits`` (a mask head, with a loss) the mask logits of the
    positive RoIs in their ground-truth class ((R_pos, 1, M, M), sigmoid per
    pixel; one per stage with a mask head), which T_d's replayed samples line
    up row by row.
    """
    from mmdet.models.utils import unpack_gt_instances
    feats = det.extract_feat(inputs)
    rpn_outs = det.rpn_head(feats)
    out = dict(feats=tuple(feats), logits=list(rpn_outs[0]))
    if not with_loss:
        if data_samples:  # (a static teacher) on the student's RoIs, if any
            scores = _scores_on_shared_rois(det, feats, inputs, data_samples)
            if scores is not None:
                out['roi_logits'] = scores
        return out, None
    gt, gt_ignore, metas = unpack_gt_instances(data_samples)
    first = data_samples[0]
    shared = first.__dict__.get(_SHARED)
    if shared is not None and shared['inputs'] is not inputs:
        shared = None  # left by an earlier step on these samples
    replay = shared is not None
    if not replay:
        shared = dict(inputs=inputs, rpn=[], assign=[], sample=[])
    rpn_gt = []
    for inst in gt:
        inst = inst.new()  # (fields of its own) the RPN is class-agnostic
        inst.labels = torch.zeros_like(inst.labels)
        rpn_gt.append(inst)
    roi = det.roi_head
    rpn_rec = _Replay(shared['rpn'], replay, 'rpn_head.sampler')
    assign_rec = _Replay(shared['assign'], replay, 'roi_head.bbox_assigner')
    sample_rec = _Replay(shared['sample'], replay, 'roi_head.bbox_sampler')
    scores, masks = [], []
    bbox_loss = roi.bbox_loss
    mask_loss = roi.mask_loss if getattr(roi, 'with_mask', False) else None

    def record_scores(*args, **kwargs):
        res = bbox_loss(*args, **kwargs)
        scores.append(res['cls_score'])
        return res

    def record_masks(*args, **kwargs):
        # StandardRoIHead.mask_loss(x, sampling_results, ...);
        # CascadeRoIHead.mask_loss(stage, x, sampling_results, ...)
        res = mask_loss(*args, **kwargs)
        sampling = args[2] if hasattr(roi, 'num_stages') else args[1]
        masks.append(_gt_class_masks(res['mask_preds'], sampling))
        return res
    try:
        rpn_rec.patch(getattr(det.rpn_head, 'sampler', None), 'sample')
        assign_rec.patch(getattr(roi, 'bbox_assigner', None), 'assign')
        sample_rec.patch(getattr(roi, 'bbox_sampler', None), 'sample')
        roi.__dict__['bbox_loss'] = record_scores
        if mask_loss is not None:
            roi.__dict__['mask_loss'] = record_masks
        losses = det.rpn_head.loss_by_feat(*rpn_outs, rpn_gt, metas, gt_ignore)
        losses = {(f'rpn_{k}' if 'loss' in k and 'rpn' not in k else k): v
                  for k, v in losses.items()}
        if not replay:
            cfg = det.train_cfg.get('rpn_proposal', det.test_cfg.rpn)
            shared['proposals'] = det.rpn_head.predict_by_feat(
                *rpn_outs, batch_img_metas=metas, cfg=cfg)
            first.__dict__[_SHARED] = shared
        # roi_head.loss renames the proposals' boxes in place: a copy each
        proposals = [p.new() for p in shared["proposals"]]
        losses.update(roi.loss(feats, proposals, data_samples))
    finally:
        roi.__dict__.pop('bbox_loss', None)
        roi.__dict__.pop('mask_loss', None)
        for rec in (rpn_rec, assign_rec, sample_rec):
            rec.restore()
    if replay and sample_rec.k != len(shared['sample']):
        raise RuntimeError('roi_head: this model sampled RoIs '
                           f'{sample_rec.k} times, the student '
                           f'{len(shared["sample"])}')
    out['roi_logits'] = scores
    if masks:
        out['mask_logits'] = masks
    # per-level lists -> one scalar each (what mmengine's parse_losses does)
    losses = {k: sum(x.mean() for x in v) if isinstance(v, (list, tuple))
              else v for k, v in losses.items()}
    return out, losses


def _gt_class_masks(mask_preds: torch.Tensor, sampling_results):
    """The mask logits a mask head is trained on: for each positive RoI its
    ground-truth class's channel (a class-agnostic head: its one channel),
    as ``(R_pos, 1, M, M)``; rows in the order of ``mask_preds`` (the
    positive RoIs image by image, as ``FCNMaskHead.loss_and_target`` reads
    them)."""
    if mask_preds.shape[1] == 1:
        return mask_preds
    labels = torch.cat([r.pos_gt_labels for r in sampling_results])
    rows = torch.arange(labels.numel(), device=mask_preds.device)
    return mask_preds[rows, labels][:, None]


def _scores_on_shared_rois(det, feats, inputs, data_samples):
    """RoI class scores of ``det`` on the RoIs the student sampled from this
    batch (one tensor per stage; None when the student has not run on it or
    its stages differ from ``det``'s): a static teacher's targets for the
    student's RoIs."""
    from mmdet.structures.bbox import bbox2roi
    shared = data_samples[0].__dict__.get(_SHARED)
    if shared is None or shared['inputs'] is not inputs:
        return None
    roi = det.roi_head
    stages = getattr(roi, 'num_stages', None)
    num = len(data_samples)
    if len(shared['sample']) != num * (stages or 1):
        return None
    scores = []
    for stage in range(stages or 1):
        res = shared['sample'][stage * num:(stage + 1) * num]
        rois = bbox2roi([r.priors for r in res])
        out = roi._bbox_forward(feats, rois) if stages is None else \
            roi._bbox_forward(stage, feats, rois)
        scores.append(out['cls_score'])
    return scores


def _probe_samples(inputs: torch.Tensor):
    from mmdet.structures import DetDataSample
    h, w = inputs.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(inputs.shape[0])]


def _probe_proposals(inputs: torch.Tensor, per_image: int = 27):
    """Fixed boxes for IR's probe (a two-stage detector's RoI head): per
    image, 3 sizes (25 %, 50 %, 90 % of the image) centred on a 3×3 grid
    (shifted by the image's index), clipped; ``InstanceData(bboxes)``."""
    from mmengine.structures import InstanceData
    h, w = inputs.shape[-2:]
    out = []
    for i in range(inputs.shape[0]):
        boxes = []
        for size in (0.25, 0.5, 0.9):
            for cy in (0.25, 0.5, 0.75):
                for cx in (0.25, 0.5, 0.75):
                    x0, y0 = (cx + 0.03 * i) * w, (cy + 0.02 * i) * h
                    bw, bh = size * w / 2, size * h / 2
                    boxes.append([max(x0 - bw, 0.0), max(y0 - bh, 0.0),
                                  min(x0 + bw, w - 1.0), min(y0 + bh, h - 1.0)])
        out.append(InstanceData(
            bboxes=torch.tensor(boxes[:per_image], dtype=inputs.dtype,
                                device=inputs.device)))
    return out


def _ir_forward(model: nn.Module, inputs: torch.Tensor):
    """Raw outputs for IR's trace and self-check (``mode='tensor'``).

    A two-stage detector gives its RPN's maps (objectness scores, box deltas:
    one per level), then its RoI head's raw outputs (class scores, box
    deltas[, mask logits]) on fixed probe boxes (:func:`_probe_proposals`):
    T_d and S see the same RoIs by construction.  (Proposals decoded by each
    model from its own RPN maps, equal to 1e-6, can differ where scores
    nearly tie — top-k, NMS — so the self-check does not compare those;
    training gives T_d the student's proposals and sampled RoIs.)"""
    samples = _probe_samples(inputs)
    if getattr(model, 'roi_head', None) is None:
        return model(inputs, samples, mode='tensor')
    feats = model.extract_feat(inputs)
    rpn_outs = model.rpn_head(feats)
    roi = model.roi_head
    if getattr(roi, 'num_stages', None) is None:
        return rpn_outs, roi.forward(feats, _probe_proposals(inputs), samples)
    # a cascade: every stage on the same probe RoIs (a stage's own RoIs are
    # the previous stage's refined boxes, which 1e-6 apart would move)
    from mmdet.structures.bbox import bbox2roi
    rois = bbox2roi([p.bboxes for p in _probe_proposals(inputs)])
    outs = []
    for stage in range(roi.num_stages):
        res = roi._bbox_forward(stage, feats, rois)
        outs += [res['cls_score'], res['bbox_pred']]
        if getattr(roi, 'with_mask', False):
            outs.append(roi._mask_forward(stage, feats, rois)['mask_preds'])
    return rpn_outs, tuple(outs)


def output_boundaries(model: nn.Module) -> List[str]:
    """Paths of a two-stage detector's prediction layers: the RPN's
    objectness / delta convs (its proposals are decoded from them: the
    teacher must decode the student's), every RoI bbox head's class / delta
    layers (a cascade refines its RoIs with them) and the mask logits.  IR
    keeps their outputs fixed (the student's width and values)."""
    if getattr(model, 'roi_head', None) is None:
        return []
    names = ('rpn_cls', 'rpn_reg', 'conv_cls', 'conv_reg', 'fc_cls', 'fc_reg',
             'conv_logits')
    out = []
    for path, module in model.named_modules():
        if not (path.startswith('rpn_head.') or path.startswith('roi_head.')):
            continue
        if path.rpartition('.')[2] in names and isinstance(
                module, (nn.Conv2d, nn.Linear)):
            out.append(path)
    return out


_ir_forward.output_boundaries = output_boundaries


class DetectionTask(Task):
    """Adapter of mmdet detectors: single-stage (sigmoid or softmax dense
    heads) and two-stage (RPN + RoI heads)."""
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
        """Two-stage detectors (RPN + RoI head, :func:`_two_stage_pass`) and
        dense heads: sigmoid (``DenseKDLoss``) or softmax (SSD:
        ``SoftmaxDenseKDLoss`` on the per-anchor maps of
        :func:`_class_maps`)."""
        if getattr(student, 'roi_head', None) is not None:
            return
        _head(student)

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
        """The static teacher's dense maps must line up with the student's
        (two-stage: its RPN's anchors / strides and its RoI classes)."""
        if getattr(template(student), 'roi_head', None) is not None:
            DetectionTask._check_two_stage_teacher(teacher, template(student))
            return
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

    @staticmethod
    def _check_two_stage_teacher(teacher: nn.Module, student: nn.Module):
        if getattr(teacher, 'roi_head', None) is None:
            raise ValueError(
                f'model.teacher builds {type(teacher).__name__}: a two-stage '
                'student needs a two-stage static teacher (RPN + RoI head)')
        t, s = _layout(teacher.rpn_head), _layout(student.rpn_head)
        diff = {k: (t[k], s[k]) for k in ('num_base_priors', 'strides')
                if t[k] != s[k]}

        def classes(det):
            head = det.roi_head.bbox_head
            head = head[-1] if isinstance(head, nn.ModuleList) else head
            return head.num_classes
        if classes(teacher) != classes(student):
            diff['num_classes'] = (classes(teacher), classes(student))
        if diff:
            what = ', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())
            raise ValueError(
                'model.teacher.rpn_head / roi_head do not match the student\'s '
                f'model.architecture ({what}; teacher vs student): the static '
                'teacher must detect the same classes with the same anchors')

    # ------------------------------------------------------------ training
    @staticmethod
    def outputs(model: nn.Module, inputs: torch.Tensor, data_samples,
                with_loss: bool = True, taps=()):
        """``({'feats', 'logits', 'fpn0', …}, task losses or None)``: one pass
        of ``model``. Taps: ``'fpn0'`` … ``'fpnL'`` (the FPN levels, also in
        ``feats``; always given — they need no hook, so callers holding the
        ``{}`` of :meth:`tap_paths` get them too) and ``'logits'`` (the dense
        classification maps)."""
        two_stage = getattr(template(model), 'roi_head', None) is not None
        out, losses = call(model, _two_stage_pass if two_stage else
                           _dense_pass, inputs, data_samples, with_loss)
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
