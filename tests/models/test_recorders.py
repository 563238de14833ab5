"""Feature taps (FeatureRecorder, task tap names, T_d folds) and the
static-teacher method wiring of GPDDistiller (probe-pass prepare, one instance
per KD target, loss keys, learning rate, sharpness at validation)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmgpd  # noqa: F401
from mmgpd.models.methods import DistillMethod
from mmgpd.models.recorders import FeatureRecorder, resolve_fold
from mmgpd.models.tasks import ClassificationTask
from mmgpd.registry import MODELS
from mmgpd.reparam import HardStudent, extract_student, fold_to_student

from ..conftest import REPO_ROOT

GPD_CFG = f'{REPO_ROOT}/configs/gpd/resnet_digits.py'
TEACHER_CFG = f'{REPO_ROOT}/configs/bench/_base_/digits_teacher_model.py'
STAGES = ('stage1', 'stage2', 'stage3', 'stage4')


@MODELS.register_module(name='_TapProbeMethod', force=True)
class _TapProbeMethod(DistillMethod):
    """A test method: a linear connector from the distilled model's pooled
    feature to T_s's, sized in ``prepare``; it keeps what it was given."""
    student_taps = ('stage4', 'pooled')
    teacher_taps = ('pooled', 'stage2')

    def prepare(self, student_shapes, teacher_shapes):
        super().prepare(student_shapes, teacher_shapes)
        self.check_taps(student_shapes, self.student_taps, 'student')
        self.shapes = (dict(student_shapes), dict(teacher_shapes))
        self.proj = nn.Linear(student_shapes['pooled'][1],
                              teacher_shapes['pooled'][1])

    def forward(self, student, teacher, gt=None):
        self.seen = ({k: v.shape for k, v in student.items()},
                     {k: v.shape for k, v in teacher.items()},
                     {k: v.requires_grad for k, v in teacher.items()})
        return dict(loss_probe=F.mse_loss(self.proj(student['pooled']),
                                          teacher['pooled']),
                    probe_norm=student['stage4'].detach().norm())


def _student(out_indices=(3, )):
    cfg = Config.fromfile(GPD_CFG)
    init_default_scope('mmpretrain')
    arch = copy.deepcopy(cfg.model.architecture)
    arch.backbone.out_indices = out_indices
    torch.manual_seed(0)
    return MODELS.build(arch).eval()


