"""Each fix in mmgpd.utils.compat is needed (shown failing without it) and works."""
import importlib.util
import os.path as osp
import pickle
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmgpd
from mmgpd.utils import compat


# --------------------------------------------------------------------------- #
# torch.load(weights_only=True) vs. full mmengine training checkpoints
# --------------------------------------------------------------------------- #
class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


class _ToyDataset(torch.utils.data.Dataset):

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


class _Crash(Exception):
    pass


class _CrashAfterEpoch(Hook):
    """Stops training with an exception once epoch ``n``'s checkpoint is saved."""
    priority = 'LOWEST'

    def __init__(self, n):
        self.n = n

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.n:
            raise _Crash


def _runner(work_dir, max_epochs, name, **kwargs):
    torch.manual_seed(0)  # the same initial weights for every run
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=_ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=8,
            num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2], gamma=0.1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


def test_full_training_checkpoint_resumes(tmp_path):
    """A Runner checkpoint (with message hub) is resumed to the same weights."""
    straight = _runner(tmp_path / 'straight', 3, 'compat_straight')
    straight.train()

    first = _runner(tmp_path / 'resumed', 3, 'compat_first',
                    custom_hooks=[_CrashAfterEpoch(2)])
    with pytest.raises(_Crash):
        first.train()
    ckpt = str(tmp_path / 'resumed' / 'epoch_2.pth')
    assert osp.isfile(ckpt)

    # Without the fix: torch's default (weights_only=True) and mmengine's own
    # local loader both refuse mmengine's HistoryBuffer.  torch.load's default
    # must stay as it is (weights-only loading is not turned off process-wide).
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(ckpt)
    from mmengine.runner import checkpoint as mmengine_checkpoint
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        mmengine_checkpoint.load_from_local(ckpt, 'cpu')

    resumed = _runner(tmp_path / 'resumed', 3, 'compat_resumed',
                      resume=True, load_from=ckpt)
    resumed.train()
    assert resumed.epoch == 3 and resumed.iter == 3 * 4
    # The message hub came back from the checkpoint: loss history of 12 iters.
    assert len(resumed.message_hub.get_scalar('train/loss').data[0]) == 12
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name


def test_local_loader_is_the_only_one_replaced():
    from mmengine.runner.checkpoint import CheckpointLoader
    assert CheckpointLoader._get_checkpoint_loader('/x/epoch_1.pth') is \
        compat.load_from_local
    http_loader = CheckpointLoader._get_checkpoint_loader('https://x/y.pth')
    assert http_loader is not compat.load_from_local
    with pytest.raises(FileNotFoundError, match='no_such.pth'):
        compat.load_from_local('/nonexistent/no_such.pth')


# --------------------------------------------------------------------------- #
# setuptools >= 82: no pkg_resources
# --------------------------------------------------------------------------- #
_PARSE = textwrap.dedent('''
    import sys
    sys.modules['pkg_resources'] = None   # as in setuptools >= 82
    {import_mmgpd}
    from mmengine.config import Config
    cls = Config.fromfile({cls!r})
    det = Config.fromfile({det!r})
    print('PARSED', cls.model.backbone.depth, cls.model.head.num_classes,
          det.model.bbox_head.num_classes)
''')


@pytest.fixture
def external_base_configs(tmp_path):
    cls = tmp_path / 'cls_cfg.py'
    cls.write_text("_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']\n"
                   'model = dict(head=dict(num_classes=7))\n')
    det = tmp_path / 'det_cfg.py'
    det.write_text("_base_ = ['mmdet::retinanet/retinanet_r18_fpn_1x_coco.py']\n"
                   'model = dict(bbox_head=dict(num_classes=3))\n')
    return str(cls), str(det)


def test_external_base_without_pkg_resources_needs_the_shim(
        run_python, external_base_configs):
    cls, det = external_base_configs
    res = run_python(_PARSE.format(import_mmgpd='', cls=cls, det=det))
    assert res.returncode != 0
    assert 'pkg_resources' in res.stderr


def test_external_base_parses_without_pkg_resources(run_python,
                                                    external_base_configs):
    cls, det = external_base_configs
    res = run_python(_PARSE.format(import_mmgpd='import mmgpd', cls=cls, det=det))
    assert res.returncode == 0, res.stderr
    assert 'PARSED 18 7 3' in res.stdout


