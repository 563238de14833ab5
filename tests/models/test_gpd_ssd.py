"""GPD on a softmax dense head (mmdet's SSDHead + SSDNeck on a ResNet-18,
configs/gpd_det/ssd_r18_shapes.py): the softmax dense KD (hand-checked on
small tensors), the per-anchor class maps the task gives, exact IR in eval
and train mode, the gap term on a built GPD, and a short training run through
tools/train.py whose extracted student reproduces the run's mAP in mmdet's
test loop."""
import copy
import math
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmgpd.models.losses import DenseKDLoss, SoftmaxDenseKDLoss
from mmgpd.models.tasks.detection import _class_maps
from mmgpd.registry import MODELS
from mmgpd.reparam import HardStudent, fold_to_student, max_relative_deviation

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
NAME = 'ssd_r18_shapes'
CLASSES = ('square', 'circle', 'triangle', 'cross')


def _kd_by_hand(student, teacher, t):
    """Loops over levels, images, anchors and locations: KL over classes."""
    total, count = 0.0, 0
    for s, q in zip(student, teacher):
        n, k1, a, h, w = s.shape
        for i in range(n):
            for j in range(a):
                for y in range(h):
                    for x in range(w):
                        zs = [float(s[i, c, j, y, x]) / t for c in range(k1)]
                        zq = [float(q[i, c, j, y, x]) / t for c in range(k1)]
                        ls = math.log(sum(math.exp(z) for z in zs))
                        lq = math.log(sum(math.exp(z) for z in zq))
                        for c in range(k1):
                            p = math.exp(zq[c] - lq)
                            total += p * ((zq[c] - lq) - (zs[c] - ls))
                        count += 1
    return t * t * total / count


@pytest.mark.parametrize('t', [1.0, 2.5])
def test_softmax_dense_kd_by_hand(t):
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 2, 3, 2), (2, 3, 3, 1, 2)]  # (N, K + 1, A, H, W)
    student = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    teacher = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    loss = SoftmaxDenseKDLoss(temperature=t, loss_weight=0.5)
    value = loss(student, teacher)
    assert float(value) == pytest.approx(
        0.5 * _kd_by_hand(student, teacher, t), rel=1e-10)
    assert float(value) > 0
    # zero on equal maps; the teacher side gets no gradient
    assert float(loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-12)
    student = [s.requires_grad_() for s in student]
    teacher = [q.requires_grad_() for q in teacher]
    loss(student, teacher).backward()
    assert all(q.grad is None for q in teacher)
    assert all(s.grad.abs().sum() > 0 for s in student)
    # a class-wise shift of the logits changes nothing (softmax over dim 1)
    shifted = [s.detach() + 3.0 for s in student]
    assert float(loss(shifted, teacher)) == pytest.approx(float(value),
                                                         rel=1e-10)


def test_dense_losses_refuse_the_other_layout():
    four = [torch.zeros(1, 10, 2, 2)]
    five = [torch.zeros(1, 5, 2, 2, 2)]
    with pytest.raises(ValueError, match='SoftmaxDenseKDLoss'):
        DenseKDLoss()(five, five)
    with pytest.raises(ValueError, match='DenseKDLoss'):
        SoftmaxDenseKDLoss()(four, four)
    with pytest.raises(ValueError, match='temperature'):
        SoftmaxDenseKDLoss(temperature=0)


def _model_cfg(**distiller):
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{NAME}.py'))
    init_default_scope(cfg.default_scope)
    model = copy.deepcopy(cfg.model)
    model.distiller.update(distiller)
    return model


def test_class_maps_are_ssd_heads_per_anchor_distributions():
    """:func:`_class_maps` views the head's (N, A·(K+1), H, W) maps as
    (N, K+1, A, H, W): row (n, a, h, w) is what SSDHead.loss_by_feat
    scores for that anchor (its permute + reshape)."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as MMDET_MODELS
    cfg = _model_cfg().architecture
    det = MMDET_MODELS.build(cfg)
    head = det.bbox_head
    assert head.use_sigmoid_cls is False and head.cls_out_channels == 5
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cls_scores, _ = det(x, mode='tensor')
    maps = _class_maps(head, cls_scores)
    for raw, ours, a in zip(cls_scores, maps, head.num_base_priors):
        n, _, h, w = raw.shape
        assert ours.shape == (n, 5, a, h, w)
        theirs = raw.permute(0, 2, 3, 1).reshape(n, h, w, a, 5)
        torch.testing.assert_close(ours.permute(0, 3, 4, 2, 1), theirs,
                                   rtol=0, atol=0)
    # the anchors of the head's levels: 4, 6, 6, 4
    assert list(head.num_base_priors) == [4, 6, 6, 4]


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('ratio', [2, 1.5])
def test_dynamic_teacher_of_ssd_is_exact(train, ratio):
    """T_d's class scores and box deltas equal S's at init, its neck levels
    folded back equal S's (no L2Norm: a plain conv neck)."""
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(noise=0.0, ratio=ratio)).train(train)
    teacher, student = model.dynamic_teacher, model.student
    assert isinstance(student, HardStudent)
    s_neck = [m.out_channels for m in student.template.neck.extra_layers
              .modules() if isinstance(m, torch.nn.Conv2d)]
    t_neck = [m.out_channels for m in teacher.neck.extra_layers.modules()
              if isinstance(m, torch.nn.Conv2d)]
    assert t_neck == [int(ratio * c) for c in s_neck]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        s_out = student(x, mode='tensor')
        t_out = teacher(x, mode='tensor')
        s_feat = student.call(lambda m, i: m.extract_feat(i), x)
        t_feat = teacher.extract_feat(x)
    s_flat = [t for level in s_out for t in level]
    t_flat = [t for level in t_out for t in level]
    assert [a.shape for a in s_flat] == [b.shape for b in t_flat]
    tol = 1e-5 if not train else 5e-5  # train-mode BN: fp32 batch statistics
    assert max_relative_deviation(t_flat, s_flat) <= tol
    folded = [fold_to_student(t, s.shape[1]) for t, s in zip(t_feat, s_feat)]
    assert max_relative_deviation(folded, list(s_feat)) <= tol


