"""Cost of one GPD training step vs its unavoidable parts (time and memory).

One step = forward + backward + optimizer step, run through the real code path:
every method is an ``mmgpd.GPD`` algorithm (or, for the student alone, the plain
mmpretrain classifier) built from a config dict with
``mmgpd.registry.MODELS.build``, stepped by ``model.train_step(data,
optim_wrapper)`` with an MMEngine ``OptimWrapper`` (SGD) — what the Runner does.

Methods: ``student`` (plain classifier), ``kd`` (T_s → S, KDLoss), ``dkd``
(DKDLoss) — both ``GPDDistiller(enable_dynamic_teacher=False)`` —, ``gpd``
(GPD*, no static teacher, ratio 2), ``dkd_gpd`` and ``gpd_branches``; the
feature-level static-teacher methods on the last stage, alone and as GPD's
static-teacher term (into S and T_d): ``kcd`` / ``kcd_gpd`` (a solved channel
assignment, MSE on the matched channels; T_d's taps folded) and ``dpk`` /
``dpk_gpd`` (49 tokens, a 4 + 2 block encoder-decoder of width 256);
``reviewkd`` / ``reviewkd_gpd`` (ABFs over the four stages + the pooled
feature, HCL; T_d's ABFs read its 2x-wide taps) and ``pesf`` / ``pesf_gpd``
(PESF-KD: an adapter on T_s's pooled feature, one per target), the
configs/methods ImageNet recipes.

The unavoidable parts of a GPD step, measured in the same run:

* ``part_static_teacher``: T_s forward (no grad, eval) on the preprocessed batch;
* ``part_dynamic_teacher`` (``_branches``): T_d alone as a plain classifier, its
  own task loss, ``train_step`` (preprocessing + forward + backward + SGD step:
  GPD's optimizer updates T_d's parameters);
* ``part_student``: the plain student's forward + backward (no optimizer step:
  under the hard strategy S owns no parameters).

* ``part_dpk_encdec``: one DPK encoder-decoder (the student's) forward +
  backward + SGD step on recorded stage-4 features — DPK's share of a step
  (``dpk_gpd`` has two: S's and T_d's; T_d's tokeniser is wider, so counting
  S's twice slightly undercounts);
* ``part_kcd_refresh_batch``: one batch of a KCD refresh's statistics pass
  (no-grad forwards of S, T_d and T_s with taps, the channel sums of both
  targets) — a refresh runs ``KCDHook.num_batches`` of them;
* ``part_reviewkd_abf`` (``_dynamic_teacher``): S's (T_d's) ReviewKD — its
  ABFs + HCL — forward + backward + SGD step on recorded taps of S (T_d;
  leaves with grad) and T_s: ReviewKD's share of a step (``reviewkd_gpd`` has
  both; T_d's ABFs read its 2x-wide taps). PESF-KD's adapter (an MLP on
  (N, d) pooled features) has no part: its parts are those of KD.
* ``part_kcd_assignment``: the solve of a refresh (the correlation from the
  sums and the Hungarian assignment, scipy on the CPU, C_s × C_t of the
  setting's stage 4) — once per refresh, not per step.

``x parts`` = the method's step time / the sum of its parts' (goal ≤ 1.10).

Setting ``faster_rcnn`` (a two-stage detector: mmdet's Faster R-CNN R18-FPN,
configs/baselines/faster-rcnn_r18_fpn_1x_coco.py without the ImageNet
download, 80 classes, batch 2 at 512², random images with 4 random boxes
each): ``student`` (the plain detector's ``train_step``), ``gpd`` (GPD*,
ratio 2, the shapes recipe's terms: RPN gap term ``DenseKDLoss``, RoI gap
term ``KDLoss``, FPN ``FeatureMSELoss``; T_d replays S's proposals and sampled
RoIs) and its parts ``part_dynamic_teacher`` (T_d alone as a plain detector:
its own proposal decoding and sampling, which GPD's T_d pass skips, so the
parts slightly overcount) and ``part_student``. The classification methods
do not apply to it and are skipped.

Timing: models built once, then rounds in which every method / part runs one
step in turn (round-robin, the start rotating each round, so machine noise hits
all alike); ``--warmup`` rounds dropped, medians of ``--repeats`` rounds.
CUDA: ``torch.cuda.synchronize()`` around each step.  ``--amp`` uses
``mmgpd.AmpOptimWrapper`` (MMEngine's on a GPU; bf16 autocast + GradScaler on
the CPU) and autocast for the T_s and S parts, in ``--amp-dtype`` (default
float16 on CUDA, bfloat16 on the CPU, the only one there).

Memory, in a fresh subprocess per setting that builds one method / part at a
time and frees it before the next: ``resident`` = memory after build − before
build; ``step peak`` = peak during ``--mem-steps`` steps − memory after build
(activations, gradients, optimizer state, temporaries). CUDA:
``torch.cuda.memory_allocated`` / ``max_memory_allocated`` (peak reset per
unit). CPU: ``resident`` from the anonymous RSS (``RssAnon``; the libraries'
file-backed pages, which the kernel may reclaim during a build, are left out),
``step peak`` from the peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) − ``VmRSS`` after build, with glibc's mmap threshold fixed at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the RSS instead of being
reused silently, and every free heap page returned (``malloc_trim``) before
each reading; falls back to ``ru_maxrss`` where the peak cannot be reset.

Usage::

    python -m benchmarks.cost [--quick] [--out-json PATH] [--device cpu|cuda]
        [--amp] [--settings imagenet,digits,faster_rcnn] [--repeats 5]
        [--warmup 1]
        [--threads N] [--no-memory]
"""
import contextlib
import copy
import gc
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.common import (base_parser, finish, machine_info,
                               markdown_table, num_threads, quiet_logs)