def _original_package_utils():
    """A fresh copy of mmengine's own (pkg_resources-based) package_utils."""
    import mmengine
    path = osp.join(osp.dirname(mmengine.__file__), 'utils', 'package_utils.py')
    spec = importlib.util.spec_from_file_location('_orig_package_utils', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('package', ['mmpretrain', 'mmdet', 'mmengine', 'mmcv'])
def test_package_utils_agree_with_mmengine(package):
    pytest.importorskip('pkg_resources')
    orig = _original_package_utils()
    assert compat.is_installed(package) == orig.is_installed(package) is True
    assert compat.get_installed_path(package) == orig.get_installed_path(package)
    assert compat.package2module(package) == orig.package2module(package)


def test_package_utils_missing_package():
    assert compat.is_installed('mmgpd-no-such-package') is False
    with pytest.raises(Exception, match='mmgpd-no-such-package'):
        compat.get_installed_path('mmgpd-no-such-package')


def test_patched_into_the_modules_that_imported_them():
    import mmengine.config.config as config_mod
    import mmengine.hub.hub as hub_mod
    assert config_mod.get_installed_path is compat.get_installed_path
    assert config_mod.is_installed is compat.is_installed
    assert hub_mod.get_installed_path is compat.get_installed_path
    assert compat.apply_compat_patches() == []  # idempotent


# --------------------------------------------------------------------------- #
# NumPy 2: np.in1d
# --------------------------------------------------------------------------- #
_RETRIEVAL = textwrap.dedent('''
    import numpy as np, torch
    {import_mmgpd}
    from mmpretrain.evaluation import RetrievalAveragePrecision, RetrievalRecall
    pred = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.1, 0.7]])
    target = [torch.tensor([2]), torch.tensor([0, 3])]
    recall = RetrievalRecall.calculate(pred, target, topk=(1, 2), target_indices=True)
    ap = RetrievalAveragePrecision.calculate(pred, target, topk=4, target_indices=True)
    print('RESULT', [float(r) for r in recall], round(float(ap), 4))
''')


def test_numpy_in1d_missing_breaks_mmpretrain_retrieval(run_python):
    if 'in1d' in np.__dict__ and 'numpy_in1d' not in compat.applied_patches():
        pytest.skip(f'numpy {np.__version__} still has np.in1d')
    res = run_python(_RETRIEVAL.format(import_mmgpd=''))
    assert res.returncode != 0
    assert 'in1d' in res.stderr


def test_numpy_in1d_restored_for_mmpretrain_retrieval(run_python):
    res = run_python(_RETRIEVAL.format(import_mmgpd='import mmgpd'))
    assert res.returncode == 0, res.stderr
    # Sample 0 ranks [0, 2, 3, 1]: target 2 is 2nd. Sample 1 ranks [1, 3, 0, 2]:
    # targets 3 (2nd) and 0 (3rd).  Recall@1 = 0 %, recall@2 = 100 %.
    # AP: sample 0 = 1/2; sample 1 = (1/2 + 2/3) / 2 = 7/12; mean = 13/24.
    assert 'RESULT [0.0, 100.0] 54.1667' in res.stdout


def test_in1d_semantics():
    a = np.array([[1, 2], [3, 4]])
    assert compat.in1d(a, [2, 4]).tolist() == [False, True, False, True]
    assert compat.in1d(a, [2, 4], invert=True).tolist() == [True, False, True, False]
    assert np.in1d is not None and mmgpd.__version__


# --------------------------------------------------------------------------- #
# Atomic local writes
# --------------------------------------------------------------------------- #
def test_local_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails half-way keeps the old file and leaves no temp file."""
    from mmengine.fileio.backends.local_backend import LocalBackend

    from mmgpd.utils import fileio
    target = tmp_path / 'epoch_1.pth'
    LocalBackend().put(b'old', target)
    assert target.read_bytes() == b'old'

    def broken(path, write):
        def half(f):
            write(f)
            raise OSError('disk full')
        return real(path, half)

    real = fileio.atomic_write
    monkeypatch.setattr(fileio, 'atomic_write', broken)
    with pytest.raises(OSError, match='disk full'):
        LocalBackend().put(b'new and longer', target)
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']


# --------------------------------------------------------------------------- #
# The dynamic teacher's carried batch norms vs. mmengine's (Sync)BN conversions
# --------------------------------------------------------------------------- #
class _Holder(nn.Module):
    """T_d registered, the hard student a view (as in mmgpd.GPD)."""

    def __init__(self, norm):
        super().__init__()
        from mmgpd.reparam import HardStudent, inverse_reparameterize
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), norm(6), nn.ReLU(),
                            nn.Conv2d(6, 6, 3, padding=1), norm(6), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 2)
                m.bias.data.uniform_(-1, 1)
        self.teacher = inverse_reparameterize(net, 2)
        self.student = HardStudent(self.teacher)


def _outputs(holder, x):
    with torch.no_grad():
        holder.eval()
        out = [holder.teacher(x), holder.student(x)]
        holder.train()
        state = {k: v.clone() for k, v in holder.teacher.state_dict().items()}
        out += [holder.teacher(x), holder.student(x)]
        holder.teacher.load_state_dict(state)
    return out


def _norms(module):
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_revert_sync_batchnorm_keeps_carried_norms():
    """One process: mmengine's revert gives carried _BatchNormXd's (same tensors)
    to T_d and plain ones to the student; nothing else changes."""
    import mmengine.model
    from mmengine.model.utils import _BatchNormXd
    from mmengine.runner import runner as runner_mod

    from mmgpd.reparam import extract_student
    from mmgpd.reparam.layers import CarriedBatchNormXd, CarriedSyncBatchNorm
    assert runner_mod.revert_sync_batchnorm is mmengine.model.revert_sync_batchnorm
    holder = _Holder(nn.SyncBatchNorm)
    x = torch.randn(4, 3, 8, 8)
    before = _outputs(holder, x)
    carried = _norms(holder.teacher)
    assert [type(m) for m in carried] == [CarriedSyncBatchNorm] * 2
    reverted = runner_mod.revert_sync_batchnorm(holder)
    assert reverted is holder
    norms = _norms(holder.teacher)
    assert [type(m) for m in norms] == [CarriedBatchNormXd] * 2
    assert [type(m) for m in _norms(holder.student.template)] == [_BatchNormXd] * 2
    for old, new in zip(carried, norms):
        assert new.weight is old.weight and new.running_var is old.running_var
        assert new.student_running_mean is old.student_running_mean
        assert new.carry_scale is old.carry_scale
    after = _outputs(holder, x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for t, s in (after[:2], after[2:]):  # T_d(x) == S(x), eval and train
        torch.testing.assert_close(t, s)
    extract_student(holder.teacher)  # CBR reads the student's statistics


def test_convert_sync_batchnorm_keeps_carried_norms():
    """cfg.sync_bn: T_d's carried norms become carried SyncBNs, the student's
    SyncBNs too; back to _BatchNormXd's by a revert."""
    from mmengine.runner import runner as runner_mod

    from mmgpd.reparam.layers import (CarriedBatchNorm2d, CarriedBatchNormXd,
                                      CarriedSyncBatchNorm)
    holder = _Holder(nn.BatchNorm2d)
    x = torch.randn(4, 3, 8, 8)
    before = _outputs(holder, x)
    assert [type(m) for m in _norms(holder.teacher)] == [CarriedBatchNorm2d] * 2
    runner_mod.convert_sync_batchnorm(holder, 'torch')
    assert [type(m) for m in _norms(holder.teacher)] == [CarriedSyncBatchNorm] * 2
    student_norms = [type(m).__name__ for m in holder.student.template.modules()
                     if 'BatchNorm' in type(m).__name__]
    assert student_norms == ['SyncBatchNorm'] * 2
    after = _outputs(holder, x)  # one process: SyncBN falls back to BN
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    runner_mod.revert_sync_batchnorm(holder)
    assert [type(m) for m in _norms(holder.teacher)] == [CarriedBatchNormXd] * 2
    with pytest.raises(ValueError, match='sync_bn'):
        runner_mod.convert_sync_batchnorm(_Holder(nn.BatchNorm2d), 'other')


def test_carried_norm_class_of_batchnorm_xd():
    """mmengine's _BatchNormXd (what a reverted SyncBN is) has a carried class;
    a batch norm with its own forward is refused by name."""
    from mmengine.model.utils import _BatchNormXd

    from mmgpd.reparam.layers import CarriedBatchNormXd, carried_norm_class

    class OwnForward(nn.BatchNorm2d):

        def forward(self, x):
            return super().forward(x) * 2

    assert carried_norm_class(_BatchNormXd(4)) is CarriedBatchNormXd
    with pytest.raises(TypeError, match='OwnForward'):
        carried_norm_class(OwnForward(4))
    with pytest.raises(TypeError, match='LayerNorm'):
        carried_norm_class(nn.LayerNorm(4))


def test_sync_batchnorm_on_cpu_matches_one_process_batchnorm(tmp_path):
    """2 gloo processes, half a batch each: SyncBatchNorm on the CPU (torch
    refuses it; compat all-reduces the statistics) gives the outputs, input
    gradients, summed weight gradients and running statistics of one
    BatchNorm over the whole batch."""
    import torch.multiprocessing as mp
    x, coef, bn = _sync_bn_problem()
    mp.spawn(_sync_bn_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    x.requires_grad_(True)
    y = bn.train()(x)
    (y * coef).sum().backward()
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1)]
    torch.testing.assert_close(torch.cat([r['y'] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r['grad'] for r in ranks]), x.grad)
    torch.testing.assert_close(ranks[0]['weight_grad'] + ranks[1]['weight_grad'],
                               bn.weight.grad)
    for r in ranks:
        torch.testing.assert_close(r['running_mean'], bn.running_mean)
        torch.testing.assert_close(r['running_var'], bn.running_var)
        assert r['num_batches_tracked'] == 1


