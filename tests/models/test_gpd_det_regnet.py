"""Detection reuse with a non-ResNet backbone: mmdet's own RetinaNet-RegNetX-
800MF-FPN (``mmdet::regnet/retinanet_regnetx-800MF_fpn_1x_coco.py``) widened
exactly by IR (backbone with grouped 3x3 convs, FPN, head), at ratio 2 and at a
fractional ratio it takes (1.5: every stage width x 1.5 is a whole number of
16-channel groups), in eval and train mode; its GPD configs build.

The shapes config trains a few iterations through mmengine's Runner here;
through ``tools/train.py``, ``tools/extract_student.py`` and plain mmdet in
``tests/tools/test_train_det_regnet.py``.
"""
import copy
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmgpd.registry import MODELS
from mmgpd.reparam import (HardStudent, UnsupportedModuleError,
                           default_forward, extract_student, fold_to_student,
                           inverse_reparameterize, max_relative_deviation)
from mmgpd.testing import DETECTORS, build

from ..conftest import REPO_ROOT
from .test_gpd_det import NUM_CLASSES, _flat, _no_download, model_cfg

NAME = 'retinanet_regnetx_800mf_fpn'  # the zoo's name (mmgpd.testing)
MMDET_CFG = 'mmdet::regnet/retinanet_regnetx-800MF_fpn_1x_coco.py'
COCO = 'retinanet_regnetx-800MF_fpn_1x_coco'
SHAPES = 'retinanet_regnetx-800MF_fpn_shapes'
RATIOS = [2, 1.5]
TOL = 1e-5