from mmgpd.utils.allocator import release_free_heap

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

METHODS = ('student', 'kd', 'dkd', 'gpd', 'dkd_gpd', 'gpd_branches',
           'kcd', 'kcd_gpd', 'dpk', 'dpk_gpd', 'reviewkd', 'reviewkd_gpd',
           'pesf', 'pesf_gpd')
PARTS = ('part_static_teacher', 'part_dynamic_teacher',
         'part_dynamic_teacher_branches', 'part_student', 'part_dpk_encdec',
         'part_kcd_refresh_batch', 'part_kcd_assignment', 'part_reviewkd_abf',
         'part_reviewkd_abf_dynamic_teacher')
#: method -> the parts it cannot avoid (a part twice: it runs twice)
PARTS_OF = {
    'gpd': ('part_dynamic_teacher', 'part_student'),
    'dkd_gpd': ('part_static_teacher', 'part_dynamic_teacher', 'part_student'),
    'gpd_branches': ('part_dynamic_teacher_branches', 'part_student'),
    'kcd': ('part_static_teacher', 'part_student'),
    'kcd_gpd': ('part_static_teacher', 'part_dynamic_teacher', 'part_student'),
    'dpk': ('part_static_teacher', 'part_student', 'part_dpk_encdec'),
    'dpk_gpd': ('part_static_teacher', 'part_dynamic_teacher', 'part_student',
                'part_dpk_encdec', 'part_dpk_encdec'),
    'reviewkd': ('part_static_teacher', 'part_student', 'part_reviewkd_abf'),
    'reviewkd_gpd': ('part_static_teacher', 'part_dynamic_teacher',
                     'part_student', 'part_reviewkd_abf',
                     'part_reviewkd_abf_dynamic_teacher'),
    'pesf': ('part_static_teacher', 'part_student'),
    'pesf_gpd': ('part_static_teacher', 'part_dynamic_teacher', 'part_student'),
}
#: method -> (part, how many per step): its share of the method's step
SHARE_OF = {'dpk': ('part_dpk_encdec', 1), 'dpk_gpd': ('part_dpk_encdec', 2),
            'reviewkd': ('part_reviewkd_abf', 1)}
GOAL = 1.10

KD = dict(type='mmgpd.KDLoss', temperature=4.0)
DKD = dict(type='mmgpd.DKDLoss', alpha=1.0, beta=8.0, temperature=4.0)
#: configs/kcd and configs/dpk's methods (ImageNet recipes)
KCD = dict(type='mmgpd.KCD', taps=('stage4', ),
           loss=dict(type='mmgpd.FeatureMSELoss', normalize=True))
DPK = dict(type='mmgpd.DPK', taps=('stage4', ), embed_dim=256, patch_size=1,
           enc_depth=4, dec_depth=2, num_heads=8)
