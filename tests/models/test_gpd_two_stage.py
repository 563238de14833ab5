"""IR on two-stage mmdet detectors (issue 16): Faster R-CNN, Mask R-CNN and
Cascade R-CNN R50-FPN built from mmdet's own configs (random init, no
download, small images).

What is exact: with the same images, T_d's RPN objectness / box-delta maps
equal S's; fed the same proposals (S's, decoded from S's RPN maps), T_d's
RoI class scores, box deltas and mask logits equal S's (≤ 1e-5 relative, per
output); its FPN levels fold back to S's.  The rules behind it: RoI pooling is
a carried channel-wise unit (``kinds.py`` ``roi_pool``), the shared FCs read the
flattened C'×7×7 RoI features (a layout along the flattened dim: replicas of
each (channel, bin) column), the RPN's and heads' prediction layers are output
boundaries (``detection.output_boundaries``), the mask head's ConvTranspose2d
has the conv rule with its weight's dims swapped.
"""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from torch.utils._pytree import tree_flatten

from mmgpd.models.tasks.detection import _ir_forward, output_boundaries
from mmgpd.reparam import extract_student, fold_to_student, inverse_reparameterize

CONFIGS = {
    'faster': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mask': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'cascade': 'cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py',
}


def _no_download(cfg):
    if isinstance(cfg, dict):
        cfg.pop('init_cfg', None)
        for v in cfg.values():
            _no_download(v)
    return cfg


def build(name, num_classes=4):
    """mmdet's config ``name`` (R50-FPN), random init, ``num_classes``."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    cfg = _no_download(copy.deepcopy(get_config(f'mmdet::{CONFIGS[name]}').model))
    heads = cfg.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.num_classes = num_classes
    if 'mask_head' in cfg.roi_head:
        cfg.roi_head.mask_head.num_classes = num_classes
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    # non-trivial biases and BN statistics (a fresh model's are 0 / 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _samples(x):
    from mmdet.structures import DetDataSample
    h, w = x.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(x.shape[0])]


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def same_proposal_outputs(student, teacher, x):
    """``(S's outputs, T_d's outputs, S's FPN, T_d's FPN, proposals)``: the RPN
    maps of each, then each RoI head on **S's** proposals."""
    samples = _samples(x)
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        s_feat, t_feat = student.extract_feat(x), teacher.extract_feat(x)
        s_rpn, t_rpn = student.rpn_head(s_feat), teacher.rpn_head(t_feat)
        proposals = student.rpn_head.predict_by_feat(
            *s_rpn, batch_img_metas=metas, rescale=False)
        if hasattr(student.roi_head, 'num_stages'):  # cascade
            s_roi, t_roi = _cascade_on_student_rois(student, teacher, s_feat,
                                                    t_feat, proposals, samples)
        else:
            s_roi = student.roi_head.forward(s_feat, proposals, samples)
            t_roi = teacher.roi_head.forward(t_feat, proposals, samples)
    s_out = tree_flatten((s_rpn, s_roi))[0]
    t_out = tree_flatten((t_rpn, t_roi))[0]
    return s_out, t_out, s_feat, t_feat, proposals


def _cascade_on_student_rois(student, teacher, s_feat, t_feat, proposals,
                             samples):
    """Every cascade stage of T_d on the RoIs **S** refined for it: S's stage
    outputs, T_d's on the same RoIs (a stage's RoIs are the previous stage's
    refined boxes; T_d's own, decoded from deltas equal to 1e-6, would move
    the sampling points by as much, which the next stage amplifies)."""
    rois_seen, s_stage = [], []
    original = student.roi_head._bbox_forward

    def record(stage, x, rois, **kw):
        rois_seen.append(rois.clone())
        out = original(stage, x, rois, **kw)
        s_stage.append((out['cls_score'], out['bbox_pred']))
        return out
    student.roi_head._bbox_forward = record
    try:
        student.roi_head.forward(s_feat, proposals, samples)
    finally:
        del student.roi_head._bbox_forward
    assert len(rois_seen) == student.roi_head.num_stages
    t_stage = []
    for stage, rois in enumerate(rois_seen):
        out = teacher.roi_head._bbox_forward(stage, t_feat, rois)
        t_stage.append((out['cls_score'], out['bbox_pred']))
    return s_stage, t_stage


