"""Coverage of IR over the mmpretrain zoo: every registered backbone, exact or not.

Every class exported by ``mmpretrain.models.backbones`` and registered in
mmpretrain's ``MODELS`` is built from :data:`FAMILIES` (its smallest arch, a
small input; a family missing from the table is tried with its defaults) inside
an ``ImageClassifier``: ``GlobalAveragePooling`` + ``LinearClsHead`` (10
classes, ``in_channels`` read from a dry forward of the backbone), or a plain
``LinearClsHead`` / the family's own head where the backbone returns vectors.
The library's init runs, then BN / LN / GN statistics and affine parameters are
randomized (:func:`mmgpd.testing.zoo.randomize_norms`) and constant parameters
(layer scales, zero biases, tokens, zero heads) are drawn at random, so that an
error cannot hide behind zeros or a 1e-6 layer scale.

For each family and each of two ratios, 2 and a fractional one the family can
take (:data:`FAMILIES`, default 1.5; whole heads for attention), IR
(``inverse_reparameterize(model, ratio)``, self-check on, probe batch seed 1)
is timed and classified:

* ``exact``: IR returns and T_d matches S in eval mode within 1e-5;
* ``inexact``: IR returned but T_d deviates (eval) on the measuring batch;
* ``refused``: ``UnsupportedModuleError`` / ``ValueError`` (first reason kept);
* ``self-check failed``: ``IRVerificationError`` (its message);
* ``crash``: any other exception, or the time limit (type, message and the
  innermost mmgpd / model frame);
* ``CBR failed``: extraction raised or did not reproduce S.

Measured for an exact ratio, on a batch other than IR's probe (seed 0), with
``mmgpd.reparam.max_relative_deviation`` (``max|a - b| / max|b|`` of the
logits): ``eval`` (eval mode), ``train`` (train mode, ``torch.manual_seed(0)``
before each forward, so that drop-path / dropout draw the same numbers where
the shapes allow; reported, not part of the verdict, beside ``train_floor``:
S in fp32 vs S in fp64, both in train mode, the rounding floor that batch
statistics of a batch of 2 amplify), ``cbr`` (eval outputs of
``extract_student(T_d)`` vs S) and ``cbr_w`` (max absolute difference over S's
state dict), ``params_x`` (parameters of T_d / S) and ``ir_s`` (seconds of
``inverse_reparameterize``: build, trace and self-check). A family is exact
when both ratios are exact and CBR reproduces S (``cbr`` <= 1e-5,
``cbr_w`` <= 1e-5).

Writes ``coverage.md`` and ``coverage.json`` into ``--out-dir`` (default
``results/`` for the full sweep; ``--quick`` / ``--only`` write only where
told)::

    python -m benchmarks.coverage [--quick] [--only ResNet,ConvNeXt]
        [--out-dir DIR] [--timeout 300] [--threads 1] [--device cpu]
"""
import copy
import gc
import os.path as osp
import signal
import time
import traceback

import torch

from benchmarks.common import (base_parser, machine_info, markdown_table,
                               num_threads, quiet_logs)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS_DIR = osp.join(ROOT, 'results')
TOL = 1e-5  # eval-mode relative deviation, CBR outputs and weights


def F(backbone, size=32, frac=1.5, head=None, in_channels=3, note=None):
    """One family: backbone config, input size, fractional ratio, head, and
    a note shown when it does not build."""
    return dict(backbone=backbone, size=size, frac=frac, head=head,
                in_channels=in_channels, note=note)


def vit(type_, arch, size=64, **kw):
    """A ViT-like backbone: ``arch`` (name or dict) at ``size``² input."""
    return dict(type=type_, arch=arch, img_size=size, **kw)


SPARK = ('a SparK pre-training encoder: its forward reads a global mask '
         '(SparseHelper._cur_active) that only the SparK algorithm sets')
#: a small ViT / DeiT-tiny shape for families whose smallest arch is ViT-base
TINY = dict(embed_dims=192, num_layers=4, num_heads=3, feedforward_channels=768)

