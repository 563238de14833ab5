"""The deployable student out of a GPD algorithm (CBR) and its plain checkpoint.

One implementation serves ``GPDHook``'s ``student_latest.pth`` /
``student_best.pth`` and ``tools/extract_student.py``.
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn

from mmgpd.reparam import HardStudent, extract_student
from mmgpd.utils.fileio import atomic_write

__all__ = [
    'student_from_algorithm', 'folds_dynamic_teacher', 'plain_checkpoint',
    'save_atomic', 'load_gpd', 'plain_student_config', 'read_checkpoint',
    'ExtractionError'
]

SOURCES = ('student', 'dynamic_teacher')


def folds_dynamic_teacher(algorithm: nn.Module, source: str) -> bool:
    """Whether the ``source`` student is CBR of T_d (hard strategy, or asked for)
    rather than the soft strategy's own student module."""
    return source == 'dynamic_teacher' or isinstance(algorithm.student, HardStudent)


def student_from_algorithm(algorithm: nn.Module, source: str = 'student'):
    """A plain module of the student's class, in eval mode.

    Args:
        algorithm (GPD): A (possibly DDP-unwrapped) GPD algorithm.
        source (str): ``'student'``: the student GPD trained (hard strategy:
            CBR of T_d with the student's own BN statistics; soft strategy: the
            student's own parameters). ``'dynamic_teacher'``: CBR of T_d.
    """
    if source not in SOURCES:
        raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
    student = algorithm.student
    if source == 'dynamic_teacher' and algorithm.dynamic_teacher is None:
        raise ValueError('source=dynamic_teacher: the run has no dynamic teacher '
                         '(model.distiller.enable_dynamic_teacher=False)')
    if folds_dynamic_teacher(algorithm, source):
        out = extract_student(algorithm.dynamic_teacher)
        if not isinstance(student, HardStudent):
            # Soft strategy: T_d's student_running_* were never updated; its own
            # statistics (stored unscaled) folded by CBR are T_d's view.
            _fold_teacher_statistics(algorithm.dynamic_teacher, out)
    else:
        out = copy.deepcopy(student)
    return out.eval()


def _fold_teacher_statistics(teacher: nn.Module, student: nn.Module):
    from mmgpd.reparam.layers import _CarriedBatchNormMixin
    modules = dict(student.named_modules())
    with torch.no_grad():
        for path, bn in teacher.named_modules():
            if isinstance(bn, _CarriedBatchNormMixin) and bn.track_running_stats:
                target = modules[path]
                c = target.num_features
                target.running_mean.copy_(bn.running_mean[:c])
                target.running_var.copy_(bn.running_var[:c])


def plain_checkpoint(student: nn.Module, meta: Optional[dict] = None) -> dict:
    """``{'state_dict': tensors on CPU, 'meta': plain data}``.

    Loadable with ``torch.load(weights_only=True)`` and by mmengine's
    ``load_checkpoint`` / ``load_from`` / ``init_cfg=dict(type='Pretrained')``.
    """
    state = OrderedDict((k, v.detach().cpu().clone())
                        for k, v in student.state_dict().items())
    return {'state_dict': state, 'meta': dict(meta or {})}