@pytest.mark.parametrize('name,ratio,train,noise', [
    ('faster', 2, False, 0.0), ('faster', 1.5, False, 0.0),
    ('faster', 2, True, 0.0),
    pytest.param('mask', 2, False, 1e-3, marks=pytest.mark.slow),
    pytest.param('mask', 2, True, 1e-3, marks=pytest.mark.slow),
    pytest.param('mask', 1.5, False, 0.0, marks=pytest.mark.slow),
    ('cascade', 2, False, 0.0),
    pytest.param('cascade', 2, True, 0.0, marks=pytest.mark.slow),
    pytest.param('cascade', 1.5, False, 0.0, marks=pytest.mark.slow)])
def test_two_stage_teacher_is_exact_on_the_same_proposals(name, ratio, train,
                                                          noise):
    """(Mask R-CNN with zero-sum noise: it reaches the mask head's
    ConvTranspose2d over its *input* replicas — dim 0 of its weight — so T_d
    stays S while the replicas differ.)"""
    student = build(name)
    probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    teacher = inverse_reparameterize(
        student, ratio, example_inputs=probe, forward_fn=_ir_forward,
        noise=noise, generator=torch.Generator().manual_seed(1))
    plan = teacher.gpd_plan
    assert plan.ir_deviation <= 1e-5
    # widened where it should be, fixed where the outputs are
    w = round(256 * ratio)
    ext = teacher.roi_head.bbox_roi_extractor
    ext = ext[0] if isinstance(ext, torch.nn.ModuleList) else ext
    assert ext.out_channels == w
    heads = teacher.roi_head.bbox_head
    heads = list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]
    for head in heads:
        assert head.shared_fcs[0].in_features == w * 7 * 7
        assert head.fc_cls.out_features == 4 + 1  # softmax: K + background
    assert teacher.rpn_head.rpn_conv.out_channels == w
    assert teacher.rpn_head.rpn_cls.out_channels == \
        student.rpn_head.rpn_cls.out_channels
    for path in output_boundaries(student):
        assert plan.layouts[path][1] is None, path  # fixed
    if name == 'mask':
        up = teacher.roi_head.mask_head.upsample
        assert isinstance(up, torch.nn.ConvTranspose2d)
        assert (up.in_channels, up.out_channels) == (w, w)
        if noise:  # the replicas differ, T_d still equals S
            assert not torch.equal(up.weight[:256], up.weight[256:512])
    # another batch, another size; train mode too (the RoI heads have no
    # dropout / BN; mmdet's ResNet keeps its BN in eval: norm_eval)
    student.train(train)
    teacher.train(train)
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(3))
    s_out, t_out, s_feat, t_feat, proposals = same_proposal_outputs(
        student, teacher, x)
    assert sum(len(p) for p in proposals) >= 20  # RoIs to compare
    assert [a.shape for a in s_out] == [b.shape for b in t_out]
    devs = [rel(t, s) for s, t in zip(s_out, t_out)]
    assert max(devs) <= 1e-5, devs
    folded = [fold_to_student(t, s.shape[1]) for t, s in
              zip(t_feat, s_feat)]
    assert max(rel(f, s) for f, s in zip(folded, s_feat)) <= 1e-5
    if noise:
        return
    # CBR gives the student back exactly
    back = extract_student(teacher).state_dict()
    for k, v in student.state_dict().items():
        assert torch.equal(back[k], v), k