def _x(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_taps_equal_a_plain_forward():
    """Every stage and the pooled feature equal the tensors of a plain forward
    (a copy that outputs all four stages)."""
    model = _student()
    ref = _student(out_indices=(0, 1, 2, 3))
    ref.load_state_dict(model.state_dict())
    x = _x()
    paths = ClassificationTask.tap_paths(model, STAGES + ('pooled', 'logits'))
    assert paths == {'stage1': 'backbone.layer1', 'stage2': 'backbone.layer2',
                     'stage3': 'backbone.layer3', 'stage4': 'backbone.layer4',
                     'pooled': 'neck'}
    with torch.no_grad():
        out, losses = ClassificationTask.outputs(
            model, x, None, with_loss=False, taps=STAGES + ('pooled', ))
        feats = ref.backbone(x)
        pooled = ref.neck(feats)[-1]
        logits = ref(x, mode='tensor')
    assert losses is None
    for i, name in enumerate(STAGES):
        assert out[name].shape == (2, 16 * 2**i, 32 // 2**i, 32 // 2**i)
        assert torch.equal(out[name], feats[i]), name
    assert torch.equal(out['pooled'], pooled) and out['pooled'].shape == (2, 128)
    assert torch.equal(out['logits'], logits)
    # handles are gone: a later forward records nothing
    assert all(not m._forward_hooks for m in model.modules())


def test_record_is_a_clone_not_overwritten_in_place():
    """bn1 is followed by an in-place ReLU: the record keeps the negatives."""
    model = _student()
    with FeatureRecorder(model, dict(bn='backbone.bn1')) as rec:
        model(_x(), mode='tensor')
    assert (rec.taps['bn'] < 0).any()


def test_a_module_that_runs_twice_and_unknown_paths_are_errors():
    model = _student()
    with pytest.raises(KeyError, match='no module .backbone.nope'):
        FeatureRecorder(model, dict(x='backbone.nope'))
    shared = nn.ReLU()
    net = nn.Sequential(shared, shared)
    with pytest.raises(RuntimeError, match='ran twice'):
        with FeatureRecorder(net, {'r': '0'}):
            net(torch.randn(2, 3))
    with pytest.raises(KeyError, match=r'model.distiller.taps.*stage9'):
        ClassificationTask.tap_paths(model, ['stage9'])
    # an override names a module the task does not know
    assert ClassificationTask.tap_paths(
        model, ['stage9'], dict(stage9='backbone.layer4.1')) == \
        {'stage9': 'backbone.layer4.1'}


def _gpd(noise=0.0, **distiller):
    cfg = Config.fromfile(GPD_CFG)
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    model.data_preprocessor = cfg.data_preprocessor
    model.distiller.noise = noise
    model.distiller.update(distiller)
    return model


def test_taps_fire_under_the_hard_view_and_fold_with_the_planned_layout():
    torch.manual_seed(0)
    gpd = MODELS.build(_gpd()).eval()
    view, teacher = gpd.student, gpd.dynamic_teacher
    assert isinstance(view, HardStudent)
    x = _x()
    names = STAGES + ('pooled', )
    out_s, _ = ClassificationTask.outputs(view, x, None, False, names)
    # the view's taps are the extracted plain student's
    plain = extract_student(teacher).eval()
    with torch.no_grad():
        ref, _ = ClassificationTask.outputs(plain, x, None, False, names)
    for name in names:
        assert torch.allclose(out_s[name], ref[name], rtol=1e-5, atol=1e-6), name
    # ... and differentiable in T_d's parameters (hard strategy)
    out_s['stage2'].square().sum().backward()
    grad = teacher.backbone.conv1.weight.grad  # (residual bn2's start at 0)
    assert grad is not None and grad.abs().sum() > 0
    # T_d kept wide: twice the channels; folded: S's tensors (noise 0: exact)
    with torch.no_grad():
        out_t, _ = ClassificationTask.outputs(teacher, x, None, False, names)
    for name in names:
        assert out_t[name].shape[1] == 2 * out_s[name].shape[1]
        fold = resolve_fold(teacher, name, out_s[name], out_t[name],
                            ClassificationTask.tap_paths(view, [name]).get(name))
        assert fold.source.startswith('plan:'), (name, fold)
        assert torch.allclose(fold(out_t[name]), out_s[name].detach(),
                              rtol=1e-5, atol=1e-6), name
        # the replica map (fold_to_student) agrees where the plan is cyclic
        assert torch.allclose(fold_to_student(out_t[name], out_s[name].shape[1]),
                              fold(out_t[name]), rtol=1e-5, atol=1e-6)
    stage4_fold = resolve_fold(teacher, 'stage4', out_s['stage4'],
                               out_t['stage4'], 'backbone.layer4')
    assert stage4_fold.source.startswith('plan:backbone.layer4.')


def test_resolve_fold_refuses_a_tensor_that_is_not_an_expansion():
    torch.manual_seed(0)
    gpd = MODELS.build(_gpd())
    s = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match='not the expansion'):
        resolve_fold(gpd.dynamic_teacher, 'stage1', s, torch.randn(2, 32, 4, 4))
    fold = resolve_fold(gpd.dynamic_teacher, 'logits', s, s.clone())
    assert fold.dim is None and fold(s) is s


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """A random-init static teacher of another architecture (the digits
    benchmark's ResNet-34, 256 final channels)."""
    arch = Config.fromfile(TEACHER_CFG).bench_teacher_model
    init_default_scope('mmpretrain')
    torch.manual_seed(1)
    teacher = MODELS.build(copy.deepcopy(arch))
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path), arch


def _batch(n=4):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 255, (3, 32, 32), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    return dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