#: family (backbone class) -> smallest arch, input size, fractional ratio
FAMILIES = {
    'LeNet5': F(dict(type='LeNet5'), 32, in_channels=1),
    'AlexNet': F(dict(type='AlexNet'), 64),
    'VGG': F(dict(type='VGG', depth=11), 32),
    'RegNet': F(dict(type='RegNet', arch='regnetx_400mf'), 32),
    'ResNet': F(dict(type='ResNet', depth=18), 32),
    'ResNetV1c': F(dict(type='ResNetV1c', depth=18), 32),
    'ResNetV1d': F(dict(type='ResNetV1d', depth=18), 32),
    'ResNet_CIFAR': F(dict(type='ResNet_CIFAR', depth=18), 32),
    'ResNeXt': F(dict(type='ResNeXt', depth=50), 32),
    'ResNeSt': F(dict(type='ResNeSt', depth=50), 32),
    'Res2Net': F(dict(type='Res2Net', depth=50), 32),
    'SEResNet': F(dict(type='SEResNet', depth=50), 32),
    'SEResNeXt': F(dict(type='SEResNeXt', depth=50), 32),
    'ShuffleNetV1': F(dict(type='ShuffleNetV1', widen_factor=0.5), 32),
    'ShuffleNetV2': F(dict(type='ShuffleNetV2', widen_factor=0.5), 32),
    'MobileNetV2': F(dict(type='MobileNetV2', widen_factor=0.5), 32),
    'MobileNetV3': F(dict(type='MobileNetV3', arch='small'), 32),
    'MobileOne': F(dict(type='MobileOne', arch='s0'), 32),
    'RepVGG': F(dict(type='RepVGG', arch='A0'), 32),
    'RepLKNet': F(dict(type='RepLKNet', arch=dict(
        large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 1, 1],
        channels=[32, 64, 128, 256], small_kernel=5, dw_ratio=1,
        ffn_ratio=4)), 32),
    'HRNet': F(dict(type='HRNet', arch='w18'), 32),
    'DenseNet': F(dict(type='DenseNet', arch='121'), 32),
    'InceptionV3': F(dict(type='InceptionV3'), 96),
    'EfficientNet': F(dict(type='EfficientNet', arch='b0'), 32),
    'EfficientNetV2': F(dict(type='EfficientNetV2', arch='b0'), 32),
    'CSPDarkNet': F(dict(type='CSPDarkNet', depth=53), 32),
    'CSPResNet': F(dict(type='CSPResNet', depth=50), 32),
    'CSPResNeXt': F(dict(type='CSPResNeXt', depth=50), 32),
    'ConvMixer': F(dict(type='ConvMixer', arch=dict(
        embed_dims=256, depth=8, patch_size=4, kernel_size=5)), 32),
    'ConvNeXt': F(dict(type='ConvNeXt', arch='atto'), 32),
    'SparseConvNeXt': F(dict(type='SparseConvNeXt', arch='atto'), 32,
                        note=SPARK),
    'SparseResNet': F(dict(type='SparseResNet', depth=18), 32, note=SPARK),
    'EdgeNeXt': F(dict(type='EdgeNeXt', arch='xxsmall'), 64, 4 / 3),
    'PoolFormer': F(dict(type='PoolFormer', arch='s12'), 32),
    'RIFormer': F(dict(type='RIFormer', arch='s12'), 32),
    'VAN': F(dict(type='VAN', arch='tiny'), 32),
    'HorNet': F(dict(type='HorNet', arch='tiny'), 32),
    'EfficientFormer': F(dict(type='EfficientFormer', arch='l1'), 224),
    'MobileViT': F(dict(type='MobileViT', arch='xx_small'), 64),
    'RepMLPNet': F(vit('RepMLPNet', 'b'), 64),
    'MlpMixer': F(vit('MlpMixer', dict(
        embed_dims=128, num_layers=4, tokens_mlp_dims=64,
        channels_mlp_dims=256)), 64),
    'VisionTransformer': F(vit('VisionTransformer', 'deit-tiny'), 64, 4 / 3),
    'DistilledVisionTransformer': F(
        vit('DistilledVisionTransformer', 'deit-tiny'), 64, 4 / 3,
        head=dict(type='DeiTClsHead')),
    'DeiT3': F(vit('DeiT3', 'small'), 64, 7 / 6),
    'BEiTViT': F(vit('BEiTViT', TINY), 64, 4 / 3),
    'RevVisionTransformer': F(vit('RevVisionTransformer', 'deit-tiny'), 64,
                              4 / 3),
    'ViTEVA02': F(vit('ViTEVA02', 'tiny'), 64, 4 / 3),
    'ViTSAM': F(vit('ViTSAM', dict(TINY, global_attn_indexes=[1, 3]),
                    window_size=2), 64, 4 / 3),
    'T2T_ViT': F(dict(type='T2T_ViT', img_size=64), 64, 7 / 6),
    'TNT': F(vit('TNT', 's'), 64, 7 / 6),
    'XCiT': F(dict(type='XCiT', img_size=64, embed_dims=192, depth=4,
                   num_heads=4), 64, 1.5),
    'SwinTransformer': F(vit('SwinTransformer', 'tiny', 128, window_size=4),
                         128, 4 / 3),
    'SwinTransformerV2': F(vit('SwinTransformerV2', 'tiny', 128,
                               window_size=4), 128, 4 / 3),
    'MixMIMTransformer': F(vit('MixMIMTransformer', dict(
        embed_dims=96, depths=[1, 1, 2, 1], num_heads=[3, 6, 12, 24]),
        window_size=[4, 4, 4, 2]), 64, 4 / 3),
    'DaViT': F(dict(type='DaViT', arch='tiny', window_size=4), 128, 4 / 3),
    'TinyViT': F(dict(type='TinyViT', arch='5m', img_size=(64, 64),
                      window_size=[4, 4, 4, 2]), 64, 1.5),
    'HiViT': F(vit('HiViT', 'tiny'), 64, 7 / 6),
    'MViT': F(vit('MViT', 'tiny'), 64, 1.5),
    'LeViT': F(vit('LeViT', '128s'), 64, 1.5),
    'PCPVT': F(dict(type='PCPVT', arch='small'), 64, 1.5),
    'SVT': F(dict(type='SVT', arch='small'), 64, 1.5),
    'Conformer': F(dict(type='Conformer', arch='tiny'), 64, 7 / 6,
                   head=dict(type='ConformerHead')),
    'Vig': F(dict(type='Vig', arch='tiny'), 224),
    'PyramidVig': F(dict(type='PyramidVig', arch='tiny'), 224),
    'TIMMBackbone': F(dict(type='TIMMBackbone', model_name='resnet18'), 32),
}
#: the fast subset of ``--quick`` and of the tests
QUICK = ('ResNet', 'MobileNetV2', 'MobileNetV3', 'ShuffleNetV2', 'ConvNeXt',
         'VisionTransformer', 'SwinTransformer', 'DenseNet')

