"""GPDDistiller: builds the dynamic teacher and computes GPD's loss terms.

Per iteration (z = logits, sg = stop-gradient)::

    L = w_S · task(S) + w_Td · task(T_d)
        + KD(T_s → S) + KD(T_s → T_d)          (only with a static teacher)
        + λ · SCE(sg(T_d) → S)                  (the gap term, λ = 3 in the recipe)
        + F(S, fold(sg(T_d))) [+ F(S, T_s) + F(fold(T_d), T_s)]   (feat_loss)
        + M(S, T_s) + M(T_d, T_s)               (method: ReviewKD, PESF-KD ...)

For detectors z are the dense classification maps (``DenseKDLoss``) and F a
feature loss on the FPN levels, compared in the student's space: T_d's levels
are folded back by the inverse of IR's replica map (``fold_to_student``,
parameter-free, exact at init).

A static-teacher *method* (``method``: ReviewKD, PESF-KD, KCD, DPK; see
:mod:`mmgpd.models.methods`) is built once per KD target, in
``self.methods[<target>]``: its connectors are sized for S (C-wide taps) and
for T_d (C'-wide, or C-wide with ``fold_dynamic_teacher_taps``) separately, by
:meth:`GPDDistiller.prepare_methods` from a probe pass in ``GPD.__init__``
(after IR, before the optimizer is built). Its loss keys are suffixed with the
target: ``loss_reviewkd_to_student``, ``loss_reviewkd_to_dynamic_teacher``.

Every term can be switched off (weight 0 / loss None) and weighted; the GPD
terms (task(T_d), KD(T_s → T_d), the gap term) can also be paused as a whole
(``gpd_enabled``, driven by ``GPDHook``'s start / stop epochs).
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmgpd.registry import MODELS
from mmgpd.reparam import HardStudent, fold_to_student, inverse_reparameterize

from ..utils import mark_initialized

STRATEGIES = ('hard', 'soft')


def _build_loss(cfg, key: str) -> Optional[nn.Module]:
    """Build a loss module from ``cfg``; errors name the config key."""
    if cfg is None:
        return None
    try:
        return MODELS.build(copy.deepcopy(cfg))
    except KeyError as exc:
        raise KeyError(f'model.distiller.{key}: unknown loss type '
                       f'{cfg.get("type")!r} ({exc})') from None


@MODELS.register_module()
class GPDDistiller(BaseModule):
    """Holds the dynamic teacher T_d and the GPD loss terms.

    Args:
        ratio (int | float): Width ratio of T_d (IR). Defaults to 2.
        branches (bool | Sequence[str] | None): Branch expansion of k×k stride-1
            convs (``mmgpd.reparam.BRANCHES``). Defaults to None.
        init (str): IR init, ``'scratch'`` or ``'preserve'`` (pretrained
            student). Defaults to ``'scratch'``.
        noise (float): Std of the symmetry-breaking noise. Defaults to 1e-6.
        noise_mode (str): ``'zero_sum'`` (T_d stays exactly S at init) or
            ``'iid'`` (reference code). Defaults to ``'zero_sum'``.
        strategy (str): ``'hard'`` (S's weights derived from T_d on every step)
            or ``'soft'`` (separate parameters). Defaults to ``'hard'``.
        grad_rescale (bool): Undo the n² effective-LR factor of S's gradient
            on the shared weights (hard strategy). Defaults to False.
        task_loss_weights (dict): Weights of the task losses of ``student``
            and ``dynamic_teacher``. Defaults to 1 each.
        kd_loss (dict, optional): Static-teacher KD loss (e.g.
            ``dict(type='mmgpd.DKDLoss', ...)``); used only with a static
            teacher. Defaults to None.
        kd_targets (Sequence[str]): Which models the static teacher distils
            into: ``'student'``, ``'dynamic_teacher'``. Defaults to both.
        gap_loss (dict, optional): The T_d → S term on ``sg(T_d)`` logits.
            Defaults to ``SoftTargetCrossEntropy(smoothing=0.1)`` with weight 3.
        roi_gap_loss (dict, optional): Two-stage detectors: the T_d → S term on
            the RoI class scores (``outputs[...]['roi_logits']``: softmax over
            K + 1 on the student's sampled RoIs, which T_d replays; one per
            cascade stage, summed), e.g. ``dict(type='mmgpd.KDLoss')``; the
            gap term proper (``gap_loss``) then acts on the RPN's objectness
            maps. Reconstructed from the paper's description (GPD's gap term
            is on the classifier's logits; it is silent on two-stage
            detectors). Defaults to None (no RoI term).
        mask_gap_loss (dict, optional): Mask R-CNN (and kin): the T_d → S
            term on the mask logits of the sampled positive RoIs in their
            ground-truth class (``outputs[...]['mask_logits']``: (R_pos, 1,
            M, M), one per stage with a mask head, summed), e.g.
            ``dict(type='mmgpd.DenseKDLoss')``: binary KL per mask pixel,
            averaged over RoIs and pixels. Reconstructed (the paper has no
            mask head). Defaults to None (the mask head is trained by the
            task losses and, through the shared FPN, the feature term only).
        roi_kd_loss (dict, optional): Two-stage detectors with a static
            teacher: KD T_s → S / T_d (``kd_targets``) on the RoI class scores,
            T_s run on the student's sampled RoIs (``kd_loss`` then acts on
            the RPN's objectness maps). Defaults to None.
        feat_loss (dict, optional): Feature distillation on the models'
            ``feats`` (detectors: the FPN levels), T_d → S and, with a static
            teacher, T_s → S and T_s → T_d (``kd_targets``). Defaults to None.
        enable_dynamic_teacher (bool): Build T_d at all. ``False`` gives the
            plain distillation baselines in the same framework: the student
            trains its own parameters with ``task(S)`` (+ ``KD(T_s → S)`` with a
            static teacher); no IR, no gap term. Defaults to True.
        method (dict | list[dict], optional): Static-teacher method(s)
            (``dict(type='mmgpd.ReviewKD', ...)``), one instance per KD target
            in ``kd_targets`` (``self.methods``: parameter names
            ``distiller.methods.<target>.…``; a list gives a ModuleList per
            target). Needs ``model.teacher``. Defaults to None.
        taps (dict, optional): Module paths of feature taps the task does not
            know, or other choices: ``dict(student=dict(stage4='backbone.x'),
            static_teacher=dict(...))`` (S's paths serve T_d). Defaults to None.
        fold_dynamic_teacher_taps (bool): Give T_d's method the taps folded
            back to the student's width (with the layout IR planned for them,
            :func:`~mmgpd.models.recorders.resolve_fold`), so its connectors
            have S's shapes; False keeps them C'-wide. Defaults to False.
        init_cfg (dict, optional): Unused (T_d is built by IR, never
            re-initialised).
    """

    def __init__(self,
                 ratio: Union[int, float] = 2,
                 branches=None,
                 init: str = 'scratch',
                 noise: float = 1e-6,
                 noise_mode: str = 'zero_sum',
                 strategy: str = 'hard',
                 grad_rescale: bool = False,
                 task_loss_weights: Optional[Dict[str, float]] = None,
                 kd_loss: Optional[dict] = None,
                 kd_targets: Sequence[str] = ('student', 'dynamic_teacher'),
                 gap_loss: Optional[dict] = dict(
                     type='mmgpd.SoftTargetCrossEntropy', smoothing=0.1,
                     loss_weight=3.0),
                 feat_loss: Optional[dict] = None,
                 enable_dynamic_teacher: bool = True,
                 roi_gap_loss: Optional[dict] = None,
                 roi_kd_loss: Optional[dict] = None,
                 mask_gap_loss: Optional[dict] = None,
                 method: Optional[Union[dict, List[dict]]] = None,
                 taps: Optional[Dict[str, Dict[str, str]]] = None,
                 fold_dynamic_teacher_taps: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if strategy not in STRATEGIES:
            raise ValueError(f'model.distiller.strategy must be one of '
                             f'{STRATEGIES}, got {strategy!r}')
        unknown = set(kd_targets) - {'student', 'dynamic_teacher'}
        if unknown:
            raise ValueError(f'model.distiller.kd_targets: unknown {unknown}')
        self.ir_kwargs = dict(ratio=ratio, branches=branches, init=init,
                              noise=noise, noise_mode=noise_mode)
        self.strategy = strategy
        self.grad_rescale = grad_rescale
        self.task_loss_weights = dict(student=1.0, dynamic_teacher=1.0)
        self.task_loss_weights.update(task_loss_weights or {})
        self.kd_loss = _build_loss(kd_loss, 'kd_loss')
        self.kd_targets = tuple(kd_targets)
        self.gap_loss = _build_loss(gap_loss, 'gap_loss')
        self.feat_loss = _build_loss(feat_loss, 'feat_loss')
        self.roi_gap_loss = _build_loss(roi_gap_loss, 'roi_gap_loss')
        self.roi_kd_loss = _build_loss(roi_kd_loss, 'roi_kd_loss')
        self.mask_gap_loss = _build_loss(mask_gap_loss, 'mask_gap_loss')
        self.enable_dynamic_teacher = enable_dynamic_teacher
        self._gpd_enabled = enable_dynamic_teacher
        self.dynamic_teacher = None
        unknown = set(taps or {}) - {'student', 'static_teacher'}
        if unknown:
            raise ValueError(f'model.distiller.taps: unknown models {unknown} '
                             "(keys: 'student', 'static_teacher')")
        self.taps = {k: dict(v) for k, v in (taps or {}).items()}
        self.fold_dynamic_teacher_taps = fold_dynamic_teacher_taps
        self.tap_folds = {}  # tap name -> TapFold (set by GPD's probe pass)
        self.methods = nn.ModuleDict()
        if method is not None:
            targets = [t for t in self.kd_targets if t == 'student' or
                       enable_dynamic_teacher]
            for target in targets:
                self.methods[target] = _build_methods(method)

    @property
    def gpd_enabled(self) -> bool:
        """Whether the GPD terms (task(T_d), KD(T_s → T_d), gap) are on now."""
        return self._gpd_enabled and self.dynamic_teacher is not None

    @gpd_enabled.setter
    def gpd_enabled(self, value: bool):
        self._gpd_enabled = bool(value)

    @property
    def uses_static_teacher(self) -> bool:
        """Whether any term reads the static teacher's outputs."""
        return self.kd_loss is not None or self.feat_loss is not None or \
            self.roi_kd_loss is not None or len(self.methods) > 0

    # ------------------------------------------------------------- methods
    def methods_of(self, target: str) -> List[nn.Module]:
        """The method instances distilling T_s into ``target``."""
        if target not in self.methods:
            return []
        m = self.methods[target]
        return list(m) if isinstance(m, nn.ModuleList) else [m]

    def _union(self, attr: str) -> tuple:
        names = []
        for target in self.methods:
            for m in self.methods_of(target):
                names += [n for n in getattr(m, attr) if n not in names]
        return tuple(names)

    @property
    def student_taps(self) -> tuple:
        """Taps of S / T_d that the methods read (besides logits)."""
        return self._union('student_taps')

    @property
    def teacher_taps(self) -> tuple:
        """Taps of T_s that the methods read (besides logits)."""
        return self._union('teacher_taps')

    def fold(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """T_d's tap ``name`` in the student's space (the planned layout;
        :func:`fold_to_student` where no fold was resolved)."""
        fold = self.tap_folds.get(name)
        if fold is None:
            raise KeyError(f'no fold resolved for the tap {name!r}')
        return fold(x)

    def prepare_methods(self, shapes: Dict[str, Dict[str, torch.Size]]) -> None:
        """Build every method's connectors (``GPD.__init__``'s probe pass).

        Args:
            shapes (dict): ``{model name: {tap: shape}}`` for ``'student'``,
                ``'dynamic_teacher'`` (already folded when
                ``fold_dynamic_teacher_taps``) and ``'static_teacher'``.
        """
        for target in self.methods:
            for m in self.methods_of(target):
                m.prepare(dict(shapes[target]), dict(shapes['static_teacher']))

    def _method_terms(self, outputs: Dict[str, dict],
                      gt: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        teacher = outputs['static_teacher']
        for target in self.methods:
            if target not in outputs:
                continue  # T_d while the GPD terms are paused
            student = outputs[target]
            if target == 'dynamic_teacher' and self.fold_dynamic_teacher_taps:
                student = {k: (self.fold(k, v) if k in self.tap_folds else v)
                           for k, v in student.items()}
            for m in self.methods_of(target):
                for key, value in m(student, teacher, gt).items():
                    name = f'{key}_to_{target}'
                    if name in out:
                        raise KeyError(f'model.distiller.method: two methods '
                                       f'give the term {key!r}')
                    out[name] = value
        return out

    def build_dynamic_teacher(self, student: nn.Module, example_inputs=None,
                              forward_fn=None) -> nn.Module:
        """IR: grow T_d out of ``student`` (registered as ``dynamic_teacher``).

        Returns:
            nn.Module: What plays the student from now on: a parameter-free
            :class:`HardStudent` view (hard strategy) or ``student`` itself
            (soft strategy, or no dynamic teacher at all).
        """
        if not self.enable_dynamic_teacher:
            return student
        generator = torch.Generator().manual_seed(
            int(torch.randint(0, 2**31 - 1, ()).item()))
        try:
            teacher = inverse_reparameterize(
                student, example_inputs=example_inputs, forward_fn=forward_fn,
                generator=generator, **self.ir_kwargs)
        except ValueError as exc:
            raise ValueError(f'model.distiller (ratio={self.ir_kwargs["ratio"]!r}'
                             f'): {exc}') from exc
        mark_initialized(teacher)
        self.dynamic_teacher = teacher
        if self.strategy == 'hard':
            return HardStudent(teacher, grad_rescale=self.grad_rescale)
        return student

    def loss(self, outputs: Dict[str, dict], task_losses: Dict[str, dict],
             gt: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Combine the loss terms.

        Args:
            outputs (dict[str, dict]): Per model (``student``,
                ``dynamic_teacher`` when GPD is on, ``static_teacher`` when
                there is one): ``'logits'`` — (N, K) logits, or a list of dense
                classification maps (N, A·K, H, W) — and, for detectors,
                ``'feats'`` (T_d's C'-wide).
            task_losses (dict[str, dict]): Each model's own head losses.
            gt (Tensor, optional): (N,) labels for label-aware KD (DKD).

        Returns:
            dict[str, Tensor]: Named, weighted terms (MMEngine sums every key
            that contains ``loss``).
        """
        out = {}
        for name in ('student', 'dynamic_teacher'):
            if name not in task_losses:
                continue
            w = self.task_loss_weights.get(name, 1.0)
            for key, value in task_losses[name].items():
                if 'loss' in key:  # 'loss' -> 'loss_student', summed by MMEngine
                    out[key.replace('loss', f'loss_{name}', 1)] = value * w
                else:  # e.g. accuracy_top-1: logged, not summed
                    out[f'{name}_{key}'] = value
        logits = {k: v['logits'] for k, v in outputs.items()}
        static = 'static_teacher' in outputs
        if self.kd_loss is not None and static:
            for name in self.kd_targets:
                if name in logits:
                    out[f'loss_kd_static_to_{name}'] = self.kd_loss(
                        logits[name], logits['static_teacher'], gt)
        if self.gap_loss is not None and 'dynamic_teacher' in logits:
            out['loss_gap'] = self.gap_loss(
                logits['student'], _detach(logits['dynamic_teacher']), gt)
        if self.roi_gap_loss is not None and 'dynamic_teacher' in outputs:
            s_roi = outputs['student'].get('roi_logits')
            t_roi = outputs['dynamic_teacher'].get('roi_logits')
            if s_roi is None or t_roi is None:
                raise ValueError('model.distiller.roi_gap_loss: the models give '
                                 'no RoI class scores (two-stage detectors '
                                 'only)')
            out['loss_gap_roi'] = sum(
                self.roi_gap_loss(s, _detach(t), None)
                for s, t in zip(s_roi, t_roi))
        if self.mask_gap_loss is not None and 'dynamic_teacher' in outputs:
            s_mask = outputs['student'].get('mask_logits')
            t_mask = outputs['dynamic_teacher'].get('mask_logits')
            if s_mask is None or t_mask is None or len(s_mask) != len(t_mask):
                raise ValueError('model.distiller.mask_gap_loss: the models '
                                 'give no mask logits on the same RoIs (a '
                                 'detector with a mask head only)')
            out['loss_gap_mask'] = sum(
                self.mask_gap_loss([s], [t.detach()], None)
                for s, t in zip(s_mask, t_mask))
        if self.roi_kd_loss is not None and static:
            t_roi = outputs['static_teacher'].get('roi_logits')
            for name in self.kd_targets:
                if name not in outputs:
                    continue
                s_roi = outputs[name].get('roi_logits')
                if s_roi is None or t_roi is None or len(s_roi) != len(t_roi):
                    raise ValueError(
                        'model.distiller.roi_kd_loss: RoI class scores of '
                        f'{name} and the static teacher on the same RoIs are '
                        'needed (two-stage detectors with as many stages)')
                out[f'loss_kd_roi_static_to_{name}'] = sum(
                    self.roi_kd_loss(a, _detach(b), None)
                    for a, b in zip(s_roi, t_roi))
        if self.feat_loss is not None:
            out.update(self._feature_terms(outputs))
        if len(self.methods) and static:
            out.update(self._method_terms(outputs, gt))
        return out

    def _feature_terms(self, outputs: Dict[str, dict]) -> Dict[str, torch.Tensor]:
        """Feature distillation, every pair compared in the student's space."""
        if 'feats' not in outputs['student']:
            raise ValueError('model.distiller.feat_loss: the student gives no '
                             'features to distil (detectors only)')
        feats = {'student': outputs['student']['feats']}
        widths = [f.shape[1] for f in feats['student']]
        if 'dynamic_teacher' in outputs:
            feats['dynamic_teacher'] = [
                self.tap_folds[f'fpn{i}'](f) if f'fpn{i}' in self.tap_folds
                else fold_to_student(f, c) for i, (f, c) in
                enumerate(zip(outputs['dynamic_teacher']['feats'], widths))]
        out = {}
        if 'dynamic_teacher' in feats:
            out['loss_feat_dynamic_to_student'] = self.feat_loss(
                feats['student'], _detach(feats['dynamic_teacher']))
        if 'static_teacher' in outputs:
            static = outputs['static_teacher']['feats']
            for name in self.kd_targets:
                if name in feats:
                    out[f'loss_feat_static_to_{name}'] = self.feat_loss(
                        feats[name], static)
        return out


def _build_methods(cfg) -> nn.Module:
    """One method (dict) or a ModuleList of them (list); errors name the key."""
    cfgs = cfg if isinstance(cfg, (list, tuple)) else [cfg]
    built = []
    for i, c in enumerate(cfgs):
        key = 'model.distiller.method' + (f'[{i}]' if len(cfgs) > 1 or
                                           isinstance(cfg, (list, tuple)) else '')
        if not isinstance(c, dict) or 'type' not in c:
            raise ValueError(f'{key}: a dict with a type, got {c!r}')
        try:
            built.append(MODELS.build(copy.deepcopy(c)))
        except KeyError as exc:
            raise KeyError(f'{key}: unknown method type {c.get("type")!r} '
                           f'({exc})') from None
        from ..methods.base import DistillMethod
        if not isinstance(built[-1], DistillMethod):
            raise TypeError(f'{key}: {type(built[-1]).__name__} is not a '
                            'DistillMethod (mmgpd.models.methods)')
    if isinstance(cfg, (list, tuple)):
        return nn.ModuleList(built)
    return built[0]


def _detach(x):
    """Stop-gradient of a tensor or of a list of per-level tensors."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    return [t.detach() for t in x]
