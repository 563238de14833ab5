"""ReviewKD and PESF-KD through tools/train.py on digits (alone and + GPD):
loss terms, their own learning rate, sharpness logged at validation, exact
--resume of their state, and students that GPDHook and tools/extract_student.py
write as plain mmpretrain checkpoints (the keys of the plain student, nothing
of the methods) which mmpretrain.apis.get_model loads."""
import copy
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
BENCH = osp.join(REPO_ROOT, 'configs', 'bench')
TEACHER = osp.join(BENCH, '_base_', 'digits_teacher_model.py')
BASELINE = osp.join(REPO_ROOT, 'configs', 'baselines', 'resnet_digits.py')
QUICK = ['train_dataloader.dataset.indices=32', 'train_dataloader.batch_size=16',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
         'val_dataloader.dataset.indices=32', 'val_dataloader.batch_size=16']
# the methods' lr_mult: PESF-KD's recipe value; ReviewKD's recipe trains its
# ABFs at the student's lr (1.0, which a missing group would give too), so its
# runs here set 0.5 (with_lr_mult)
LR_MULT = {'reviewkd': 0.5, 'pesf': 0.1}


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """A (random-init) checkpoint of the digits static teacher."""
    from mmgpd.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    teacher = MODELS.build(copy.deepcopy(Config.fromfile(TEACHER)
                                         .bench_teacher_model))
    teacher.init_weights()
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path)


@pytest.fixture(scope='module')
def plain_keys():
    """The state-dict keys of the plain digits student."""
    from mmgpd.registry import MODELS
    init_default_scope('mmpretrain')
    return set(MODELS.build(copy.deepcopy(Config.fromfile(BASELINE).model))
               .state_dict())


def with_lr_mult(cfg, lr_mult, tmp_path):
    """``cfg`` with the methods' ``lr_mult`` set: a child config (the key
    'distiller.methods' has a dot, which --cfg-options cannot address)."""
    path = tmp_path / osp.basename(cfg)
    path.write_text(f'_base_ = [{cfg!r}]\n'
                    'optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'
                    f"'distiller.methods': dict(lr_mult={lr_mult!r})}}))\n")
    return str(path)


def train(cfg, work, teacher_ckpt, *extra):
    import train as train_tool
    torch.set_num_threads(1)
    return train_tool.main([cfg, '--work-dir', str(work), '--cfg-options',
                            f'model.teacher_ckpt={teacher_ckpt}', *QUICK, *extra])


@pytest.mark.parametrize('name', ['digits_reviewkd', 'digits_reviewkd_gpd',
                                  'digits_pesf', 'digits_pesf_gpd'])
def test_trains_and_extracts_a_plain_student(name, teacher_ckpt, plain_keys,
                                             tmp_path):
    import extract_student
    from mmpretrain.apis import get_model
    cfg = osp.join(BENCH, f'{name}.py')
    method = name.split('_')[1]
    if method == 'reviewkd':
        cfg = with_lr_mult(cfg, LR_MULT[method], tmp_path)
    runner = train(cfg, tmp_path / 'run', teacher_ckpt)
    algorithm = runner.model
    stacked = name.endswith('_gpd')
    targets = ('student', 'dynamic_teacher') if stacked else ('student', )
    assert tuple(algorithm.distiller.methods) == targets
    hub = runner.message_hub
    term = 'reviewkd' if method == 'reviewkd' else 'pesf_kd'
    for target in targets:
        value = hub.get_scalar(f'train/loss_{term}_to_{target}').current()
        assert torch.isfinite(torch.tensor(float(value)))
    # the methods' parameters: their own learning rate (paramwise_cfg)
    ids = {id(p) for p in algorithm.distiller.methods.parameters()}
    groups = runner.optim_wrapper.optimizer.param_groups
    lrs = {g['lr'] for g in groups if any(id(p) in ids for p in g['params'])}
    other = {g['lr'] for g in groups if not any(id(p) in ids for p in g['params'])}
    assert len(lrs) == 1 and len(other) == 1
    assert lrs.pop() == pytest.approx(LR_MULT[method] * other.pop())
    # checkpointed with the run ...
    state = torch.load(tmp_path / 'run' / 'epoch_1.pth', weights_only=False)[
        'state_dict']
    for target in targets:
        assert any(k.startswith(f'distiller.methods.{target}.') for k in state)
    # ... never in the students: GPDHook's file and extract_student's
    student = torch.load(tmp_path / 'run' / 'student_latest.pth',
                         weights_only=True)['state_dict']
    assert set(student) == plain_keys
    out = tmp_path / 'student'
    result = extract_student.main([cfg, str(tmp_path / 'run' / 'epoch_1.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    extracted = torch.load(out / 'student.pth', weights_only=True)['state_dict']
    assert set(extracted) == plain_keys
    plain = get_model(str(out / 'student.py'), pretrained=str(out / 'student.pth'))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = algorithm.student.eval()(x, mode='tensor')
        got = plain.eval()(x, mode='tensor')
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)
    if method == 'pesf':  # the sharpness of every model, at validation
        names = ['student', 'static_teacher', 'adapted_static_teacher']
        if stacked:
            names += ['dynamic_teacher',
                      'adapted_static_teacher_to_dynamic_teacher']
        for n in names:
            value = hub.get_scalar(f'val/gpd/sharpness_{n}').current()
            assert torch.isfinite(torch.tensor(float(value))), n


def assert_same(a, b, where=''):
    """``a`` and ``b`` (nested dicts / lists of tensors and numbers) equal
    exactly."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


@pytest.mark.parametrize('name,extra', [
    ('digits_reviewkd_gpd', ['model.distiller.method.warmup_iters=5']),
    ('digits_pesf', []),
], ids=['digits_reviewkd_gpd', 'digits_pesf'])
def test_resume_is_exact(name, extra, teacher_ckpt, tmp_path):
    """Two epochs straight and --resume from the first epoch's checkpoint give
    the same weights, optimizer state and lr schedule: ReviewKD's connectors,
    their BN statistics and its warm-up counter (+ GPD), PESF-KD's adapter
    and its momentum (alone: no dynamic teacher)."""
    cfg = osp.join(BENCH, f'{name}.py')
    extra = [*extra, 'train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=1',
             'default_hooks.checkpoint.max_keep_ckpts=-1']
    runner = train(cfg, tmp_path / 'a', teacher_ckpt, *extra)
    train(cfg, tmp_path / 'b', teacher_ckpt, *extra, '--resume',
          str(tmp_path / 'a' / 'epoch_1.pth'))
    # b trained the second epoch only
    assert not (tmp_path / 'b' / 'epoch_1.pth').exists()
    a = torch.load(tmp_path / 'a' / 'epoch_2.pth', weights_only=False)
    b = torch.load(tmp_path / 'b' / 'epoch_2.pth', weights_only=False)
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        assert_same(a[key], b[key], key)
    state = a['state_dict']
    if name == 'digits_reviewkd_gpd':
        assert int(state['distiller.methods.student.iter']) == 4  # 2 x 2 iterations
        assert int(state['distiller.methods.dynamic_teacher.iter']) == 4
    else:  # the zero-initialised adapter has trained
        assert state['distiller.methods.student.adapter.mlp.2.weight'].abs().sum() > 0
    # the optimizer state compared above holds the methods' parameters
    index = {id(p): i for i, p in enumerate(
        p for g in runner.optim_wrapper.optimizer.param_groups for p in g['params'])}
    methods = [index[id(p)] for p in runner.model.distiller.methods.parameters()]
    assert methods and all(
        'momentum_buffer' in a['optimizer']['state'][i] for i in methods)
