"""The GPD configs in configs/gpd/: they parse, say what they claim, and the
ImageNet ones train (2 iterations) and validate end to end on a tiny
ImageNet-layout folder, with the models they name and nothing downloaded."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmgpd  # noqa: F401  (before Config.fromfile on mmpretrain:: bases)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'gpd')
ALL_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
IMAGENET_CONFIGS = [
    'resnet18_in1k.py', 'resnet18_in1k_scratch.py', 'resnet18_in1k_finetune.py',
    'mobilenet-v2_in1k.py', 'deit-tiny_in1k.py'
]
CLASSES = ('n01440764', 'n01443537')


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, name))


# --------------------------------------------------------------------- parsing
@pytest.mark.parametrize('path', ALL_CONFIGS, ids=osp.basename)
def test_config_parses_as_gpd(path):
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'mmgpd.GPD'
    assert cfg.model.distiller.type == 'mmgpd.GPDDistiller'
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmgpd.GPDHook' in [h['type'] for h in cfg.custom_hooks]


def test_every_imagenet_config_is_present():
    assert set(IMAGENET_CONFIGS) <= {osp.basename(p) for p in ALL_CONFIGS}


def _backbone(model_cfg):
    return model_cfg.backbone.type, model_cfg.backbone.get(
        'depth', model_cfg.backbone.get('arch'))


def test_resnet18_static_teacher_recipe():
    cfg = load('resnet18_in1k.py')
    m = cfg.model
    assert _backbone(m.architecture) == ('ResNet', 18)
    assert _backbone(m.teacher) == ('ResNet', 34)
    assert m.teacher_ckpt.endswith('resnet34_8xb32_in1k_20210831-f257d4e6.pth')
    d = m.distiller
    assert (d.ratio, d.init, d.strategy) == (2, 'scratch', 'hard')
    assert d.kd_loss == dict(type='mmgpd.DKDLoss', alpha=1.0, beta=0.5,
                             temperature=1.0)
    assert set(d.kd_targets) == {'student', 'dynamic_teacher'}
    assert d.gap_loss.type == 'mmgpd.SoftTargetCrossEntropy'
    assert (d.gap_loss.smoothing, d.gap_loss.loss_weight) == (0.1, 3.0)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == (
        'SGD', 0.1, 0.9, 1e-4)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5)
    assert cfg.param_scheduler.type == 'MultiStepLR'
    assert list(cfg.param_scheduler.milestones) == [30, 60, 90]
    assert cfg.param_scheduler.gamma == 0.1
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.train_dataloader.batch_size * 4 == 512
    assert cfg.auto_scale_lr.base_batch_size == 512
    ema = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert len(ema) == 1 and ema[0]['momentum'] == 4e-5


def test_resnet18_scratch_has_no_static_teacher():
    cfg = load('resnet18_in1k_scratch.py')
    assert cfg.model.get('teacher') is None
    assert cfg.model.get('teacher_ckpt') is None
    assert cfg.model.distiller.get('kd_loss') is None
    assert _backbone(cfg.model.architecture) == ('ResNet', 18)
    assert cfg.model.distiller.init == 'scratch'
    assert cfg.optim_wrapper.optimizer.lr == 0.1


def test_resnet18_finetune_recipe():
    cfg = load('resnet18_in1k_finetune.py')
    m = cfg.model
    assert m.get('teacher') is None and m.distiller.get('kd_loss') is None
    assert m.distiller.init == 'preserve'
    assert _pretrained_init_cfgs(m.architecture), 'no pretrained student'
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.train_cfg.max_epochs == 50


def test_mobilenet_v2_recipe():
    cfg = load('mobilenet-v2_in1k.py')
    m = cfg.model
    assert m.architecture.backbone.type == 'MobileNetV2'
    assert _backbone(m.teacher) == ('ResNet', 50)
    assert 'resnet50_8xb32_in1k' in m.teacher_ckpt
    assert m.distiller.ratio == 2
    assert (m.distiller.kd_loss.alpha, m.distiller.kd_loss.beta,
            m.distiller.kd_loss.temperature) == (1.0, 2.0, 1.0)


def test_deit_tiny_recipe():
    cfg = load('deit-tiny_in1k.py')
    m = cfg.model
    assert _backbone(m.architecture) == ('VisionTransformer', 'deit-tiny')
    assert m.get('teacher') is None and m.distiller.ratio == 2
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert 'CosineAnnealingLR' in [s['type'] for s in cfg.param_scheduler]


# ------------------------------------------------------- tiny end-to-end runs
@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory):
    """data_root/{train,val}/<wnid>/*.JPEG: real JPEGs, 2 classes with 2 train
    images (2 iterations at batch 2) and 1 val image (1 val iteration) each."""
    from PIL import Image
    root = tmp_path_factory.mktemp('imagenet')
    g = torch.Generator().manual_seed(0)
    for split in ('train', 'val'):
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(2 if split == 'train' else 1):
                img = torch.randint(0, 256, (80, 96, 3), generator=g,
                                    dtype=torch.uint8)
                img[..., c] = 255  # a class-dependent colour cast
                Image.fromarray(img.numpy()).save(
                    folder / f'{wnid}_{split}_{i}.JPEG', quality=90)
    return str(root)


def _pretrained_init_cfgs(cfg):
    """Every init_cfg of type Pretrained anywhere under ``cfg``."""
    found = []
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key == 'init_cfg':
                items = value if isinstance(value, (list, tuple)) else [value]
                found += [v for v in items
                          if isinstance(v, dict) and v.get('type') == 'Pretrained']
            else:
                found += _pretrained_init_cfgs(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            found += _pretrained_init_cfgs(value)
    return found


def _strip_pretrained(cfg):
    """Remove Pretrained init_cfgs (nothing may be downloaded)."""
    if isinstance(cfg, dict):
        for key in list(cfg):
            value = cfg[key]
            if key == 'init_cfg':
                if isinstance(value, (list, tuple)):
                    kept = [v for v in value
                            if not (isinstance(v, dict)
                                    and v.get('type') == 'Pretrained')]
                    cfg[key] = kept or None
                elif isinstance(value, dict) and value.get('type') == 'Pretrained':
                    cfg[key] = None
            else:
                _strip_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _strip_pretrained(value)


def _shrink(pipeline):
    """The config's own pipeline at 64 px (72 px short edge for testing)."""
    for t in pipeline:
        if t['type'] in ('RandomResizedCrop', 'EfficientNetRandomCrop'):
            t['scale'] = 64
        elif t['type'] == 'ResizeEdge':
            t['scale'] = 72
        elif t['type'] in ('CenterCrop', 'EfficientNetCenterCrop'):
            t['crop_size'] = 64
    return pipeline


def _random_teacher_ckpt(teacher_cfg, path):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    teacher = MODELS.build(copy.deepcopy(teacher_cfg))
    teacher.init_weights()
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path)


def _tiny_cfg(name, data_root, work_dir):
    cfg = load(name)
    for key in ('train', 'val', 'test'):
        loader = cfg[f'{key}_dataloader']
        split = 'train' if key == 'train' else 'val'
        loader.dataset.update(data_root=data_root, split=split,
                              metainfo=dict(classes=CLASSES))
        _shrink(loader.dataset.pipeline)
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    # 1 epoch of 4 images = 2 iterations, then a validation.
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    # Runner gives a scheduler with no `end` max_epochs (1 here): one that
    # begins later (the DeiT cosine after its warm-up) still has to build.
    schedulers = cfg.param_scheduler
    for s in schedulers if isinstance(schedulers, list) else [schedulers]:
        if s.get('begin', 0) >= 1 and 'end' not in s:
            s['end'] = s['begin'] + 1
    if cfg.model.get('teacher') is not None:
        cfg.model.teacher_ckpt = _random_teacher_ckpt(
            cfg.model.teacher, work_dir / 'teacher.pth')
    _strip_pretrained(cfg.model)
    cfg.load_from = None
    cfg.resume = False
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    return cfg


def _run_param(name, slow=False):
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(name, marks=marks, id=name)


# ~20-50 s each on 2 cores. The scratch run is resnet18_in1k without the static
# teacher (its config is checked above) and MobileNetV2's IR is covered by the
# reparam tests: both are `slow` (still run by `make test`).
@pytest.mark.parametrize('name', [
    _run_param('resnet18_in1k.py'),
    _run_param('resnet18_in1k_scratch.py', slow=True),
    _run_param('resnet18_in1k_finetune.py'),
    _run_param('mobilenet-v2_in1k.py', slow=True),
    _run_param('deit-tiny_in1k.py'),
])
def test_imagenet_config_trains_and_validates(name, tiny_imagenet, tmp_path):
    full = load(name)
    cfg = _tiny_cfg(name, tiny_imagenet, tmp_path)
    assert not _pretrained_init_cfgs(cfg.model)

    runner = Runner.from_cfg(cfg)
    runner.train()

    assert runner.iter == 2 and runner.epoch == 1
    hub = runner.message_hub
    # the models are the ones the config names
    algorithm = runner.model
    student_cfg = full.model.architecture
    template = algorithm.dynamic_teacher
    assert type(template.backbone).__name__ == student_cfg.backbone.type
    if full.model.get('teacher') is not None:
        assert type(algorithm.teacher.backbone).__name__ == \
            full.model.teacher.backbone.type
        assert getattr(algorithm.teacher.backbone, 'depth', None) == \
            full.model.teacher.backbone.get('depth')
    else:
        assert algorithm.teacher is None
    # training ran every GPD term
    losses = {k for k in hub.log_scalars if k.startswith('train/loss')}
    assert {'train/loss_student', 'train/loss_dynamic_teacher',
            'train/loss_gap'} <= losses
    if full.model.get('teacher') is not None:
        assert {'train/loss_kd_static_to_student',
                'train/loss_kd_static_to_dynamic_teacher'} <= losses
    for key in losses:
        assert torch.isfinite(torch.tensor(hub.get_scalar(key).current()))
    # validation: mmpretrain's accuracy and GPDHook's gap report
    for key in ('val/accuracy/top1', 'val/gpd/acc_student',
                'val/gpd/acc_dynamic_teacher', 'val/gpd/gap_dynamic'):
        assert key in hub.log_scalars, key
    if full.model.get('teacher') is not None:
        assert 'val/gpd/acc_static_teacher' in hub.log_scalars
    assert 0 <= hub.get_scalar('val/accuracy/top1').current() <= 100
    # the metric the real config's CheckpointHook keeps the best of exists
    assert f"val/{full.default_hooks.checkpoint.save_best}" in hub.log_scalars
    assert osp.isfile(osp.join(cfg.work_dir, 'student_latest.pth'))