STATUSES = ('exact', 'inexact', 'CBR failed', 'refused', 'self-check failed',
            'crash', 'does not build')


# --------------------------------------------------------------------------- #
# Building
# --------------------------------------------------------------------------- #
def registered_backbones() -> list:
    """Classes of ``mmpretrain.models.backbones`` registered in ``MODELS``."""
    import mmpretrain.models  # noqa: F401  (registers everything)
    import mmpretrain.models.backbones as backbones
    from mmpretrain.registry import MODELS
    return [n for n in backbones.__all__
            if MODELS.get(n) is getattr(backbones, n, None)]


def family_of(name: str) -> dict:
    """The table's entry (defaults for a family not in the table)."""
    return FAMILIES.get(name) or F(dict(type=name), 64)


def arch_str(fam: dict) -> str:
    """A short human description of the chosen arch."""
    cfg = {k: v for k, v in fam['backbone'].items()
           if k not in ('type', 'img_size')}
    if isinstance(cfg.get('arch'), dict):
        cfg['arch'] = 'custom(' + ', '.join(
            f'{k}={v}' for k, v in cfg['arch'].items()) + ')'
    text = ', '.join(f'{k}={v}' for k, v in cfg.items()) or 'default'
    return f'{text} @{fam["size"]}²'


def _randomize(model, seed):
    """Norms randomized; constant parameters (zeros, layer scales) drawn."""
    from mmgpd.testing.zoo import randomize_norms
    g = torch.Generator().manual_seed(seed)
    randomize_norms(model, g, spread=0.5)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and p.is_floating_point() and \
                    bool((p == p.flatten()[0]).all()):
                if p.flatten()[0] == 0:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))