#: configs/methods/{reviewkd,pesf}_resnet18_in1k.py's methods
REVIEWKD = dict(type='mmgpd.ReviewKD', loss_weight=1.0)
PESF = dict(type='mmgpd.PESFKD', temperature=4.0)
DISTILLERS = {
    'kd': dict(enable_dynamic_teacher=False, kd_loss=KD),
    'dkd': dict(enable_dynamic_teacher=False, kd_loss=DKD),
    'gpd': dict(ratio=2),
    'dkd_gpd': dict(ratio=2, kd_loss=DKD),
    'gpd_branches': dict(ratio=2, branches=True),
    'kcd': dict(enable_dynamic_teacher=False, method=KCD),
    'kcd_gpd': dict(ratio=2, method=KCD, fold_dynamic_teacher_taps=True),
    'dpk': dict(enable_dynamic_teacher=False, method=DPK),
    'dpk_gpd': dict(ratio=2, method=DPK),
    'reviewkd': dict(enable_dynamic_teacher=False, method=REVIEWKD),
    'reviewkd_gpd': dict(ratio=2, method=REVIEWKD),
    'pesf': dict(enable_dynamic_teacher=False, method=PESF),
    'pesf_gpd': dict(ratio=2, method=PESF),
}
WITH_STATIC_TEACHER = ('kd', 'dkd', 'dkd_gpd', 'kcd', 'kcd_gpd', 'dpk',
                       'dpk_gpd', 'reviewkd', 'reviewkd_gpd', 'pesf',
                       'pesf_gpd')


def _imagenet():
    from mmengine.hub import get_config
    s = get_config('mmpretrain::resnet/resnet18_8xb32_in1k.py')
    t = get_config('mmpretrain::resnet/resnet34_8xb32_in1k.py')
    return dict(student=s.model.to_dict(), teacher=t.model.to_dict(),
                data_preprocessor=s.data_preprocessor.to_dict(),
                num_classes=1000, batch=32, size=224, quick_batch=4,
                quick_size=64,
                describe='mmpretrain ResNet-18 (1000 classes), T_s ResNet-34')


def _digits():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/baselines/resnet_digits.py'))
    student = cfg.model.to_dict()
    teacher = copy.deepcopy(student)
    teacher['backbone'].update(depth=34, stem_channels=32, base_channels=32)
    teacher['head']['in_channels'] = 32 * 2**3
    return dict(student=student, teacher=teacher,
                data_preprocessor=cfg.data_preprocessor.to_dict(),
                num_classes=10, batch=64, size=32, quick_batch=16, quick_size=32,
                describe='digits ResNet_CIFAR-18 width 16 (10 classes), T_s '
                'ResNet_CIFAR-34 width 32')


#: the two-stage setting's GPD (configs/gpd_det/faster-rcnn_r18_fpn_shapes.py's
#: terms) and the units that apply to detectors
DET_DISTILLER = dict(
    ratio=2,
    gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0, loss_weight=1.0),
    roi_gap_loss=dict(type='mmgpd.KDLoss', temperature=1.0, loss_weight=1.0),
    feat_loss=dict(type='mmgpd.FeatureMSELoss', loss_weight=1.0,
                   normalize=True))
DET_UNITS = ('student', 'gpd', 'part_dynamic_teacher', 'part_student')


