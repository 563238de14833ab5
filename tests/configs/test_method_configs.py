"""The ImageNet ReviewKD / PESF-KD configs in configs/methods/: alone and + GPD
they say what they claim (the papers' weights, the GPD paper's protocol, the
methods' own lr), and train + validate end to end on a tiny ImageNet-layout
folder with connectors sized for each model (nothing downloaded)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmgpd  # noqa: F401  (before Config.fromfile on mmpretrain:: bases)

from .test_gpd_configs import (CLASSES, _pretrained_init_cfgs,  # noqa: F401
                               _random_teacher_ckpt, _shrink, _strip_pretrained,
                               tiny_imagenet)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHOD_DIR = osp.join(REPO_ROOT, 'configs', 'methods')
PAIRS = {'resnet18': (('ResNet', 18), ('ResNet', 34)),
         'mobilenet-v2': (('MobileNetV2', None), ('ResNet', 50))}
METHODS = {'reviewkd': 'mmgpd.ReviewKD', 'pesf': 'mmgpd.PESFKD'}
NAMES = [f'{m}{g}_{p}_in1k.py' for m in METHODS for g in ('', '-gpd')
         for p in PAIRS]


def load(name):
    return Config.fromfile(osp.join(METHOD_DIR, name))


def test_every_method_config_is_present():
    import glob
    assert set(NAMES) <= {osp.basename(p) for p in glob.glob(
        osp.join(METHOD_DIR, '*.py'))}


@pytest.mark.parametrize('name', NAMES)
def test_method_config_recipe(name):
    cfg = load(name)
    method_name, pair = name.split('_')[0], name.split('_')[1]
    method, stacked = method_name.split('-')[0], method_name.endswith('-gpd')
    m = cfg.model
    assert m.type == 'mmgpd.GPD' and cfg.default_scope == 'mmpretrain'
    student, teacher = PAIRS[pair]
    assert m.architecture.backbone.type == student[0]
    assert (m.teacher.backbone.type, m.teacher.backbone.depth) == teacher
    d = m.distiller
    assert d.get('kd_loss') is None  # the method replaces DKD
    assert d.method.type == METHODS[method]
    assert d.get('enable_dynamic_teacher', True) == stacked
    assert tuple(d.kd_targets) == (('student', 'dynamic_teacher') if stacked
                                   else ('student', ))
    assert (d.get('gap_loss') is not None) == stacked
    if method == 'reviewkd':  # the released recipes' weights
        assert d.method.loss_weight == (1.0 if pair == 'resnet18' else 8.0)
        assert d.method.get('mid_channels') == (None if pair == 'resnet18'
                                                else 256)
    else:
        assert (d.method.temperature, d.method.target) == (4.0, 'adapted')
    lr_mult = cfg.optim_wrapper.paramwise_cfg.custom_keys[
        'distiller.methods'].lr_mult
    assert lr_mult == (1.0 if method == 'reviewkd' else 0.1)
    # the GPD paper's 100-epoch protocol, alone and + GPD alike
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == (
        'SGD', 0.1, 0.9, 1e-4)
    assert cfg.train_cfg.max_epochs == 100
    assert list(cfg.param_scheduler.milestones) == [30, 60, 90]
    assert cfg.train_dataloader.batch_size * 4 == 512
    assert 'mmgpd.GPDHook' in [h['type'] for h in cfg.custom_hooks]


def _tiny(name, data_root, work_dir):
    cfg = load(name)
    for key in ('train', 'val', 'test'):
        loader = cfg[f'{key}_dataloader']
        loader.dataset.update(data_root=data_root,
                              split='train' if key == 'train' else 'val',
                              metainfo=dict(classes=CLASSES))
        _shrink(loader.dataset.pipeline)
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.model.teacher_ckpt = _random_teacher_ckpt(cfg.model.teacher,
                                                  work_dir / 'teacher.pth')
    _strip_pretrained(cfg.model)
    cfg.load_from, cfg.resume, cfg.work_dir = None, False, str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1,
                                        save_last=False)
    return cfg


# ~5 s each on 2 cores once the first (which pays the imports) has run.
@pytest.mark.parametrize('name', [
    'reviewkd-gpd_resnet18_in1k.py', 'pesf_resnet18_in1k.py',
    'reviewkd-gpd_mobilenet-v2_in1k.py', 'pesf-gpd_mobilenet-v2_in1k.py'
])
def test_method_config_trains_with_connectors_sized_for_each_model(
        name, tiny_imagenet, tmp_path):
    torch.set_num_threads(1)
    cfg = _tiny(name, tiny_imagenet, tmp_path)
    assert not _pretrained_init_cfgs(cfg.model)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    methods = runner.model.distiller.methods
    stacked = '-gpd' in name
    assert tuple(methods) == (('student', 'dynamic_teacher') if stacked
                              else ('student', ))
    hub = runner.message_hub
    if name.startswith('reviewkd'):
        if 'resnet18' in name:
            s_in, t_out = [64, 128, 256, 512, 512], [64, 128, 256, 512, 512]
        else:
            s_in, t_out = [24, 32, 96, 1280, 1280], [256, 512, 1024, 2048, 2048]
        got = {k: [a.conv1[0].in_channels for a in m.abfs]
               for k, m in methods.items()}
        assert got['student'] == s_in
        if stacked:  # T_d's taps stay 2x wide
            assert got['dynamic_teacher'] == [2 * c for c in s_in]
        for m in methods.values():
            assert [a.conv2[0].out_channels for a in m.abfs] == t_out
        key = 'train/loss_reviewkd_to_student'
    else:
        width = 512 if 'resnet18' in name else 2048
        for m in methods.values():
            assert m.adapter.proj.in_features == width
            assert m.adapter.mlp[2].out_features == 1000
        key = 'train/loss_pesf_kd_to_student'
        assert 'val/gpd/sharpness_adapted_static_teacher' in hub.log_scalars
    assert torch.isfinite(torch.tensor(hub.get_scalar(key).current()))
    assert osp.isfile(osp.join(cfg.work_dir, 'student_latest.pth'))