def test_the_roi_features_flattened_for_the_shared_fcs_are_planned_per_column():
    """The first shared FC reads the flattened (C'·7·7) RoI features: its input
    layout is a replica map over the C·7·7 (channel, bin) columns, teacher
    column c'·49 + b carrying student column (c' mod C)·49 + b at 1/2."""
    student = build('faster')
    probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    teacher = inverse_reparameterize(student, 2, example_inputs=probe,
                                     forward_fn=_ir_forward)
    w_s = student.roi_head.bbox_head.shared_fcs[0].weight
    w_t = teacher.roi_head.bbox_head.shared_fcs[0].weight
    assert w_t.shape == (2 * 1024, 2 * 256 * 49)
    j = torch.arange(2 * 256 * 49)
    g = (j // 49) % 256 * 49 + j % 49  # the student column of teacher column j
    # rows: cyclic carried (1/2), columns: replicas of g(j), carried input 1/2:
    # Ŵ[o, j] = W[o mod 1024, g(j)] · (1/2) / ((1/2) · 2)
    expect = w_s[torch.arange(2048) % 1024][:, g] / 2
    torch.testing.assert_close(w_t, expect, rtol=0, atol=0)


# --------------------------------------------------------------------------- #
# The training pass: the same proposals and sampled RoIs for S and T_d
# --------------------------------------------------------------------------- #
def _gpd(name, **distiller):
    """GPD (hard strategy, r = 2, no noise, no static teacher) around mmdet's
    config ``name`` with an R18-FPN backbone (by ``depth``), 4 classes."""
    from mmengine.config import Config

    from mmgpd.registry import MODELS
    from ..conftest import REPO_ROOT
    import os.path as osp
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs/gpd_det/retinanet_r18_fpn_1x_coco_scratch.py'))
    init_default_scope(cfg.default_scope)
    model = copy.deepcopy(cfg.model)
    arch = _no_download(copy.deepcopy(get_config(f'mmdet::{CONFIGS[name]}').model))
    arch.backbone.depth = 18
    arch.neck.in_channels = [64, 128, 256, 512]
    heads = arch.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.num_classes = 4
    if 'mask_head' in arch.roi_head:
        arch.roi_head.mask_head.num_classes = 4
    model.architecture = arch
    model.distiller.update(noise=0.0, **distiller)
    torch.manual_seed(0)
    return MODELS.build(model)


def _batch(with_masks=False):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    boxes = torch.tensor([[4.0, 6.0, 40.0, 44.0], [20.0, 18.0, 60.0, 58.0]])
    samples = []
    for i in range(2):
        s = DetDataSample(metainfo=dict(
            img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
            batch_input_shape=(64, 64), scale_factor=(1.0, 1.0)))
        inst = InstanceData(bboxes=boxes + 2 * i,
                            labels=torch.tensor([i % 4, 2]))
        if with_masks:
            m = torch.zeros(2, 64, 64, dtype=torch.uint8)
            for k, (x0, y0, x1, y1) in enumerate((boxes + 2 * i).long().tolist()):
                m[k, y0:y1, x0:x1] = 1
            inst.masks = BitmapMasks(m.numpy(), 64, 64)
        s.gt_instances = inst
        samples.append(s)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    return x, samples


@pytest.mark.parametrize('name', [
    'faster', pytest.param('mask', marks=pytest.mark.slow),
    pytest.param('cascade', marks=pytest.mark.slow)])
def test_training_pass_gives_dynamic_teacher_the_students_rois(name):
    """In the training forward T_d replays S's RPN anchor samples, proposals,
    RoI assignments and samples (every cascade stage): at init its task
    losses equal S's term by term, its RoI class scores equal S's row by row
    (the same RoIs), the gap term (RPN objectness dense KD) is ~0, the
    samplers drew once per image (and stage), and gradients reach T_d."""
    from mmgpd.models.tasks.detection import _SHARED, DetectionTask
    model = _gpd(name).train()
    x, samples = _batch(with_masks=name == 'mask')
    out_s, loss_s = DetectionTask.outputs(model.student, x, samples)
    shared = samples[0].__dict__[_SHARED]
    stages = getattr(model.student.template.roi_head, 'num_stages', 1)
    assert len(shared['sample']) == 2 * stages  # S drew: 2 images per stage
    assert len(shared['rpn']) == 2
    out_t, loss_t = DetectionTask.outputs(model.dynamic_teacher, x, samples)
    assert len(shared['sample']) == 2 * stages  # T_d replayed, drew nothing
    assert set(loss_s) == set(loss_t)
    assert {'loss_rpn_cls', 'loss_rpn_bbox'} <= set(loss_s)
    if name == 'mask':
        assert 'loss_mask' in loss_s
    if name == 'cascade':
        assert {'s0.loss_cls', 's2.loss_bbox'} <= set(loss_s)
    for k in loss_s:
        torch.testing.assert_close(loss_t[k], loss_s[k], rtol=1e-5, atol=1e-6)
    assert len(out_s['roi_logits']) == len(out_t['roi_logits']) == stages
    for s, t in zip(out_s['roi_logits'], out_t['roi_logits']):
        assert s.shape == t.shape and s.shape[1] == 4 + 1
        assert rel(t, s) <= 1e-5
    assert [a.shape for a in out_s['logits']] == [a.shape for a in out_t['logits']]
    # the whole GPD loss on a fresh batch: gap ~0, gradients into T_d
    x, samples = _batch(with_masks=name == 'mask')
    losses = model.loss(x, samples)
    assert abs(losses['loss_gap'].item()) < 1e-6
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    td = model.dynamic_teacher
    assert td.rpn_head.rpn_conv.weight.grad.abs().sum() > 0
    head = td.roi_head.bbox_head
    head = head[-1] if isinstance(head, torch.nn.ModuleList) else head
    assert head.shared_fcs[0].weight.grad.abs().sum() > 0


def test_samples_left_by_an_earlier_step_are_not_replayed():
    """A batch's shared RoIs belong to one input tensor: a new step on the
    same data samples (another input) draws afresh."""
    from mmgpd.models.tasks.detection import _SHARED, DetectionTask
    model = _gpd('faster').train()
    x, samples = _batch()
    DetectionTask.outputs(model.student, x, samples)
    first = samples[0].__dict__[_SHARED]
    DetectionTask.outputs(model.student, x.clone(), samples)
    assert samples[0].__dict__[_SHARED] is not first
    assert len(samples[0].__dict__[_SHARED]['sample']) == 2


@pytest.mark.parametrize('ratio', [2, 1.5])
def test_transposed_conv_rule_by_hand(ratio):
    """ConvTranspose2d (weight (C_in, C_out, k, k)) between two convs: the
    conv rule with dims 0 / 1 swapped, Ŵ[k, j] = W[g_in(k), g_out(j)] ·
    f_out(j) / (f_in(k) · n_in(k)); T_d = S, CBR gives S back, zero-sum noise
    over its input replicas (dim 0) keeps T_d = S."""
    import torch.nn as nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(6, 4, 2, stride=2), nn.ReLU(),
                        nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 5, 5)
    t = inverse_reparameterize(net, ratio, example_inputs=x)
    up = t[2]
    c_in, c_out = round(6 * ratio), round(4 * ratio)
    assert up.weight.shape == (c_in, c_out, 2, 2)
    g_in, g_out = torch.arange(c_in) % 6, torch.arange(c_out) % 4
    n_in = torch.bincount(g_in, minlength=6)[g_in].double()
    n_out = torch.bincount(g_out, minlength=4)[g_out].double()
    # f_in = 1 / n_in, f_out = 1 / n_out: Ŵ[k, j] = W[g_in(k), g_out(j)] / n_out(j)
    expect = net[2].weight[g_in][:, g_out] / n_out.float().reshape(1, -1, 1, 1)
    torch.testing.assert_close(up.weight, expect, rtol=1e-6, atol=0)
    torch.testing.assert_close(up.bias, net[2].bias[g_out] / n_out.float())
    del n_in
    y = torch.randn(3, 3, 7, 6)
    with torch.no_grad():
        assert rel(t(y), net(y)) <= 1e-6
    back = extract_student(t).state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=1e-6, atol=1e-7)
    noisy = inverse_reparameterize(net, ratio, example_inputs=x, noise=1e-2,
                                   generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(noisy[2].weight, up.weight)
    with torch.no_grad():
        assert rel(noisy(y), net(y)) <= 1e-5


def test_roi_gap_term_by_hand():
    """``roi_gap_loss``: softmax KD sg(T_d) -> S on each cascade stage's RoI
    class scores, summed: T²·KL(softmax(t/T) || softmax(s/T)) averaged over
    RoIs, hand-computed; no gradient into T_d's scores."""
    from mmgpd.registry import MODELS
    init_default_scope('mmgpd')
    distiller = MODELS.build(dict(
        type='mmgpd.GPDDistiller', gap_loss=None,
        roi_gap_loss=dict(type='mmgpd.KDLoss', temperature=2.0)))
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(6, 5, generator=g, requires_grad=True) for _ in range(2)]
    t = [torch.randn(6, 5, generator=g, requires_grad=True) for _ in range(2)]
    out = distiller.loss({'student': dict(logits=[], roi_logits=s),
                          'dynamic_teacher': dict(logits=[], roi_logits=t)}, {})
    expect = 0.0
    for a, b in zip(s, t):
        p, q = torch.softmax(b / 2, 1), torch.softmax(a / 2, 1)
        expect = expect + 4 * (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(out['loss_gap_roi'], expect)
    out['loss_gap_roi'].backward()
    assert all(x.grad is None for x in t) and all(x.grad is not None for x in s)
    with pytest.raises(ValueError, match='roi_gap_loss'):
        distiller.loss({'student': dict(logits=[]),
                        'dynamic_teacher': dict(logits=[])}, {})


def test_roi_gap_term_in_training_is_zero_at_init_and_not_after():
    """Through GPD.loss on Faster R-CNN: ``loss_gap_roi`` is ~0 at init (same
    RoIs, T_d = S) and positive once T_d's replicas of the second shared FC
    move (S, read from the first replicas by CBR, does not)."""
    model = _gpd('faster', roi_gap_loss=dict(type='mmgpd.KDLoss')).train()
    x, samples = _batch()
    losses = model.loss(x, samples)
    assert losses['loss_gap_roi'].item() < 1e-8
    with torch.no_grad():
        fc = model.dynamic_teacher.roi_head.bbox_head.shared_fcs[1]
        fc.weight[:, 1024:] += 0.05 * torch.randn(2048, 1024)
    x, samples = _batch()
    losses = model.loss(x, samples)
    assert losses['loss_gap_roi'].item() > 1e-4


def _faster_cfg(depth, num_classes=4):
    cfg = _no_download(copy.deepcopy(get_config(f'mmdet::{CONFIGS["faster"]}').model))
    cfg.backbone.depth = depth
    if depth < 50:
        cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.roi_head.bbox_head.num_classes = num_classes
    return cfg


@pytest.fixture(scope='module')
def faster_r50_ckpt(tmp_path_factory):
    """A (random-init) Faster R-CNN R50-FPN checkpoint: the static teacher."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    torch.manual_seed(1)
    teacher = MODELS.build(_faster_cfg(50))
    teacher.init_weights()
    path = tmp_path_factory.mktemp('t_s') / 'faster_r50.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path)


def _gpd_with_static_teacher(ckpt, teacher_classes=4):
    from mmengine.config import Config

    from mmgpd.registry import MODELS
    from ..conftest import REPO_ROOT
    import os.path as osp
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs/gpd_det/retinanet_r18_fpn_1x_coco.py'))
    init_default_scope(cfg.default_scope)
    model = copy.deepcopy(cfg.model)
    model.architecture = _faster_cfg(18)
    model.teacher = _faster_cfg(50, teacher_classes)
    model.teacher_ckpt = ckpt
    model.distiller.update(
        noise=0.0, kd_loss=dict(type='mmgpd.DenseKDLoss'),
        roi_gap_loss=dict(type='mmgpd.KDLoss'),
        roi_kd_loss=dict(type='mmgpd.KDLoss'))
    torch.manual_seed(0)
    return MODELS.build(model)


def test_static_two_stage_teacher_distils_on_the_students_rois(faster_r50_ckpt):
    """A Faster R-CNN R50 static teacher: RPN objectness dense KD, FPN
    feature terms and RoI softmax KD on the student's sampled RoIs (T_s's
    scores row by row on the same RoIs) into S and T_d; no gradient into T_s."""
    from mmgpd.models.tasks.detection import DetectionTask
    model = _gpd_with_static_teacher(faster_r50_ckpt).train()
    x, samples = _batch()
    out_s, _ = DetectionTask.outputs(model.student, x, samples)
    out_t, _ = DetectionTask.outputs(model.teacher, x, samples,
                                     with_loss=False)
    assert out_t['roi_logits'][0].shape == out_s['roi_logits'][0].shape
    x, samples = _batch()
    losses = model.loss(x, samples)
    for key in ('loss_kd_static_to_student', 'loss_kd_static_to_dynamic_teacher',
                'loss_kd_roi_static_to_student',
                'loss_kd_roi_static_to_dynamic_teacher',
                'loss_feat_static_to_student', 'loss_gap_roi'):
        assert key in losses, key
    assert losses['loss_kd_roi_static_to_student'].item() > 1e-6
    torch.testing.assert_close(losses['loss_kd_roi_static_to_student'],
                               losses['loss_kd_roi_static_to_dynamic_teacher'],
                               rtol=1e-4, atol=1e-7)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())


def test_static_teacher_of_other_classes_is_refused_for_two_stage(
        faster_r50_ckpt):
    with pytest.raises(ValueError, match=r'model\.teacher\.rpn_head / roi_head'
                       r'.*num_classes 80 vs 4'):
        _gpd_with_static_teacher(faster_r50_ckpt, teacher_classes=80)


# --------------------------------------------------------------------------- #
# COCO configs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('name,kind,url_part', [
    ('faster-rcnn_r18_fpn_1x_coco', 'FasterRCNN',
     'faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth'),
    ('mask-rcnn_r18_fpn_1x_coco', 'MaskRCNN',
     'mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth'),
    ('faster-rcnn_r18_fpn_1x_coco_scratch', 'FasterRCNN', None)])
def test_coco_two_stage_configs(name, kind, url_part):
    """The COCO configs inherit mmdet's: R18-FPN student (ImageNet weights),
    mmdet's R50-FPN as static teacher (its released checkpoint) or none
    (GPD*); built without downloads (4 classes), GPD's IR self-check passes
    and T_d's RPN maps and RoI outputs equal the student view's."""
    from mmengine.config import Config

    from mmgpd.models.tasks.detection import _ir_forward
    from mmgpd.registry import MODELS
    from ..conftest import REPO_ROOT
    import os.path as osp
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{name}.py'))
    arch = cfg.model.architecture
    assert arch.type == kind and arch.backbone.depth == 18
    assert arch.backbone.init_cfg.checkpoint == 'torchvision://resnet18'
    assert cfg.model.distiller.roi_gap_loss.type == 'mmgpd.KDLoss'
    if kind == 'MaskRCNN':  # the mask head's gap term
        assert cfg.model.distiller.mask_gap_loss.type == 'mmgpd.DenseKDLoss'
    if url_part is None:
        assert cfg.model.teacher is None and cfg.model.distiller.kd_loss is None
    else:
        assert cfg.model.teacher.type == kind
        assert cfg.model.teacher.backbone.depth == 50
        assert cfg.model.teacher_ckpt.endswith(url_part)
        assert cfg.model.distiller.roi_kd_loss.type == 'mmgpd.KDLoss'
    init_default_scope(cfg.default_scope)
    model = copy.deepcopy(cfg.model)
    model.teacher = model.teacher_ckpt = None
    model.distiller.update(kd_loss=None, roi_kd_loss=None, noise=0.0)
    _no_download(model.architecture)
    model.architecture.roi_head.bbox_head.num_classes = 4
    if 'mask_head' in model.architecture.roi_head:
        model.architecture.roi_head.mask_head.num_classes = 4
    torch.manual_seed(0)
    gpd = MODELS.build(model).eval()
    assert gpd.dynamic_teacher.gpd_plan.ir_deviation <= 1e-5
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s = tree_flatten(gpd.student.call(_ir_forward, x))[0]
        t = tree_flatten(_ir_forward(gpd.dynamic_teacher, x))[0]
    assert max(rel(b, a) for a, b in zip(s, t)) <= 1e-5


# --------------------------------------------------------------------------- #
# The mask head's gap term
# --------------------------------------------------------------------------- #
def test_mask_gap_term_by_hand():
    """``mask_gap_loss`` (DenseKDLoss): binary KL sg(T_d) -> S per pixel of
    the positive RoIs' gt-class mask logits, averaged over RoIs and pixels,
    summed over stages; no gradient into T_d's logits."""
    from mmgpd.registry import MODELS
    init_default_scope('mmgpd')
    distiller = MODELS.build(dict(
        type='mmgpd.GPDDistiller', gap_loss=None,
        mask_gap_loss=dict(type='mmgpd.DenseKDLoss', temperature=1.0)))
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(3, 1, 4, 4, generator=g, requires_grad=True)
         for _ in range(2)]
    t = [torch.randn(3, 1, 4, 4, generator=g, requires_grad=True)
         for _ in range(2)]
    out = distiller.loss({'student': dict(logits=[], mask_logits=s),
                          'dynamic_teacher': dict(logits=[], mask_logits=t)},
                         {})
    expect = 0.0
    for a, b in zip(s, t):
        p, q = torch.sigmoid(b), torch.sigmoid(a)
        kl = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
        expect = expect + kl.sum() / (3 * 4 * 4)
    torch.testing.assert_close(out['loss_gap_mask'], expect)
    out['loss_gap_mask'].backward()
    assert all(x.grad is None for x in t) and all(x.grad is not None for x in s)
    with pytest.raises(ValueError, match='mask_gap_loss'):
        distiller.loss({'student': dict(logits=[]),
                        'dynamic_teacher': dict(logits=[])}, {})