@pytest.fixture(autouse=True, scope='module')
def _quiet_init_logs():
    """No weight-init tables (hundreds of lines per RegNet build)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


def _x(dtype=torch.float32):
    # not a multiple of 32 on one side: FPN upsampling with odd sizes
    return torch.randn(2, 3, 64, 96,
                       generator=torch.Generator().manual_seed(1)).to(dtype)


def _run(model, x, train):
    """Raw head outputs and FPN levels (no grad) in train / eval mode."""
    model.train(train)
    with torch.no_grad():
        out = default_forward(model, x)
        if isinstance(model, HardStudent):
            feat = model.call(lambda m, i: m.extract_feat(i), x)
        else:
            feat = model.extract_feat(x)
    return out, list(feat)


def _grouped_convs(model):
    return {n: m for n, m in model.backbone.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.groups > 1}


def _student(norm_eval, spread=0.0):
    student = build(NAME, spread=spread)
    student.backbone.norm_eval = norm_eval
    return student


def test_zoo_entry_is_mmdets_own_config():
    assert DETECTORS[NAME] == MMDET_CFG
    student = build(NAME)
    assert type(student.backbone).__name__ == 'RegNet'
    assert type(student.backbone).__module__.startswith('mmdet.')
    convs = _grouped_convs(student)
    assert len(convs) == 16  # one grouped 3x3 per block
    assert {m.in_channels // m.groups for m in convs.values()} == {16}
    assert list(student.neck.in_channels) == [64, 128, 288, 672]


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('norm_eval', [True, False],
                         ids=['frozen-bn', 'bn-batch-stats'])
@pytest.mark.parametrize('ratio', RATIOS)
def test_widened_regnet_detector_is_exact(ratio, norm_eval, train):
    """T_d's class scores and box deltas equal S's, its FPN levels folded back
    by the inverse replica map equal S's, and CBR (the HardStudent view and
    ``extract_student``) gives S back — fp32, library init, <= 1e-5.

    ``norm_eval=True`` is mmdet's COCO config (backbone BN frozen in train
    mode); ``False`` is the shapes config (batch statistics in train mode)."""
    student = _student(norm_eval)
    teacher = inverse_reparameterize(student, ratio)
    x = _x()
    s_out, s_feat = _run(student, x, train)
    t_out, t_feat = _run(teacher, x, train)
    s_flat, t_flat = _flat(s_out), _flat(t_out)
    assert len(s_out) == 2 and len(s_flat) == 10  # cls / reg maps, 5 levels
    assert [a.shape for a in t_flat] == [b.shape for b in s_flat]
    assert max_relative_deviation(t_flat, s_flat) <= TOL
    assert [t.shape[1] for t in t_feat] == [round(ratio * s.shape[1])
                                            for s in s_feat]
    folded = [fold_to_student(t, s.shape[1]) for t, s in zip(t_feat, s_feat)]
    assert max_relative_deviation(folded, s_feat) <= TOL
    view_out, view_feat = _run(HardStudent(teacher), x, train)
    assert max_relative_deviation(_flat(view_out), s_flat) <= TOL
    assert max_relative_deviation(view_feat, s_feat) <= TOL
    extracted = extract_student(teacher)
    assert type(extracted) is type(student)
    e_out, e_feat = _run(extracted, x, train)
    assert max_relative_deviation(_flat(e_out), s_flat) <= TOL
    assert max_relative_deviation(e_feat, s_feat) <= TOL


@pytest.mark.parametrize('ratio', RATIOS)
def test_grouped_convs_widen_by_whole_groups(ratio):
    """Every grouped conv of the RegNet widens in and out by ``ratio`` with
    whole groups; the head keeps its outputs and widens its inputs."""
    student = _student(True)
    teacher = inverse_reparameterize(student, ratio)
    s_convs, t_convs = _grouped_convs(student), _grouped_convs(teacher)
    assert set(t_convs) == set(s_convs)
    for name, s in s_convs.items():
        t = t_convs[name]
        assert (t.in_channels, t.out_channels) == (
            ratio * s.in_channels, ratio * s.out_channels), name
        assert t.in_channels % t.groups == 0 and t.weight.shape[1] == \
            t.in_channels // t.groups, name
    head_s, head_t = student.bbox_head, teacher.bbox_head
    assert head_t.retina_cls.weight.shape == (
        head_s.retina_cls.out_channels, ratio * 256, 3, 3)
    assert head_t.retina_reg.weight.shape == (36, ratio * 256, 3, 3)


@pytest.mark.parametrize('ratio', RATIOS)
def test_rules_exact_in_float64_with_random_affine(ratio):
    """The rules, not fp32 luck: random BN gamma / beta, branches, BN batch
    statistics in train mode (where the fp32 student is ~3e-5 from its own
    fp64 output at layer4's 2x3 maps), fp64, <= 1e-10; then eval mode with the
    running statistics that step moved.

    The HardStudent view runs in each mode too: CBR takes the student's BN
    statistics from the view's own passes (hard strategy), not from T_d's,
    so ``extract_student`` reproduces a student that saw the same batches."""
    student = _student(False, spread=0.5).double()
    x = _x(torch.float64)
    teacher = inverse_reparameterize(student, ratio, branches=True,
                                     example_inputs=x)
    view = HardStudent(teacher)
    for train in (True, False):
        s_out, s_feat = _run(student, x, train)
        t_out, t_feat = _run(teacher, x, train)
        assert max_relative_deviation(_flat(t_out), _flat(s_out)) <= 1e-10
        folded = [fold_to_student(t, s.shape[1])
                  for t, s in zip(t_feat, s_feat)]
        assert max_relative_deviation(folded, s_feat) <= 1e-10
        v_out, _ = _run(view, x, train)
        assert max_relative_deviation(_flat(v_out), _flat(s_out)) <= 1e-10
        e_out, _ = _run(extract_student(teacher), x, train)
        assert max_relative_deviation(_flat(e_out), _flat(s_out)) <= 1e-10


def test_ratio_that_splits_a_group_is_refused_by_name():
    """1.25: 288 x 1.25 = 360 is not a whole number of 16-channel groups of the
    replicated layout; IR names RegNet's grouped convs and builds nothing."""
    student = _student(True)
    with pytest.raises((ValueError, UnsupportedModuleError)) as info:
        inverse_reparameterize(student, 1.25)
    text = str(info.value)
    assert 'backbone.layer3.0.conv2' in text
    assert 'backbone.layer4.0.conv2' in text


# ------------------------------------------------------------ the GPD configs
def test_coco_config_wraps_mmdets_regnet_detector():
    from mmengine.hub import get_config
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{COCO}.py'))
    assert cfg.default_scope == 'mmdet'
    mmdet_cfg = get_config(MMDET_CFG)
    arch = cfg.model.architecture.to_dict()
    arch.pop('_scope_', None)  # the scope the config system records
    assert arch == mmdet_cfg.model.to_dict()
    assert cfg.model.architecture.backbone.init_cfg.checkpoint == \
        'open-mmlab://regnetx_800mf'
    teacher = cfg.model.teacher
    assert (teacher.backbone.type, teacher.backbone.arch) == ('RegNet',
                                                             'regnetx_3.2gf')
    assert list(teacher.neck.in_channels) == [96, 192, 432, 1008]
    assert teacher.bbox_head == mmdet_cfg.model.bbox_head
    assert cfg.model.teacher_ckpt.endswith(
        'retinanet_regnetx-3.2GF_fpn_1x_coco_20200520_163141-cb1509e8.pth')
    d = cfg.model.distiller
    assert (d.ratio, d.init) == (2, 'preserve')
    assert d.kd_loss.type == d.gap_loss.type == 'mmgpd.DenseKDLoss'
    assert cfg.optim_wrapper.optimizer == mmdet_cfg.optim_wrapper.optimizer
    assert cfg.val_evaluator.type == 'mmgpd.PerModelMetric'
    metric = cfg.val_evaluator.metric.to_dict()
    metric.pop('_scope_', None)  # the scope the config system records
    assert metric == mmdet_cfg.val_evaluator.to_dict()
    assert 'mmgpd.GPDHook' in [h['type'] for h in cfg.custom_hooks]


def test_shapes_config_is_the_same_detector_at_shapes_sizes():
    from mmengine.hub import get_config
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{SHAPES}.py'))
    mmdet_model = get_config(MMDET_CFG).model
    arch = cfg.model.architecture
    for key in ('type', 'arch', 'out_indices', 'style'):
        assert arch.backbone[key] == mmdet_model.backbone[key], key
    assert arch.data_preprocessor == mmdet_model.data_preprocessor
    assert arch.neck.in_channels == mmdet_model.neck.in_channels
    assert (arch.backbone.frozen_stages, arch.backbone.norm_eval,
            arch.backbone.init_cfg) == (-1, False, None)
    assert arch.bbox_head.num_classes == NUM_CLASSES
    assert cfg.train_dataloader.dataset.type == 'mmgpd.ShapesDataset'
    assert cfg.model.distiller.init == 'scratch'
    assert cfg.model.get('teacher') is None


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name', [COCO, SHAPES])
def test_gpd_dynamic_teacher_is_exact(name, train):
    """Through mmgpd.GPD built from the config (ratio 2, no noise): T_d's raw
    outputs and folded FPN levels equal the student view's."""
    cfg = model_cfg(name, noise=0.0)
    torch.manual_seed(0)
    model = MODELS.build(cfg).train(train)
    teacher, student = model.dynamic_teacher, model.student
    assert isinstance(student, HardStudent)
    assert type(teacher.backbone).__name__ == 'RegNet'
    x = _x()
    s_out, s_feat = _run(student, x, train)
    t_out, t_feat = _run(teacher, x, train)
    assert max_relative_deviation(_flat(t_out), _flat(s_out)) <= TOL
    folded = [fold_to_student(t, s.shape[1]) for t, s in zip(t_feat, s_feat)]
    assert [t.shape[1] for t in t_feat] == [2 * s.shape[1] for s in s_feat]
    assert max_relative_deviation(folded, s_feat) <= TOL


def test_static_regnet_teacher_loss_terms(tmp_path):
    """The COCO config with its RegNetX-3.2GF static teacher (random weights
    here): it passes the classes / priors / strides check, every term is
    there, the gap and T_d -> S feature terms are zero at init, and no
    gradient reaches T_s."""
    from mmdet.structures import DetDataSample
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{COCO}.py'))
    init_default_scope('mmdet')
    teacher_cfg = _no_download(copy.deepcopy(cfg.model.teacher))
    teacher_cfg.bbox_head.num_classes = NUM_CLASSES
    torch.manual_seed(0)
    teacher = MODELS.build(teacher_cfg)
    teacher.init_weights()
    ckpt = tmp_path / 'retinanet_regnetx_3.2gf.pth'
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    model = MODELS.build(model_cfg(COCO, str(ckpt), noise=0.0)).train()
    samples = []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                        batch_input_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0, 6.0, 40.0, 44.0]]),
            labels=torch.tensor([i % NUM_CLASSES]))
        samples.append(s)
    losses = model.loss(torch.randn(2, 3, 64, 64), samples)
    assert set(losses) >= {
        'loss_student_cls', 'loss_dynamic_teacher_cls', 'loss_gap',
        'loss_feat_dynamic_to_student', 'loss_kd_static_to_student',
        'loss_kd_static_to_dynamic_teacher', 'loss_feat_static_to_student'}
    assert abs(losses['loss_gap'].item()) < 1e-6
    assert losses['loss_feat_dynamic_to_student'].item() < 1e-8
    assert losses['loss_feat_static_to_student'].item() > 1e-2
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.dynamic_teacher.neck.lateral_convs[0].conv.weight.grad.abs(
    ).sum() > 0
    # frozen_stages=1 (mmdet's config): the stem gets no gradient
    assert model.dynamic_teacher.backbone.conv1.weight.grad is None


@pytest.mark.slow
def test_shapes_config_trains(tmp_path_factory):
    """GPD* RetinaNet-RegNetX on the generated shapes set: one short epoch
    (6 images), every GPD term logged, T_d's weights move, the student file
    is written."""
    from mmengine.runner import Runner

    from .test_gpd_det import shapes_run_cfg
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64')
    work = tmp_path_factory.mktemp('regnet_shapes')
    cfg = shapes_run_cfg(SHAPES, root, work, None)
    runner = Runner.from_cfg(cfg)
    before = copy.deepcopy(runner.model.dynamic_teacher.state_dict())
    runner.train()
    hub = runner.message_hub
    assert torch.isfinite(torch.tensor(hub.get_scalar('train/loss').current()))
    assert {'train/loss_student_cls', 'train/loss_dynamic_teacher_cls',
            'train/loss_gap', 'train/loss_feat_dynamic_to_student',
            'val/gpd/bbox_mAP_student'} <= set(hub.log_scalars)
    after = runner.model.dynamic_teacher.state_dict()
    key = 'backbone.layer1.0.conv2.weight'  # a grouped conv of the RegNet
    assert not torch.equal(before[key], after[key])
    assert (work / 'student_latest.pth').is_file()