def _sync_bn_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 5, 3, generator=g, dtype=torch.float64) * 3 + 1
    coef = torch.randn(6, 4, 5, 3, generator=g, dtype=torch.float64)
    bn = nn.BatchNorm2d(4, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    return x, coef, bn


def _sync_bn_worker(rank, world, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{out_dir}/init',
                            rank=rank, world_size=world)
    try:
        import mmgpd  # noqa: F401  (the patch)
        x, coef, ref = _sync_bn_problem()
        bn = nn.SyncBatchNorm(4, momentum=0.3).double()
        bn.load_state_dict(ref.state_dict())
        part = slice(rank * 3, rank * 3 + 3)  # uneven halves would work too
        xi = x[part].clone().requires_grad_(True)
        y = bn.train()(xi)
        (y * coef[part]).sum().backward()
        torch.save(dict(y=y.detach(), grad=xi.grad, weight_grad=bn.weight.grad,
                        running_mean=bn.running_mean,
                        running_var=bn.running_var,
                        num_batches_tracked=int(bn.num_batches_tracked)),
                   f'{out_dir}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- #
# SSDHead.loss_cls (mmdet 3.3.0's dense-head predict reads it)
# --------------------------------------------------------------------------- #
_SSD_PREDICT = textwrap.dedent('''
    import sys
    {prelude}
    import torch
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    init_default_scope('mmdet')
    det = MODELS.build(dict(
        type='SingleStageDetector',
        backbone=dict(type='ResNet', depth=18, out_indices=(2, 3)),
        neck=dict(type='SSDNeck', in_channels=(256, 512),
                  out_channels=(256, 512, 128), level_strides=(2, ),
                  level_paddings=(1, ), l2_norm_scale=None),
        bbox_head=dict(type='SSDHead', in_channels=(256, 512, 128),
                       num_classes=3, anchor_generator=dict(
                           type='SSDAnchorGenerator', scale_major=False,
                           input_size=64, strides=[16, 32, 64],
                           ratios=([2], [2], [2]), min_sizes=[10, 20, 40],
                           max_sizes=[20, 40, 64])),
        test_cfg=ConfigDict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                            nms=dict(type='nms', iou_threshold=0.45),
                            max_per_img=10))).eval()
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1, 1))
    with torch.no_grad():
        out = det.predict(torch.randn(1, 3, 64, 64),
                          [DetDataSample(metainfo=meta)])
    scores = out[0].pred_instances.scores
    assert len(scores) == 10 and float(scores.max()) <= 1.0
    print('PREDICTED', 'mmgpd' in sys.modules)
''')


def test_ssd_predict_fails_without_the_patch(run_python):
    proc = run_python(_SSD_PREDICT.format(prelude=''))
    if proc.returncode == 0:
        pytest.skip('this mmdet predicts with SSDHead: the patch is moot')
    assert "has no attribute 'loss_cls'" in proc.stderr


def test_ssd_predicts_with_mmgpd_imported_first(run_python):
    proc = run_python(_SSD_PREDICT.format(
        prelude="import mmgpd\nassert 'mmdet.models' not in sys.modules"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'PREDICTED True' in proc.stdout
    assert 'ssd_head_predict' in compat.applied_patches()


def test_ssd_patch_applies_to_an_already_imported_head():
    from mmdet.models.dense_heads import ssd_head
    compat.apply_compat_patches()  # idempotent: the class attribute stays
    assert vars(ssd_head.SSDHead)['loss_cls'] is None
    assert getattr(ssd_head.SSDHead.loss_cls, 'custom_cls_channels',
                   False) is False