@pytest.mark.parametrize('fold', [False, True])
def test_method_per_target_prepared_before_training(teacher_ckpt, fold):
    from mmengine.optim import build_optim_wrapper
    path, arch = teacher_ckpt
    cfg = _gpd(noise=1e-6, method=dict(type='mmgpd._TapProbeMethod'),
               fold_dynamic_teacher_taps=fold)
    cfg.teacher, cfg.teacher_ckpt = copy.deepcopy(arch), path
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    assert set(model.distiller.methods) == {'student', 'dynamic_teacher'}
    s_shapes, t_shapes = model.distiller.methods['student'].shapes
    d_shapes, _ = model.distiller.methods['dynamic_teacher'].shapes
    assert s_shapes['pooled'][1] == 128 and s_shapes['logits'][1] == 10
    assert t_shapes['pooled'][1] == 256 and t_shapes['stage2'][1] == 64
    assert d_shapes['pooled'][1] == (128 if fold else 256)
    assert d_shapes['stage4'][1] == (128 if fold else 256)
    assert (set(model.distiller.tap_folds) == {'stage4', 'pooled'}) == fold
    # the connectors are parameters of the algorithm before any step
    names = {n for n, _ in model.named_parameters()}
    assert 'distiller.methods.student.proj.weight' in names
    assert 'distiller.methods.dynamic_teacher.proj.weight' in names
    # the probe pass left every model's mode and BN statistics alone
    assert model.student.training and model.dynamic_teacher.training
    assert not model.teacher.training
    # their own learning rate through paramwise_cfg
    optim = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1),
        paramwise_cfg=dict(custom_keys={'distiller.methods': dict(lr_mult=0.5)})))
    proj = model.distiller.methods['student'].proj.weight
    lrs = {g['lr'] for g in optim.optimizer.param_groups
           if any(p is proj for p in g['params'])}
    assert lrs == {0.05}
    log = model.train_step(_batch(), optim)
    assert {'loss_probe_to_student', 'loss_probe_to_dynamic_teacher',
            'probe_norm_to_student', 'loss_gap'} <= set(log)
    seen_s, seen_t, grads = model.distiller.methods['student'].seen
    assert seen_s['stage4'] == (4, 128, 4, 4) and seen_t['stage2'][1] == 64
    assert not any(grads.values())  # T_s's taps carry no gradient
    seen_d, _, _ = model.distiller.methods['dynamic_teacher'].seen
    assert seen_d['stage4'][1] == (128 if fold else 256)


def test_method_alone_and_errors(teacher_ckpt):
    path, arch = teacher_ckpt
    cfg = _gpd(method=dict(type='mmgpd._TapProbeMethod'), enable_dynamic_teacher=False,
               gap_loss=None)
    cfg.teacher, cfg.teacher_ckpt = copy.deepcopy(arch), path
    model = MODELS.build(cfg)
    assert set(model.distiller.methods) == {'student'}
    assert model.distiller.methods['student'].shapes[0]['pooled'][1] == 128
    no_teacher = _gpd(method=dict(type='mmgpd._TapProbeMethod'))
    with pytest.raises(ValueError, match='model.teacher'):
        MODELS.build(no_teacher)
    with pytest.raises(KeyError, match='model.distiller.method'):
        MODELS.build(_gpd(method=dict(type='NoSuchMethod')))
    bad_taps = _gpd(method=dict(type='mmgpd._TapProbeMethod'),
                    taps=dict(student=dict(stage4='backbone.nope')))
    bad_taps.teacher, bad_taps.teacher_ckpt = copy.deepcopy(arch), path
    with pytest.raises(KeyError, match='backbone.nope'):
        MODELS.build(bad_taps)
    # a list stacks methods: one ModuleList per target
    stacked = _gpd(method=[dict(type='mmgpd._TapProbeMethod')])
    stacked.teacher, stacked.teacher_ckpt = copy.deepcopy(arch), path
    model = MODELS.build(stacked)
    assert isinstance(model.distiller.methods['student'], nn.ModuleList)
    assert 'distiller.methods.dynamic_teacher.0.proj.weight' in dict(
        model.named_parameters())


def test_predict_attaches_sharpness(teacher_ckpt):
    path, arch = teacher_ckpt
    cfg = _gpd()
    cfg.teacher, cfg.teacher_ckpt = copy.deepcopy(arch), path
    model = MODELS.build(cfg).eval()
    out = model.val_step(_batch())
    data = model.data_preprocessor(_batch(), False)
    with torch.no_grad():
        logits = model.teacher(data['inputs'], mode='tensor')
    for name in ('student', 'dynamic_teacher', 'static_teacher'):
        assert out[0].get(f'sharpness_{name}').shape == (1, )
    expect = torch.logsumexp(logits, dim=1)
    got = torch.cat([s.sharpness_static_teacher for s in out])
    assert torch.allclose(got, expect, rtol=1e-6)


def test_gpd_hook_averages_sharpness_over_the_validation_set():
    from mmpretrain.structures import DataSample

    from mmgpd.engine.hooks.gpd_hook import GPDHook
    hook = GPDHook(metric_key='coco/bbox_mAP')  # sharpness even without counts
    hook.before_val_epoch(None)
    batches = [[1.0, 2.0], [4.5]]  # two batches: 2 samples, then 1
    for batch in batches:
        samples = []
        for v in batch:
            s = DataSample().set_gt_label(0)
            s.set_field(torch.tensor([v]), 'sharpness_student')
            s.set_field(torch.tensor([2 * v]), 'sharpness_static_teacher')
            samples.append(s)
        hook.after_val_iter(None, 0, None, samples)
    out = hook._mean_sharpness()
    assert out == {'gpd/sharpness_student': pytest.approx(7.5 / 3),
                   'gpd/sharpness_static_teacher': pytest.approx(15 / 3)}