def test_mask_gap_term_in_training_is_zero_at_init_and_not_after():
    """Through GPD.loss on Mask R-CNN: S's and T_d's ``mask_logits`` are the
    positive RoIs' gt-class channels (one row per positive RoI of the
    replayed samples), equal at init (``loss_gap_mask`` ~0), apart once T_d's
    second replicas feeding ``conv_logits`` move."""
    from mmgpd.models.tasks.detection import _SHARED, DetectionTask
    model = _gpd('mask', mask_gap_loss=dict(type='mmgpd.DenseKDLoss')).train()
    x, samples = _batch(with_masks=True)
    out_s, _ = DetectionTask.outputs(model.student, x, samples)
    out_t, _ = DetectionTask.outputs(model.dynamic_teacher, x, samples)
    n_pos = sum(len(r.pos_gt_labels)
                for r in samples[0].__dict__[_SHARED]['sample'])
    (s_mask, ), (t_mask, ) = out_s['mask_logits'], out_t['mask_logits']
    assert s_mask.shape == t_mask.shape == (n_pos, 1, 28, 28) and n_pos > 0
    assert rel(t_mask, s_mask) <= 1e-5
    x, samples = _batch(with_masks=True)
    losses = model.loss(x, samples)
    assert losses['loss_gap_mask'].item() < 1e-8
    with torch.no_grad():
        conv = model.dynamic_teacher.roi_head.mask_head.conv_logits
        half = conv.weight.shape[1] // 2
        conv.weight[:, half:] += 0.5 * torch.randn_like(conv.weight[:, half:])
    x, samples = _batch(with_masks=True)
    losses = model.loss(x, samples)
    assert losses['loss_gap_mask'].item() > 1e-4
    losses['loss_gap_mask'].backward()
    # T_d's side is detached: the gradient reaches T_d's parameters through
    # S (hard strategy: S's conv_logits is derived from T_d's first replicas)
    grad = conv.weight.grad
    assert grad[:, :half].abs().sum() > 0