def _strip_pretrained(cfg):
    """Drop ``Pretrained`` init_cfgs (no download: cost does not depend on
    the initial weights)."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for v in cfg.values():
            _strip_pretrained(v)
    return cfg


def _faster_rcnn():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs/baselines/faster-rcnn_r18_fpn_1x_coco.py'))
    # a ConfigDict (mmdet's detectors read train_cfg.rpn by attribute)
    student = _strip_pretrained(copy.deepcopy(cfg.model))
    preprocessor = student.pop('data_preprocessor')
    return dict(kind='detection', scope='mmdet', student=student,
                teacher=None, data_preprocessor=preprocessor,
                distillers={'gpd': DET_DISTILLER}, units=DET_UNITS,
                num_classes=80, batch=2, size=512, quick_batch=2,
                quick_size=128, boxes_per_image=4,
                describe='mmdet Faster R-CNN R18-FPN (80 classes; 256-wide '
                'FPN / RPN / RoI extractor, 1024-wide shared FCs), GPD* r=2 '
                '(T_d replays S\'s proposals and RoIs; RPN + RoI gap terms, '
                'FPN feature term)')


SETTINGS = {'imagenet': _imagenet, 'digits': _digits,
            'faster_rcnn': _faster_rcnn}


# --------------------------------------------------------------------- units
class Unit:
    """One thing to time: ``step()`` runs one training step (or part)."""

    def __init__(self, step, *keep):
        self.step = step
        self.keep = keep  # the models / optimizers the step holds


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _optim_wrapper(model, amp):
    """SGD in an ``OptimWrapper``; ``amp`` (an autocast dtype name, or
    None / False): ``mmgpd.AmpOptimWrapper`` in that dtype."""
    from mmengine.optim import OptimWrapper

    from mmgpd.engine.optimizers.amp_optim_wrapper import AmpOptimWrapper
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    return AmpOptimWrapper(optimizer=optimizer, dtype=amp) if amp else \
        OptimWrapper(optimizer=optimizer)


def _autocast(device, amp):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, amp))


def make_batch(spec, quick: bool, seed: int = 0) -> dict:
    """A batch as a dataloader yields it: uint8 images + DataSamples."""
    if spec.get('kind') == 'detection':
        return _det_batch(spec, quick, seed)
    from mmpretrain.structures import DataSample
    n = spec['quick_batch'] if quick else spec['batch']
    size = spec['quick_size'] if quick else spec['size']
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g,
                            dtype=torch.uint8) for _ in range(n)]
    labels = torch.randint(0, spec['num_classes'], (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


def _det_batch(spec, quick: bool, seed: int = 0) -> dict:
    """Detection batch: uint8 images and DetDataSamples with
    ``boxes_per_image`` random boxes (10-40 % of the side) and labels."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    n = spec['quick_batch'] if quick else spec['batch']
    size = spec['quick_size'] if quick else spec['size']
    k = spec['boxes_per_image']
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g,
                                    dtype=torch.uint8))
        xy = torch.rand(k, 2, generator=g) * size * 0.6
        wh = (0.1 + 0.3 * torch.rand(k, 2, generator=g)) * size
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_shape=(size, size), ori_shape=(size, size),
            scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1),
            labels=torch.randint(0, spec['num_classes'], (k, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _classifier(spec, key: str):
    from mmgpd.registry import MODELS
    cfg = copy.deepcopy(spec[key])
    cfg['data_preprocessor'] = copy.deepcopy(spec['data_preprocessor'])
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _gpd(spec, method: str, teacher_ckpt: str):
    from mmgpd.registry import MODELS
    distillers = spec.get('distillers', DISTILLERS)
    distiller = dict(type='mmgpd.GPDDistiller', **distillers[method])
    cfg = dict(type='mmgpd.GPD', architecture=copy.deepcopy(spec['student']),
               data_preprocessor=copy.deepcopy(spec['data_preprocessor']),
               distiller=distiller)
    if method in WITH_STATIC_TEACHER:
        cfg.update(teacher=copy.deepcopy(spec['teacher']),
                   teacher_ckpt=teacher_ckpt)
    return MODELS.build(cfg)


def build_unit(name: str, spec, data, device, amp, teacher_ckpt: str):
    """Build method / part ``name`` on ``device``: a :class:`Unit` (in the
    setting's registry scope: mmpretrain, or mmdet for detectors)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(spec.get('scope',
                                                       'mmpretrain')):
        if spec.get('kind') == 'detection':
            return _build_det_unit(name, spec, data, device, amp)
        return _build_unit(name, spec, data, device, amp, teacher_ckpt)


def _build_det_unit(name: str, spec, data, device, amp):
    """A detector's unit: ``student``, ``gpd``, ``part_dynamic_teacher`` (T_d
    as IR grows it inside GPD, stepped alone) or ``part_student``."""
    if name not in spec['units']:
        raise KeyError(f'{name!r} does not apply to detectors '
                       f'({", ".join(spec["units"])})')
    if name in ('gpd', 'part_dynamic_teacher'):
        model = _gpd(spec, 'gpd', None).to(device).train()
        if name == 'part_dynamic_teacher':
            model = model.distiller.dynamic_teacher
        ow = _optim_wrapper(model, amp)
        return Unit(lambda: model.train_step(data, ow), model, ow)
    return _build_unit(name, spec, data, device, amp, None)


def _build_unit(name: str, spec, data, device, amp, teacher_ckpt: str):
    if name == 'student':
        model = _classifier(spec, 'student').to(device).train()
        ow = _optim_wrapper(model, amp)
        return Unit(lambda: model.train_step(data, ow), model, ow)
    if name in DISTILLERS:
        model = _gpd(spec, name, teacher_ckpt).to(device).train()
        if name.startswith('kcd'):  # KCDHook solves before training
            _kcd_refresh(model, data)
        ow = _optim_wrapper(model, amp)
        return Unit(lambda: model.train_step(data, ow), model, ow)
    if name.startswith('part_kcd'):
        return _kcd_part(name, spec, data, device, teacher_ckpt)
    if name == 'part_dpk_encdec':
        return _dpk_part(spec, data, device, amp, teacher_ckpt)
    if name.startswith('part_reviewkd_abf'):
        target = 'dynamic_teacher' if name.endswith('dynamic_teacher') \
            else 'student'
        return _reviewkd_part(spec, data, device, amp, teacher_ckpt, target)
    if name == 'part_dynamic_teacher' or name == 'part_dynamic_teacher_branches':
        from mmgpd.registry import MODELS
        distiller = MODELS.build(dict(
            type='mmgpd.GPDDistiller',
            **DISTILLERS['gpd_branches' if name.endswith('branches') else 'gpd']))
        distiller.build_dynamic_teacher(_classifier(spec, 'student'))
        model = distiller.dynamic_teacher.to(device).train()
        del distiller
        ow = _optim_wrapper(model, amp)
        return Unit(lambda: model.train_step(data, ow), model, ow)
    # parts that start from the preprocessed batch (GPD preprocesses once)
    if name == 'part_static_teacher':
        model = _classifier(spec, 'teacher').to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        batch = model.data_preprocessor(data, True)

        def step():
            with torch.no_grad(), _autocast(device, amp):
                model(batch['inputs'], mode='tensor')

        return Unit(step, model)
    if name == 'part_student':
        model = _classifier(spec, 'student').to(device).train()
        ow = _optim_wrapper(model, amp)
        batch = model.data_preprocessor(data, True)

        def step():
            with ow.optim_context(model):
                losses = model(batch['inputs'], batch['data_samples'],
                               mode='loss')
            loss, _ = model.parse_losses(losses)
            ow.backward(loss)
            ow.zero_grad()

        return Unit(step, model, ow)
    raise KeyError(f'unknown method / part {name!r}')


def _kcd_refresh(model, data) -> None:
    """One KCD refresh on ``data`` (what KCDHook does over its batches)."""
    from mmgpd.engine.hooks.kcd_hook import KCDHook
    methods = KCDHook.kcd_methods(model)
    model.eval()
    with torch.no_grad():
        KCDHook._accumulate(model, methods, data)
    for _, method in methods:
        method.update()
    model.train()


def _kcd_part(name, spec, data, device, teacher_ckpt):
    """``part_kcd_refresh_batch`` (kcd_gpd: both targets) or
    ``part_kcd_assignment`` (the solve from saved sums, S's KCD)."""
    from mmgpd.engine.hooks.kcd_hook import KCDHook
    model = _gpd(spec, 'kcd_gpd', teacher_ckpt).to(device).eval()
    methods = KCDHook.kcd_methods(model)
    if name == 'part_kcd_refresh_batch':
        def step():
            with torch.no_grad():
                KCDHook._accumulate(model, methods, data)
            for _, method in methods:
                method.reset_statistics()

        return Unit(step, model)
    with torch.no_grad():
        KCDHook._accumulate(model, methods, data)
    match = methods[0][1].matches['stage4']
    sums = {k: getattr(match, k).clone() for k in
            ('count', 'sum_s', 'sum_t', 'sq_s', 'sq_t', 'cross')}

    def solve():
        for k, v in sums.items():
            getattr(match, k).copy_(v)
        match.solve()
        _sync(device)

    return Unit(solve, model)


def _dpk_part(spec, data, device, amp, teacher_ckpt):
    """S's DPK encoder-decoder alone: forward + backward + SGD step on the
    recorded stage-4 features of S (a leaf with grad) and T_s."""
    model = _gpd(spec, 'dpk', teacher_ckpt).to(device).train()
    method = model.distiller.methods['student']
    batch = model.data_preprocessor(data, True)
    with torch.no_grad():
        s_out, _ = model.task.outputs(model.student, batch['inputs'], None,
                                      with_loss=False,
                                      taps=model.tap_paths['student'])
        t_out, _ = model.task.outputs(model.teacher, batch['inputs'], None,
                                      with_loss=False,
                                      taps=model.tap_paths['static_teacher'])
    f_s = s_out['stage4'].detach().requires_grad_(True)
    f_t = t_out['stage4'].detach()
    ow = _optim_wrapper(method, amp)

    def step():
        with ow.optim_context(method), _autocast(device, amp):
            loss = method({'stage4': f_s}, {'stage4': f_t})['loss_dpk']
        ow.update_params(loss)
        f_s.grad = None

    return Unit(step, method, ow)


def _reviewkd_part(spec, data, device, amp, teacher_ckpt, target='student'):
    """The ReviewKD of ``target`` (S, or T_d of ``reviewkd_gpd``) alone — ABFs
    + HCL: forward + backward + SGD step on the recorded taps of the target
    (leaves with grad) and T_s."""
    name = 'reviewkd' if target == 'student' else 'reviewkd_gpd'
    model = _gpd(spec, name, teacher_ckpt).to(device).train()
    method = model.distiller.methods[target]
    batch = model.data_preprocessor(data, True)
    with torch.no_grad():
        s_out, _ = model.task.outputs(model.models()[target], batch['inputs'],
                                      None, with_loss=False,
                                      taps=model.tap_paths['student'])
        t_out, _ = model.task.outputs(model.teacher, batch['inputs'], None,
                                      with_loss=False,
                                      taps=model.tap_paths['static_teacher'])
    f_s = {k: s_out[k].detach().requires_grad_(True)
           for k in method.student_taps}
    f_t = {k: t_out[k].detach() for k in method.teacher_taps}
    ow = _optim_wrapper(method, amp)

    def step():
        with ow.optim_context(method), _autocast(device, amp):
            loss = method(f_s, f_t)['loss_reviewkd']
        ow.update_params(loss)
        for f in f_s.values():
            f.grad = None

    return Unit(step, method, ow)


def save_teacher_ckpt(spec, folder: str):
    """A static-teacher checkpoint (random init: cost does not depend on it);
    None for a setting without one."""
    if spec.get('teacher') is None:
        return None
    path = osp.join(folder, 'static_teacher.pth')
    torch.save({'state_dict': _classifier(spec, 'teacher').state_dict()}, path)
    return path


# -------------------------------------------------------------------- timing
def time_units(units: dict, device, warmup: int, repeats: int):
    """Round-robin: ``{name: [seconds per measured round]}``."""
    names = list(units)
    times = {n: [] for n in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _sync(device)
            t0 = time.perf_counter()
            units[name].step()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


# -------------------------------------------------------------------- memory
def _proc_status_kb(key: str):
    try:
        with open('/proc/self/status', encoding='utf-8') as f:
            m = re.search(rf'^{key}:\s+(\d+) kB', f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w', encoding='utf-8') as f:
            f.write('5')
        return True
    except OSError:
        return False


class _Meter:
    """Current and peak memory in MiB: CUDA allocator, or process RSS."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == 'cuda'
        self.method = None

    def now(self) -> float:
        """Live memory: CUDA's allocated bytes; on the CPU the anonymous RSS
        (``RssAnon``: heap and tensors; the libraries' file-backed pages,
        which the kernel may reclaim at any moment, e.g. DAMON's proactive
        reclaim, are left out) after returning free heap pages."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            return torch.cuda.memory_allocated() / 2**20
        release_free_heap()  # freed heap pages would hide new allocations
        anon = _proc_status_kb('RssAnon')
        return (anon if anon is not None else _proc_status_kb('VmRSS')) / 1024

    def baseline(self) -> float:
        """Memory now, on the basis of :meth:`peak` (CPU: whole VmRSS)."""
        if self.cuda:
            return self.now()
        release_free_heap()
        return _proc_status_kb('VmRSS') / 1024

    def reset_peak(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.method = 'torch.cuda.max_memory_allocated'
        elif _reset_peak_rss() and _proc_status_kb('VmHWM') is not None:
            self.method = 'RSS (VmHWM reset by /proc/self/clear_refs)'
        else:
            self.method = 'RSS (ru_maxrss, not resettable: a lower bound)'

    def peak(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        if self.method.startswith('RSS (VmHWM'):
            return _proc_status_kb('VmHWM') / 1024
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(setting: str, names, quick: bool, device, amp,
                  steps: int) -> dict:
    """In this (fresh) process: each unit alone, built, stepped, freed."""
    spec = SETTINGS[setting]()
    names = applicable(spec, names)
    data = make_batch(spec, quick)
    meter = _Meter(device)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_teacher_ckpt(spec, tmp)
        for name in names:
            before = meter.now()
            unit = build_unit(name, spec, data, device, amp, ckpt)
            built = meter.now()
            base = meter.baseline()
            meter.reset_peak()
            for _ in range(steps):
                unit.step()
            peak = meter.peak()
            out[name] = dict(resident_mb=built - before,
                             step_peak_mb=max(0.0, peak - base),
                             method=meter.method)
            del unit
            meter.now()
    return out


def measure_memory(setting: str, names, args) -> dict:
    """Run :func:`memory_worker` in a fresh interpreter; its JSON result."""
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
    if args.device == 'cpu':
        env['MALLOC_MMAP_THRESHOLD_'] = str(64 * 1024)
    cmd = [sys.executable, '-m', 'benchmarks.cost', '--memory-worker', setting,
           '--units', ','.join(names), '--device', args.device,
           '--mem-steps', str(args.mem_steps),
           '--threads', str(torch.get_num_threads())]
    cmd += ['--quick'] if args.quick else []
    cmd += ['--amp', '--amp-dtype', args.amp] if args.amp else []
    # RSS per unit needs freed memory returned: never tuned (see _run)
    cmd += ['--no-malloc-tuning']
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith('MEMJSON '):
            return json.loads(line[len('MEMJSON '):])
    raise RuntimeError(f'memory worker failed (rc {proc.returncode}):\n'
                       f'{proc.stderr[-3000:]}')


# ---------------------------------------------------------------------- main
COLUMNS = [('setting', 'setting', ''), ('method', 'method', ''),
           ('ms', 'ms/step (median)', '.1f'),
           ('x_student', 'x student', '.2f'),
           ('parts_ms', 'sum of parts ms', '.1f'),
           ('x_parts', f'x parts (goal ≤ {GOAL:.2f})', '.3f'),
           ('x_parts_paired', 'x parts (paired median)', '.3f'),
           ('part_share', 'method part share', '.3f'),
           ('step_peak_mb', 'step peak MiB', '.0f'),
           ('parts_step_peak_mb', 'parts step peak MiB', '.0f'),
           ('x_parts_mem', 'x parts mem', '.2f'),
           ('resident_mb', 'resident MiB', '.0f'),
           ('x_parts_total_mem', 'x parts mem (resident + peak)', '.2f')]


def _rows(setting: str, times: dict, memory: dict):
    med = {n: statistics.median(t) for n, t in times.items()}
    rows = []
    for name in METHODS + PARTS:
        if name not in times:
            continue
        row = dict(setting=setting, method=name,
                   kind='part' if name in PARTS else 'method',
                   ms=med[name] * 1e3, runs_ms=[t * 1e3 for t in times[name]],
                   x_student=med[name] / med['student'] if 'student' in med
                   else None, parts_ms=None, x_parts=None,
                   x_parts_paired=None, parts=None)
        share = SHARE_OF.get(name)
        if share and share[0] in med:
            row['part_share'] = share[1] * med[share[0]] / med[name]
        mem = memory.get(name)
        if mem:
            row.update(resident_mb=mem['resident_mb'],
                       step_peak_mb=mem['step_peak_mb'])
        parts = PARTS_OF.get(name)
        if parts and all(p in times for p in parts):
            row['parts'] = list(parts)
            row['parts_ms'] = sum(med[p] for p in parts) * 1e3
            row['x_parts'] = med[name] * 1e3 / row['parts_ms']
            row['x_parts_paired'] = statistics.median(
                t / sum(times[p][i] for p in parts)
                for i, t in enumerate(times[name]))
            if mem and all(p in memory for p in parts):
                peak = sum(memory[p]['step_peak_mb'] for p in parts)
                total = sum(memory[p]['step_peak_mb'] + memory[p]['resident_mb']
                            for p in parts)
                row['parts_step_peak_mb'] = peak
                row['x_parts_mem'] = mem['step_peak_mb'] / peak if peak else None
                row['x_parts_total_mem'] = (
                    mem['step_peak_mb'] + mem['resident_mb']) / total \
                    if total else None
        rows.append(row)
    return rows


def parse_args(argv=None):
    parser = base_parser(__doc__.split('\n')[0])
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (mmgpd.AmpOptimWrapper + '
                        'autocast)')
    parser.add_argument('--amp-dtype', choices=('float16', 'bfloat16'),
                        help='autocast dtype (default float16 on CUDA, '
                        'bfloat16 on the CPU, the only one there)')
    parser.add_argument('--settings', default='imagenet,digits',
                        help='comma-separated: imagenet, digits, faster_rcnn '
                        '(a two-stage detector: student, gpd and its parts)')
    parser.add_argument('--methods', default=','.join(METHODS + PARTS),
                        help='comma-separated methods and parts to run')
    parser.add_argument('--repeats', type=int, help='measured rounds '
                        '(default 5; --quick: 2)')
    parser.add_argument('--warmup', type=int, default=1, help='rounds dropped')
    parser.add_argument('--mem-steps', type=int, default=2,
                        help='steps per unit in the memory measurement')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--no-malloc-tuning', action='store_true',
                        help="leave glibc's mmap / trim thresholds alone (by "
                        'default they are fixed on the CPU, as tools/train.py '
                        'does: mmgpd/utils/allocator.py)')
    parser.add_argument('--memory-worker', help=argparse_hidden())
    parser.add_argument('--units', help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    if args.amp_dtype and not args.amp:
        parser.error('--amp-dtype needs --amp')
    if args.amp:  # from here on: the autocast dtype's name
        args.amp = args.amp_dtype or (
            'float16' if args.device == 'cuda' else 'bfloat16')
        if args.device == 'cpu' and args.amp != 'bfloat16':
            parser.error('--amp-dtype float16: CPU autocast runs bfloat16 only')
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    return args


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


def main(argv=None) -> dict:
    """Time (and measure the memory of) every method and part; returns
    ``dict(rows, table, machine, settings, ...)``."""
    args = parse_args(argv)
    quiet_logs()
    with num_threads(args.threads):
        return _run(args)


def applicable(spec, names):
    """The methods / parts of ``names`` that the setting can run."""
    units = spec.get('units')
    return [n for n in names if units is None or n in units]


def _run(args) -> dict:
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    device = torch.device(args.device)
    tuned = False
    # (not in a memory worker: with freed blocks kept in the heap, RSS would
    # not drop between units and their growth would be undercounted)
    if args.device == 'cpu' and not args.no_malloc_tuning \
            and not args.memory_worker:
        from mmgpd.utils.allocator import tune_cpu_allocator
        tuned = tune_cpu_allocator()
    if args.memory_worker:
        out = memory_worker(args.memory_worker, args.units.split(','),
                            args.quick, device, args.amp, args.mem_steps)
        print('MEMJSON ' + json.dumps(out), flush=True)
        return out
    all_names = [n for n in args.methods.split(',') if n]
    unknown = set(all_names) - set(METHODS + PARTS)
    if unknown:
        raise SystemExit(f'unknown methods / parts: {sorted(unknown)}')
    rows, details, t_start = [], {}, time.perf_counter()
    for setting in args.settings.split(','):
        if setting not in SETTINGS:
            raise SystemExit(f'--settings: unknown {setting!r} '
                             f'({", ".join(SETTINGS)})')
        spec = SETTINGS[setting]()
        names = applicable(spec, all_names)
        if not names:
            print(f'{setting}: none of the methods applies, skipped')
            continue
        data = make_batch(spec, args.quick)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_teacher_ckpt(spec, tmp)
            units = {n: build_unit(n, spec, data, device, args.amp, ckpt)
                     for n in names}
        times = time_units(units, device, args.warmup, args.repeats)
        del units
        gc.collect()
        # the tuned heap keeps every freed step's memory (~16 GB after the
        # ImageNet units): return it before the memory worker starts beside
        # this process
        release_free_heap()
        memory = {} if args.no_memory else measure_memory(setting, names, args)
        rows += _rows(setting, times, memory)
        details[setting] = dict(
            model=spec['describe'],
            batch=spec['quick_batch'] if args.quick else spec['batch'],
            size=spec['quick_size'] if args.quick else spec['size'],
            memory_method=next((m['method'] for m in memory.values()), None))
        print(f'{setting}: done', flush=True)
    machine = machine_info(args.device)
    header = '\n'.join(
        f"* {s}: {d['model']}, batch {d['batch']} at {d['size']}², memory: "
        f"{d['memory_method'] or 'not measured'}" for s, d in details.items())
    header += (f"\n* machine: {machine['cpu']}"
               + (f", {machine.get('gpu')}" if args.device == 'cuda' else '')
               + f", {machine['torch_threads']} torch threads, torch "
               f"{machine['torch']}, device {args.device}"
               f"{f' (AMP {args.amp})' if args.amp else ''}, "
               f"glibc malloc thresholds {'fixed' if tuned else 'as default'}"
               f", {machine['date']}; medians of "
               f'{args.repeats} round-robin rounds after {args.warmup} warm-up')
    result = dict(
        benchmark='cost', rows=rows,
        table=header + '\n\n' + markdown_table(rows, COLUMNS),
        machine=machine, settings=details, goal_x_parts=GOAL,
        options=dict(quick=args.quick, amp=args.amp, repeats=args.repeats,
                     malloc_tuned=tuned,
                     warmup=args.warmup, mem_steps=args.mem_steps,
                     optimizer='SGD(lr=1e-3, momentum=0.9, wd=1e-4)'),
        seconds=time.perf_counter() - t_start)
    return finish(result, args.out_json)


if __name__ == '__main__':
    main()