def build_classifier(name: str, seed: int = 0):
    """``(model, input_shape)``: the family inside an ``ImageClassifier``."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    fam = family_of(name)
    shape = (fam['in_channels'], fam['size'], fam['size'])
    torch.manual_seed(seed)
    backbone = MODELS.build(copy.deepcopy(fam['backbone']))
    backbone.eval()  # some backbones' train() returns None
    with torch.no_grad():
        last = backbone(torch.zeros(2, *shape))[-1]
    head = copy.deepcopy(fam['head']) or dict(type='LinearClsHead')
    neck = None
    if isinstance(last, torch.Tensor) and last.dim() > 2:  # (B, C, *spatial)
        neck = dict(type='GlobalAveragePooling', dim=last.dim() - 2)
        in_channels = last.shape[1]
    elif isinstance(last, torch.Tensor):
        in_channels = last.shape[-1]
    else:  # a list of vectors: the family's head reads them all
        in_channels = [t.shape[-1] for t in last]
        if head['type'] == 'DeiTClsHead':
            in_channels = in_channels[0]
    head.update(num_classes=10, in_channels=in_channels)
    torch.manual_seed(seed)
    model = MODELS.build(dict(type='ImageClassifier', backbone=fam['backbone'],
                              neck=neck, head=head))
    model.init_weights()
    _randomize(model, seed)
    model.eval()
    return model, shape


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #
class _Timeout(Exception):
    pass


class time_limit:
    """Raise :class:`_Timeout` after ``seconds`` (SIGALRM; main thread only)."""

    def __init__(self, seconds):
        import threading
        self.seconds = seconds if threading.current_thread() is \
            threading.main_thread() and hasattr(signal, 'SIGALRM') else 0

    def _raise(self, *_):
        raise _Timeout(f'time limit of {self.seconds} s reached')

    def __enter__(self):
        if self.seconds:
            self.old = signal.signal(signal.SIGALRM, self._raise)
            signal.alarm(int(self.seconds))

    def __exit__(self, *exc):
        if self.seconds:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old)


def _frame(exc) -> str:
    """The innermost traceback frame in mmgpd / mmpretrain / mmcv code."""
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        for pkg in ('mmgpd', 'mmpretrain', 'mmcv', 'mmengine'):
            key = f'/{pkg}/'
            if key in fr.filename:
                path = pkg + '/' + fr.filename.rsplit(key, 1)[1]
                return f'{path}:{fr.lineno} in {fr.name}'
    return ''


def _first_line(text: str) -> str:
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0] if lines else ''


def classify(exc, model=None) -> dict:
    """``dict(status, reason[, named])`` for an exception IR raised."""
    from mmgpd.reparam import IRVerificationError, UnsupportedModuleError
    if isinstance(exc, UnsupportedModuleError):
        mods = getattr(exc, 'modules', None)
        reason = (f'{mods[0][0] or "<model>"} ({mods[0][1]}): {mods[0][2]}'
                  if mods else _first_line(exc))
        if mods and len(mods) > 1:
            reason += f' (+{len(mods) - 1} more)'
        return dict(status='refused', reason=reason)
    if isinstance(exc, ValueError):
        return dict(status='refused', reason=_first_line(exc))
    if isinstance(exc, IRVerificationError):
        msg = ' '.join(str(exc).split())
        names = [n for n, _ in model.named_modules() if '.' in n] \
            if model is not None else []
        where = getattr(exc, 'where', None) or getattr(exc, 'module', None)
        named = bool(where) or any(n in msg for n in names)
        if where and str(where) not in msg:
            msg = f'{msg} [first deviating: {where}]'
        return dict(status='self-check failed', reason=msg, named=named)
    where = _frame(exc)
    return dict(status='crash', reason=f'{type(exc).__name__}: '
                f'{_first_line(exc)}' + (f' [{where}]' if where else ''))


def _forward(model, x, train: bool):
    from mmgpd.reparam import default_forward
    model.train(train)
    torch.manual_seed(0)
    with torch.no_grad():
        return default_forward(model, x)


def _nparams(model) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_ratio(student, ratio, probe, x) -> dict:
    """IR of ``student`` at ``ratio``: status, deviations, CBR, time."""
    from mmgpd.reparam import (extract_student, inverse_reparameterize,
                               max_relative_deviation)
    row = dict(ratio=float(ratio), status=None, reason=None, eval=None,
               train=None, cbr=None, cbr_w=None, params_x=None, ir_s=None)
    t0 = time.perf_counter()
    try:
        teacher = inverse_reparameterize(student, ratio, example_inputs=probe)
    except Exception as exc:  # noqa: BLE001 - classified
        row['ir_s'] = time.perf_counter() - t0
        row.update(classify(exc, student))
        return row
    row['ir_s'] = time.perf_counter() - t0
    row['params_x'] = _nparams(teacher) / _nparams(student)
    try:
        s_eval = _forward(student, x, False)
        row['eval'] = max_relative_deviation(_forward(teacher, x, False),
                                             s_eval)
        if not row['eval'] <= TOL:
            row.update(status='inexact', reason='T_d deviates in eval mode '
                       f'by {row["eval"]:.2e} on a batch other than the probe')
            return row
        try:
            extracted = extract_student(teacher)
            row['cbr'] = max_relative_deviation(
                _forward(extracted, x, False), s_eval)
            ref, got = student.state_dict(), extracted.state_dict()
            row['cbr_w'] = max(((got[k].double() - v.double()).abs().max()
                                .item() for k, v in ref.items()
                                if v.is_floating_point() and v.numel()),
                               default=0.0)
        except Exception as exc:  # noqa: BLE001
            row.update(status='CBR failed', reason='extract_student: ' +
                       classify(exc)['reason'])
            return row
        # last: batch statistics move the running buffers
        row['train'] = max_relative_deviation(_forward(teacher, x, True),
                                              _forward(student, x, True))
        if row['cbr'] <= TOL and row['cbr_w'] <= TOL:
            row['status'] = 'exact'
        else:
            row.update(status='CBR failed', reason='extracted student '
                       f'deviates: outputs {row["cbr"]:.2e}, weights '
                       f'{row["cbr_w"]:.2e}')
    except Exception as exc:  # noqa: BLE001 - T_d or S does not run
        row.update(status='crash', reason='forward after IR: ' +
                   classify(exc)['reason'])
    return row


def train_floor(student, x):
    """How far S itself is, in train mode, from its fp64 twin (fp32
    rounding amplified by batch statistics of a batch of 2): the scale
    against which the train-mode column reads."""
    from mmgpd.reparam import max_relative_deviation
    try:
        s64 = copy.deepcopy(student).double()
        return max_relative_deviation(
            _forward(copy.deepcopy(student), x, True),
            _forward(s64, x.double(), True))
    except Exception:  # noqa: BLE001 - some ops have no fp64 kernel
        return None


def measure_family(name: str, timeout: float = 300, device='cpu') -> dict:
    """Build the family and measure both ratios (never raises)."""
    fam = family_of(name)
    out = dict(family=name, arch=arch_str(fam), in_table=name in FAMILIES,
               frac=fam['frac'], status=None, reason=None, named=None,
               build_s=None, train_floor=None, r2=None, rf=None)
    t0 = time.perf_counter()
    try:
        with time_limit(timeout):
            model, shape = build_classifier(name)
    except Exception as exc:  # noqa: BLE001
        out.update(status='does not build', reason=f'{type(exc).__name__}: '
                   f'{_first_line(exc)}' + (f' ({fam["note"]})' if fam['note']
                                            else ''))
        return out
    out['build_s'] = time.perf_counter() - t0
    model = model.to(device)
    probe, x = (torch.randn(2, *shape, generator=torch.Generator(
    ).manual_seed(seed)).to(device) for seed in (1, 0))
    out['train_floor'] = train_floor(model, x)
    for key, ratio in (('r2', 2), ('rf', fam['frac'])):
        try:
            with time_limit(timeout):
                out[key] = measure_ratio(copy.deepcopy(model), ratio, probe,
                                         x)
        except _Timeout as exc:
            out[key] = dict(ratio=float(ratio), status='crash',
                            reason=f'timeout: {exc}')
        gc.collect()
    bad = [m for m in (out['r2'], out['rf']) if m['status'] != 'exact']
    first = bad[0] if bad else out['r2']
    out.update(status=first['status'], reason=first['reason'],
               named=first.get('named'))
    if out['r2']['status'] != out['rf']['status']:
        out['status'] += f' (r={_r(first["ratio"])})'
    return out


def _r(ratio: float) -> str:
    from benchmarks.exactness import ratio_str
    return ratio_str(ratio)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
COLUMNS = [('family', 'family', ''), ('arch', 'arch', ''),
           ('status', 'status', ''), ('reason_cell', 'first reason', ''),
           ('r2_eval', 'IR eval r=2', '.1e'),
           ('r2_train', 'IR train r=2', '.1e'),
           ('train_floor', 'S fp32 floor (train)', '.1e'),
           ('r2_cbr', 'CBR r=2', '.1e'),
           ('frac_str', 'frac. r', ''), ('rf_eval', 'IR eval frac.', '.1e'),
           ('rf_train', 'IR train frac.', '.1e'),
           ('rf_cbr', 'CBR frac.', '.1e'), ('params_x', 'params ×', '.2f'),
           ('ir_s', 'IR s (r=2)', '.2f')]


def summarize(rows) -> dict:
    """Counts behind the summary line."""
    built = [r for r in rows if r['status'] != 'does not build']
    return dict(
        registered=len(rows), built=len(built),
        exact=sum(r['status'] == 'exact' for r in built),
        crashes=sum(r['status'].startswith('crash') for r in built),
        self_check_unnamed=sum(any(
            m and m['status'] == 'self-check failed' and not m.get('named')
            for m in (r['r2'], r['rf'])) for r in built),
        does_not_build=[r['family'] for r in rows
                        if r['status'] == 'does not build'])


def summary_line(s: dict) -> str:
    return (f'{s["exact"]} of {s["built"]} exact at both ratios, '
            f'{s["crashes"]} crashes, {s["self_check_unnamed"]} self-check '
            f'failures without a named module ({s["registered"]} registered '
            f'backbones, {len(s["does_not_build"])} do not build'
            + (': ' + ', '.join(s['does_not_build']) if s['does_not_build']
               else '') + ').')


def _cells(row: dict) -> dict:
    cell = dict(row, frac_str=_r(row['frac']),
                reason_cell=(row['reason'] or '').replace('|', '\\|')[:200])
    for key in ('r2', 'rf'):
        for m in ('eval', 'train', 'cbr'):
            cell[f'{key}_{m}'] = (row[key] or {}).get(m)
    cell['params_x'] = (row['r2'] or {}).get('params_x')
    cell['ir_s'] = (row['r2'] or {}).get('ir_s')
    return cell


def render(rows, info, seconds, settings) -> str:
    s = summarize(rows)
    lines = [
        '# IR coverage of the mmpretrain zoo', '',
        f'`python -m benchmarks.coverage`, {info["date"]}; {info["cpu"]}, '
        f'{info["cpu_count"]} cores, torch {info["torch"]} '
        f'({info["torch_threads"]} thread(s)); {seconds:.0f} s in all.', '',
        'Each registered backbone (its smallest arch, a small input) inside an '
        '`ImageClassifier` with random norm statistics and parameters; IR at '
        'ratio 2 and at a fractional ratio; deviations are '
        '`max|T_d(x) − S(x)| / max|S(x)|` of the logits on a batch other than '
        'IR\'s probe (train: same RNG seed before each forward); CBR: '
        '`extract_student(T_d)` vs S (outputs, eval). Exact: both ratios '
        f'≤ {TOL:g} in eval mode and CBR reproduces S (outputs and weights '
        f'≤ {TOL:g}). See `benchmarks/coverage.py`.', '',
        f'**{summary_line(s)}**', '',
        markdown_table([_cells(r) for r in rows], COLUMNS), '']
    return '\n'.join(lines)


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def sweep(names, timeout=300, device='cpu', log=print) -> list:
    rows = []
    for name in names:
        row = measure_family(name, timeout, device)
        rows.append(row)
        r2, rf = row['r2'] or {}, row['rf'] or {}
        log(f'{name:28s} {row["status"]:24s} r2 {r2.get("eval")} '
            f'({r2.get("ir_s") or 0:.1f} s) rf {rf.get("eval")}  '
            f'{(row["reason"] or "")[:120]}', flush=True)
    return rows


def run(names=None, out_dir=None, timeout=300, device='cpu', quick=False):
    """Measure ``names`` (default: every registered backbone) and, with
    ``out_dir``, write ``coverage.md`` / ``coverage.json`` there."""
    from mmgpd.utils.fileio import atomic_write_json, atomic_write_text
    registered = registered_backbones()
    names = list(names or registered)
    t0 = time.perf_counter()
    rows = sweep(names, timeout, device)
    seconds = time.perf_counter() - t0
    info = machine_info(device)
    settings = dict(quick=quick, only=names if names != registered else None,
                    tol=TOL, batch=2, timeout_s=timeout, probe_seed=1,
                    measure_seed=0, metric='max|a-b|/max|b| (mmgpd.reparam.'
                    'max_relative_deviation)', unlisted=sorted(
                        set(registered) - set(FAMILIES)))
    md = render(rows, info, seconds, settings)
    line = summary_line(summarize(rows))
    table = markdown_table([_cells(r) for r in rows], COLUMNS)
    result = dict(benchmark='coverage', rows=rows, summary=summarize(rows),
                  summary_line=line, table=f'{table}\n\n{line}',
                  markdown=md, machine=info, settings=settings,
                  seconds=seconds)
    if out_dir:
        result['md'] = atomic_write_text(osp.join(out_dir, 'coverage.md'), md)
        result['json'] = atomic_write_json(osp.join(out_dir, 'coverage.json'),
                                           result)
    print('\n' + md)
    return result


def main(argv=None) -> dict:
    parser = base_parser(__doc__.split('\n')[0])
    parser.add_argument('--only', help='comma-separated backbone classes')
    parser.add_argument('--out-dir', help='where coverage.md / .json go '
                        '(default: results/ for a full sweep, nowhere for '
                        '--quick / --only)')
    parser.add_argument('--timeout', type=float, default=300,
                        help='seconds per family and ratio (a crash beyond)')
    args = parser.parse_args(argv)
    names = args.only.split(',') if args.only else \
        list(QUICK) if args.quick else None
    out_dir = args.out_dir or (RESULTS_DIR if names is None else None)
    quiet_logs()
    with num_threads(args.threads):
        result = run(names, out_dir, args.timeout, args.device, args.quick)
    if args.out_json and osp.abspath(args.out_json) != result.get('json'):
        from mmgpd.utils.fileio import atomic_write_json
        atomic_write_json(args.out_json, result)
    return result


if __name__ == '__main__':
    main()
