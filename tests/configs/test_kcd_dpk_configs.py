"""The KCD and DPK ImageNet configs (configs/methods/{kcd,dpk}[-gpd]_*): they parse, say
what they claim, and train (an epoch of a tiny ImageNet-layout folder) with
the models they name and nothing downloaded."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmgpd  # noqa: F401  (before Config.fromfile on mmpretrain:: bases)

from .test_gpd_configs import (CLASSES, _pretrained_init_cfgs, _random_teacher_ckpt,
                               _shrink, _strip_pretrained, tiny_imagenet)  # noqa: F401

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHOD_DIR = osp.join(REPO_ROOT, 'configs', 'methods')
PAIRS = {  # pair: (student backbone, teacher depth, S / T_s stage-4 widths)
    'resnet18': ('ResNet', 34, 512, 512),
    'mobilenet-v2': ('MobileNetV2', 50, 1280, 2048),
}
CONFIGS = [f'{m}{g}_{p}_in1k.py' for m in ('kcd', 'dpk') for g in ('', '-gpd')
           for p in PAIRS]


def load(name):
    return Config.fromfile(osp.join(METHOD_DIR, name))


def _parse(name):
    """``(method, stacked with GPD, pair)`` of a config file name."""
    head, pair = name[:-len('_in1k.py')].split('_', 1)
    return head.split('-')[0], head.endswith('-gpd'), pair


def test_every_config_is_present():
    found = sorted(osp.basename(p) for p in glob.glob(
        osp.join(METHOD_DIR, '*.py')) if osp.basename(p)[:3] in ('kcd', 'dpk'))
    assert found == sorted(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_says_what_it_claims(name):
    cfg = load(name)
    method, stacked, pair = _parse(name)
    student, depth, _, _ = PAIRS[pair]
    m = cfg.model
    assert m.type == 'mmgpd.GPD' and cfg.default_scope == 'mmpretrain'
    assert m.architecture.backbone.type == student
    assert m.teacher.backbone.type == 'ResNet' and m.teacher.backbone.depth == depth
    assert f'resnet{depth}_8xb32_in1k' in m.teacher_ckpt
    d = m.distiller
    assert d.method.type == f'mmgpd.{method.upper()}'
    assert tuple(d.method.taps) == ('stage4', )
    assert d.kd_loss is None  # the method is the static-teacher term
    assert d.get('enable_dynamic_teacher', True) == stacked
    assert tuple(d.kd_targets) == (('student', 'dynamic_teacher') if stacked
                                   else ('student', ))
    assert (d.gap_loss is not None) == stacked
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert 'mmgpd.GPDHook' in hooks
    assert ('mmgpd.KCDHook' in hooks) == (method == 'kcd')
    if method == 'kcd':
        assert d.get('fold_dynamic_teacher_taps', False) == stacked
    else:
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys[
            'distiller.methods'] == dict(lr_mult=0.1)
    assert cfg.train_dataloader.batch_size == 128  # >= 4 per GPU (unbiased CKA)


def _tiny_cfg(name, data_root, work_dir, batch_size):
    cfg = load(name)
    for key in ('train', 'val', 'test'):
        loader = cfg[f'{key}_dataloader']
        split = 'train' if key == 'train' else 'val'
        loader.dataset.update(data_root=data_root, split=split,
                              metainfo=dict(classes=CLASSES))
        _shrink(loader.dataset.pipeline)
        loader.update(batch_size=batch_size if key == 'train' else 2,
                      num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.model.teacher_ckpt = _random_teacher_ckpt(cfg.model.teacher,
                                                  work_dir / 'teacher.pth')
    _strip_pretrained(cfg.model)
    cfg.load_from = None
    cfg.resume = False
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    return cfg


# 5-20 s each on 2 cores: each method + GPD on the ResNet pair and alone on
# the MobileNetV2 pair (unequal widths: 1280 student vs 2048 teacher channels).
@pytest.mark.parametrize('name', [
    'kcd-gpd_resnet18_in1k.py', 'dpk-gpd_resnet18_in1k.py',
    'kcd_mobilenet-v2_in1k.py', 'dpk_mobilenet-v2_in1k.py'])
def test_config_trains_on_tiny_imagenet(name, tiny_imagenet, tmp_path):  # noqa: F811
    method, stacked, pair = _parse(name)
    _, _, s_width, t_width = PAIRS[pair]
    # DPK's unbiased minibatch CKA needs >= 4 images per rank: one batch of 4
    cfg = _tiny_cfg(name, tiny_imagenet, tmp_path, 4 if method == 'dpk' else 2)
    assert not _pretrained_init_cfgs(cfg.model)
    runner = Runner.from_cfg(cfg)
    runner.train()
    algorithm = runner.model
    targets = tuple(algorithm.distiller.methods)
    assert targets == (('student', 'dynamic_teacher') if stacked
                       else ('student', ))
    hub = runner.message_hub
    for target in targets:
        key = f'train/loss_{method}_to_{target}'
        assert torch.isfinite(torch.tensor(hub.get_scalar(key).current())), key
        m = algorithm.distiller.methods[target]
        if method == 'kcd':
            match = m.matches['stage4']
            # T_d folded: sized like S
            assert (match.student_channels, match.teacher_channels) == \
                (s_width, t_width)
            assert bool(match.solved)
            perm = match.perm
            assert int(perm.min()) >= 0 and len(set(perm.tolist())) == s_width
        else:
            width = s_width * (2 if target == 'dynamic_teacher' else 1)
            assert m.blocks['stage4'].embed_s.in_channels == width
            assert m.blocks['stage4'].embed_t.in_channels == t_width
            assert 0.0 <= float(m.blocks['stage4'].ratio) <= 0.95
    assert 'val/accuracy/top1' in hub.log_scalars
    assert osp.isfile(osp.join(cfg.work_dir, 'student_latest.pth'))