def save_atomic(obj, path: str):
    """``torch.save`` ``obj`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


# --------------------------------------------------------------------------- #
# From a GPD training checkpoint (tools/extract_student.py)
# --------------------------------------------------------------------------- #
class ExtractionError(RuntimeError):
    """A checkpoint or config that a student cannot be extracted from."""


def _strip_pretrained(cfg):
    """Drop ``init_cfg`` entries (weights come from the checkpoint; no download)."""
    if isinstance(cfg, dict):
        cfg.pop('init_cfg', None)
        for v in cfg.values():
            _strip_pretrained(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _strip_pretrained(v)
    return cfg


def read_checkpoint(path: str) -> dict:
    """Load a local training checkpoint, with errors that name the file."""
    if not osp.isfile(path):
        raise ExtractionError(f'{path}: no such checkpoint file')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure
        raise ExtractionError(
            f'{path}: not a readable PyTorch checkpoint (truncated, corrupted or '
            f'another format): {type(exc).__name__}: {exc}') from None
    if not isinstance(ckpt, dict) or not isinstance(
            ckpt.get('state_dict', ckpt), dict):
        raise ExtractionError(f'{path}: not a checkpoint (no state_dict)')
    return ckpt


def training_state(ckpt: dict, path: str, ema: bool) -> dict:
    """The GPD algorithm's state dict: raw training weights, or EMA ones.

    mmengine's EMAHook stores the EMA weights in ``state_dict`` and the raw
    ones in ``ema_state_dict`` (``module.``-prefixed); without EMA there is
    only ``state_dict``.
    """
    state = ckpt.get('state_dict', ckpt)
    has_ema = 'ema_state_dict' in ckpt
    if ema:
        if not has_ema:
            raise ExtractionError(f'{path}: --ema given, but the run kept no EMA '
                                  'weights (no ema_state_dict)')
        return state
    if has_ema:
        raw = {k[len('module.'):]: v for k, v in ckpt['ema_state_dict'].items()
               if k.startswith('module.')}
        return raw
    return state


def load_gpd(cfg, ckpt_path: str, ema: bool = False):
    """Build the config's GPD algorithm (no static teacher, no static-teacher
    method) and load a checkpoint (of a GPD run, or of a run with
    ``enable_dynamic_teacher=False``: the plain KD / method baselines).

    Raises:
        ExtractionError: bad file, no GPD state, or a checkpoint of another
            model / config (with the mismatching keys).
    """
    from mmengine.registry import init_default_scope

    from mmgpd.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if 'GPD' not in str(model_cfg.get('type', '')):
        raise ExtractionError(f'the config builds {model_cfg.get("type")!r}, not '
                              'mmgpd.GPD: nothing to extract')
    model_cfg.teacher = None  # not needed for the student, and never downloaded
    model_cfg.teacher_ckpt = None
    model_cfg.distiller.kd_loss = None
    model_cfg.distiller.method = None  # its connectors never reach the student
    _strip_pretrained(model_cfg.architecture)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor',
                             copy.deepcopy(cfg.data_preprocessor))
    ckpt = read_checkpoint(ckpt_path)
    state = training_state(ckpt, ckpt_path, ema)
    # A run without a dynamic teacher (a static-teacher method alone) keeps
    # the student's own weights (student.*); a GPD run keeps T_d's.
    own = 'distiller.dynamic_teacher.' if model_cfg.distiller.get(
        'enable_dynamic_teacher', True) else 'student.'
    if not any(k.startswith(own) for k in state):
        raise ExtractionError(
            f'{ckpt_path}: no GPD state (no {own}* weights); is it a '
            'training checkpoint of this config?')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(model_cfg)
    state = {k: v for k, v in state.items() if not k.startswith(
        ('teacher.', 'distiller.methods.'))}
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = sorted(k for k in set(ours) & set(state)
                    if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        def few(keys):
            return ', '.join(keys[:3]) + (' ...' if len(keys) > 3 else '')
        raise ExtractionError(
            f'{ckpt_path} does not match the config\'s model: '
            f'{len(missing)} missing ({few(missing)}), {len(unexpected)} '
            f'unexpected ({few(unexpected)}), {len(shapes)} with other shapes '
            f'({few(shapes)}); is it a checkpoint of another model or config?')
    model.load_state_dict(state, strict=True)
    return model.eval(), ckpt.get('meta', {})


def _to_plain(obj):
    """Replace every mmgpd type that has a plain OpenMMLab equivalent (a
    ``plain_cfg`` classmethod: ``ShapesDataset`` -> mmdet ``CocoDataset`` on the
    same files, ``PerModelMetric`` -> its inner metric); others stay."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    if not isinstance(obj, dict):
        return obj
    typ = obj.get('type')
    if isinstance(typ, str) and typ.startswith('mmgpd.'):
        from mmgpd.registry import DATASETS, METRICS
        for registry in (DATASETS, METRICS):
            cls = registry.get(typ)
            if cls is not None and hasattr(cls, 'plain_cfg'):
                return _to_plain(cls.plain_cfg(copy.deepcopy(dict(obj))))
    return type(obj)((k, _to_plain(v)) for k, v in obj.items())


def plain_student_config(cfg) -> dict:
    """A config of the student alone: no mmgpd type, nothing inherited.

    Model (``architecture`` with the data preprocessor), ``default_scope`` and
    every data / evaluation section that names no mmgpd type once the types
    with a plain equivalent are replaced (:func:`_to_plain`).
    """
    model = copy.deepcopy(cfg.model.architecture)
    _strip_pretrained(model)
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    out = dict(default_scope=cfg.get('default_scope', 'mmpretrain'), model=model)
    for key in ('test_pipeline', 'visualizer'):  # inferencers read both
        if cfg.get(key) is not None and 'mmgpd.' not in repr(cfg[key]):
            out[key] = copy.deepcopy(cfg[key])
    for split in ('val', 'test'):  # MMEngine wants each trio whole or absent
        trio = {f'{split}_{k}': _to_plain(copy.deepcopy(cfg.get(f'{split}_{k}')))
                for k in ('dataloader', 'cfg', 'evaluator')}
        if all(v is not None for v in trio.values()) and \
                'mmgpd.' not in repr(trio):
            out.update(copy.deepcopy(trio))
    if 'mmgpd.' in repr(out['model']):
        raise ExtractionError('the student config itself names mmgpd types')
    return out
