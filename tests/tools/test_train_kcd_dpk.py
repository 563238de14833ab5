"""KCD and DPK through tools/train.py on digits (alone and + GPD), KCD's online
refresh every k epochs, their state across --resume, and students that
tools/extract_student.py writes without them (the plain student's keys, loaded
by mmpretrain's get_model) for every digits config."""
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
QUICK = ['train_dataloader.dataset.indices=64', 'train_dataloader.batch_size=32',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
         'val_dataloader.dataset.indices=64']


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


def train(cfg, work, teacher_ckpt, *extra):
    import train as train_tool
    return train_tool.main([cfg, '--work-dir', str(work), '--cfg-options',
                            f'model.teacher_ckpt={teacher_ckpt}', *QUICK, *extra])


def _scalar(runner, key):
    return float(runner.message_hub.get_scalar(key).current())


@pytest.mark.parametrize('name', ['digits_kcd', 'digits_kcd_gpd', 'digits_dpk',
                                  'digits_dpk_gpd'])
def test_digits_config_trains_and_extracts(name, teacher_ckpt, plain_keys,
                                           tmp_path):
    """One training run per config, then its checkpoint through
    tools/extract_student.py (alone and + GPD alike)."""
    cfg = osp.join(BENCH, f'{name}.py')
    runner = train(cfg, tmp_path, teacher_ckpt)
    algorithm = runner.model
    method = name.split('_')[1]  # kcd / dpk
    stacked = name.endswith('_gpd')
    targets = ('student', 'dynamic_teacher') if stacked else ('student', )
    assert tuple(algorithm.distiller.methods) == targets
    assert (algorithm.dynamic_teacher is not None) == stacked
    keys = set(runner.message_hub.log_scalars)
    for target in targets:
        key = f'train/loss_{method}_to_{target}'
        assert key in keys and torch.isfinite(torch.tensor(_scalar(runner, key)))
    if stacked:
        assert {'train/loss_gap', 'train/loss_dynamic_teacher'} <= keys
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=False)
    state = ckpt['state_dict']
    if method == 'kcd':
        for target in targets:
            # solved before training (offline), a valid assignment, logged
            perm = state[f'distiller.methods.{target}.matches.stage4.perm']
            assert int(state[f'distiller.methods.{target}.matches.stage4.solved']) == 1
            assert perm.shape == (128, ) and int(perm.min()) >= 0
            assert len(set(perm.tolist())) == 128 and int(perm.max()) < 256
            corr = _scalar(runner, f'kcd/{target}/stage4/matched_corr')
            assert 0.0 < corr <= 1.0
        if stacked:  # T_d folded to the student's width: sized like S
            assert algorithm.distiller.fold_dynamic_teacher_taps
            assert algorithm.distiller.methods['dynamic_teacher'].matches[
                'stage4'].student_channels == 128
    else:
        for target in targets:
            ratio = state[f'distiller.methods.{target}.blocks.stage4.ratio']
            assert 0.0 <= float(ratio) <= 0.95
            assert float(ratio) == pytest.approx(
                _scalar(runner, f'train/dpk_ratio_stage4_to_{target}'))
        width = 256 if stacked else 128  # T_d's taps stay C' wide for DPK
        embed = algorithm.distiller.methods[targets[-1]].blocks['stage4'].embed_s
        assert embed.in_channels == width
        # the encoder-decoder has its own learning rate (0.1x, paramwise_cfg)
        groups = runner.optim_wrapper.optimizer.param_groups
        ids = {id(p) for p in algorithm.distiller.methods.parameters()}
        lrs = {g['lr'] for g in groups if any(id(p) in ids for p in g['params'])}
        other = {g['lr'] for g in groups
                 if not any(id(p) in ids for p in g['params'])}
        assert len(lrs) == 1 and len(other) == 1
        assert lrs.pop() == pytest.approx(0.1 * other.pop())
    # the written student is a plain classifier: no method state in it
    student = torch.load(tmp_path / 'student_latest.pth', weights_only=True)
    assert set(student['state_dict']) == plain_keys
    from mmpretrain.apis import get_model
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if not stacked:  # ...that plain mmpretrain loads (strict) and runs alike
        plain = get_model(BASELINE, pretrained=str(tmp_path / 'student_latest.pth'))
        with torch.no_grad():
            ref = algorithm.student.eval()(x, mode='tensor')
            got = plain.eval()(x, mode='tensor')
        assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)
    # the same run's checkpoint through tools/extract_student.py
    import extract_student

    from mmgpd.models.export import load_gpd
    out = tmp_path / 'student'
    result = extract_student.main([cfg, str(tmp_path / 'epoch_1.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and 'KCD' not in text and 'DPK' not in text
    extracted = torch.load(out / 'student.pth', weights_only=True)['state_dict']
    assert set(extracted) == plain_keys
    model = get_model(str(out / 'student.py'), pretrained=str(out / 'student.pth'))
    gpd, _ = load_gpd(Config.fromfile(cfg), str(tmp_path / 'epoch_1.pth'))
    assert len(gpd.distiller.methods) == 0
    with torch.no_grad():
        ref = gpd.student(x, mode='tensor')
        got = model.eval()(x, mode='tensor')
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)


def test_kcd_online_refresh_every_k_epochs(teacher_ckpt, tmp_path):
    """KCDHook(mode='online', interval=2) over 3 epochs solves before training
    and after epoch 2 only; with statistic='class_profile' (the hook hands the
    labels over) and stats_momentum (the averaged cost is checkpointed)."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'''
_base_ = [{osp.join(BENCH, 'digits_kcd.py')!r}]
model = dict(distiller=dict(method=dict(
    statistic='class_profile', num_classes=10, stats_momentum=0.5)))
custom_hooks = [dict(type='mmgpd.GPDHook'),
                dict(type='mmgpd.KCDHook', mode='online', interval=2, num_batches=2)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
''')
    runner = train(str(cfg), tmp_path / 'run', teacher_ckpt,
                   'train_cfg.max_epochs=3', 'train_cfg.val_interval=3')
    solves = runner.message_hub.get_scalar('kcd/student/stage4/matched_corr')
    assert len(solves.data[0]) == 2  # before training, after epoch 2
    key = 'distiller.methods.student.matches.stage4.corr_ema'
    ema = [torch.load(tmp_path / 'run' / f'epoch_{e}.pth',
                      weights_only=False)['state_dict'][key] for e in (1, 2, 3)]
    assert ema[0].shape == (256, 128) and bool(ema[0].any())
    assert not torch.equal(ema[1], ema[0])  # re-solved after epoch 2 ...
    assert torch.equal(ema[2], ema[1])  # ... and not after epochs 1 or 3
    perm = runner.model.distiller.methods['student'].matches['stage4'].perm
    assert len(set(perm.tolist())) == 128 and int(perm.min()) >= 0


def _stacked_cfg(path):
    """KCD (online, refreshed every epoch) and DPK (π EMA) stacked on the
    plain student: both methods' states cross the resume."""
    methods = Config.fromfile(osp.join(BENCH, '_base_', 'digits_methods.py'))
    dpk = dict(methods.bench_dpk.to_dict(), ratio_momentum=0.5)
    path.write_text(f'''
_base_ = [{osp.join(BENCH, 'digits_kcd.py')!r}]
model = dict(distiller=dict(method=[{{{{_base_.bench_kcd}}}}, {dpk!r}]))
optim_wrapper = dict(paramwise_cfg={{{{_base_.bench_dpk_lr}}}})
custom_hooks = [dict(type='mmgpd.GPDHook'),
                dict(type='mmgpd.KCDHook', mode='online', interval=1, num_batches=2)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
''')
    return str(path)


def test_resume_continues_kcd_and_dpk_exactly(teacher_ckpt, tmp_path):
    """2 epochs straight == --resume from the straight run's epoch-1
    checkpoint (same config: mmengine restores the LR schedule's end from the
    checkpoint, so max_epochs must not change across a resume): every weight
    and buffer (KCD's online assignment, DPK's π) equal."""
    cfg = _stacked_cfg(tmp_path / 'cfg.py')
    two = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2']
    straight = train(cfg, tmp_path / 'straight', teacher_ckpt, *two)
    resumed = train(cfg, tmp_path / 'resumed', teacher_ckpt, *two, '--resume',
                    str(tmp_path / 'straight' / 'epoch_1.pth'))
    assert resumed.epoch == 2
    # the refreshed assignment of epoch 1 came from the checkpoint: the
    # resumed run solved only once more (after epoch 2)
    assert len(resumed.message_hub.get_scalar(
        'kcd/student/stage4/matched_corr').data[0]) == 3
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert 'distiller.methods.student.0.matches.stage4.perm' in a
    assert 'distiller.methods.student.1.blocks.stage4.ratio' in a
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff
    # the online refresh ran after each epoch (3 solves: before, after 1, 2)
    assert len(straight.message_hub.get_scalar(
        'kcd/student/stage4/matched_corr').data[0]) == 3


def test_two_gloo_ranks_solve_the_same_assignment_and_ratio(teacher_ckpt,
                                                            tmp_path):
    """tools/dist_train.sh, 2 processes (each its own half of every batch):
    KCD's assignment (solved before training from all-reduced statistics) and
    DPK's π (from all-reduced HSIC terms) are identical on both ranks, and so
    is every trained parameter."""
    from .test_distributed import dist_train, free_port
    methods = Config.fromfile(osp.join(BENCH, '_base_', 'digits_methods.py'))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'''
_base_ = [{osp.join(BENCH, 'digits_kcd.py')!r}]
custom_imports = dict(imports=['tests.tools.method_dist_helpers'],
                      allow_failed_imports=False)
model = dict(teacher_ckpt={teacher_ckpt!r},
             distiller=dict(method=[{{{{_base_.bench_kcd}}}},
                                    {methods.bench_dpk.to_dict()!r}]))
optim_wrapper = dict(paramwise_cfg={{{{_base_.bench_dpk_lr}}}})
custom_hooks = [dict(type='mmgpd.GPDHook'),
                dict(type='mmgpd.KCDHook', mode='offline', num_batches=2),
                dict(type='DumpMethodState')]
train_dataloader = dict(batch_size=16, dataset=dict(indices=64))
val_dataloader = dict(dataset=dict(indices=32))
train_cfg = dict(max_epochs=1, val_interval=1)
randomness = dict(seed=0)
''')
    dist_train(str(cfg), tmp_path / 'ddp', 2, PORT=free_port())
    r0 = torch.load(tmp_path / 'ddp' / 'methods_rank0.pth')
    r1 = torch.load(tmp_path / 'ddp' / 'methods_rank1.pth')
    assert r0['state'].keys() == r1['state'].keys()
    for k in r0['state']:
        assert torch.equal(r0['state'][k], r1['state'][k]), k
    perm = r0['state']['student.0.matches.stage4.perm']
    assert len(set(perm.tolist())) == 128
    assert len(r0['ratios']) == 2 and r0['ratios'] == r1['ratios']