def _batch(n=2, size=64):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(2)
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            pad_shape=(size, size), batch_input_shape=(size, size),
            scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0 + i, 6.0, 30.0, 28.0],
                                 [34.0, 30.0, 60.0, 62.0 - i]]),
            labels=torch.tensor([i, 3]))
        samples.append(s)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g,
                            dtype=torch.uint8) for _ in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def test_gap_term_is_the_softmax_kd_of_the_raw_maps():
    """``loss_gap`` of a built GPD (T_d perturbed, so the term is not 0) is
    the softmax KD over the K + 1 classes of each anchor of the two models'
    raw class maps (reshaped by hand); zero at init."""
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(noise=0.0)).train()
    data = model.data_preprocessor(_batch(), True)
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert float(losses['loss_gap']) == pytest.approx(0.0, abs=1e-6)
    assert {'loss_student_cls', 'loss_dynamic_teacher_cls',
            'loss_feat_dynamic_to_student'} <= set(losses)
    with torch.no_grad():  # T_d's class convs move: T_d != S
        for conv in model.dynamic_teacher.bbox_head.cls_convs:
            conv[-1].weight.add_(0.05 * torch.randn_like(conv[-1].weight))
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    with torch.no_grad():
        s_raw, _ = model.student(data['inputs'], mode='tensor')
        t_raw, _ = model.dynamic_teacher(data['inputs'], mode='tensor')

    def by_hand(raw):
        out = []
        for x in raw:
            n, c, h, w = x.shape
            a = c // 5
            y = torch.empty(n, 5, a, h, w, dtype=torch.float64)
            for j in range(a):
                for k in range(5):
                    y[:, k, j] = x[:, j * 5 + k].double()
            out.append(y)
        return out
    expected = _kd_by_hand(by_hand(s_raw), by_hand(t_raw), 1.0)
    assert expected > 1e-4
    assert float(losses['loss_gap']) == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- #
# tools/train.py, extraction, mmdet's test loop
# --------------------------------------------------------------------------- #
def test_gpd_ssd_trains_and_its_extracted_student_reproduces_the_run(
        tmp_path_factory, tmp_path):
    import extract_student
    import train
    from mmengine.runner import Runner
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64_ssd')
    work = tmp_path_factory.mktemp('ssd_run')
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{NAME}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = copy.deepcopy(cfg[key])
        loader.batch_size = 2
        loader.dataset.update(data_root=root, num_train=6, num_val=2,
                              img_size=64)
        cfg[key] = loader
    cfg.val_evaluator.metric.ann_file = osp.join(
        root, 'annotations/instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.model.architecture.test_cfg.score_thr = 0.0  # detections from step 1
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_interval=2)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2)
    cfg.work_dir = str(work)
    cfg_path = str(work / 'gpd.py')
    cfg.dump(cfg_path)
    runner = train.main([cfg_path])
    hub = runner.message_hub
    keys = set(hub.log_scalars)
    for term in ('loss_student_cls', 'loss_dynamic_teacher_cls',
                 'loss_student_bbox', 'loss_gap',
                 'loss_feat_dynamic_to_student'):
        assert f'train/{term}' in keys, term
    assert torch.isfinite(torch.tensor(hub.get_scalar('train/loss').current()))
    run = {k[len('val/'):]: v.current() for k, v in hub.log_scalars.items()
           if k.startswith('val/')}
    assert run['coco/bbox_mAP_50'] > 0

    out = tmp_path / 'student'
    result = extract_student.main([cfg_path, str(work / 'epoch_2.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and "type='SSDHead'" in text
    plain = Config.fromfile(str(out / 'student.py'))
    plain.work_dir = str(tmp_path / 'test')
    plain.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(plain).test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert metrics[key] == pytest.approx(run[key], abs=1e-6)
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        run['gpd/bbox_mAP_student'], abs=1e-6)
