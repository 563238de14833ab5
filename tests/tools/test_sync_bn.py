"""SyncBN students: tools/train.py in one process and under DDP (gloo, CPU).

The Runner reverts every SyncBN to ``_BatchNormXd`` when it is not distributed
and, with ``cfg.sync_bn``, converts every batch norm to a SyncBN under DDP.  The
dynamic teacher's carried batch norms must come out of both with their carry
scale and the student's running statistics, so that T_d(x) == S(x) still at
iteration 0 (checked by ``sync_bn_helpers.CheckDynamicTeacherAfterWrap``).
"""
import json
import os.path as osp
import sys

import pytest

from ..conftest import REPO_ROOT
from .test_distributed import TOOLS, dist_train, free_port, run

GPD_CFG = osp.join(REPO_ROOT, 'configs/gpd/resnet_digits.py')
TOL = 1e-5


def write_cfg(path, norm='SyncBN', sync_bn=None, batch_size=16, indices=64):
    extra = f'sync_bn = {sync_bn!r}\n' if sync_bn else ''
    path.write_text(f'''
_base_ = [{GPD_CFG!r}]
custom_imports = dict(imports=['tests.tools.sync_bn_helpers'],
                      allow_failed_imports=False)
# noise 0: with symmetry-breaking noise the hard student (CBR reads the first
# replica, W_S = n * W_first) differs from T_d by O(noise) even at init
model = dict(architecture=dict(backbone=dict(norm_cfg=dict(type={norm!r}))),
             distiller=dict(noise=0.0))
custom_hooks = [dict(type='mmgpd.GPDHook'),
                dict(type='CheckDynamicTeacherAfterWrap')]
train_dataloader = dict(batch_size={batch_size}, dataset=dict(indices={indices}))
val_dataloader = dict(dataset=dict(indices=32))
test_dataloader = dict(dataset=dict(indices=32))
train_cfg = dict(max_epochs=1, val_interval=1)
randomness = dict(seed=0)
{extra}''')
    return str(path)


def report(work_dir, rank=0):
    with open(osp.join(work_dir, f'sync_bn_rank{rank}.json')) as f:
        return json.load(f)


def check_exact_after_wrap(rep, teacher_norm, student_norm):
    before = rep['before']
    # 20 batch norms in this ResNet-18 (CIFAR stem, no downsample BN in stage 1)
    n = sum(before['teacher_norms'].values())
    assert n == 20
    assert before['teacher_norms'] == {teacher_norm: n}, before
    assert before['student_norms'] == {student_norm: n}, before
    assert before['carried_norms'] == before['carried_with_student_stats'] == n
    assert before['max_carry_scale'] == 2.0  # ratio 2
    assert before['dev_eval'] <= TOL, before
    assert before['dev_train'] <= TOL, before
    after = rep['after']
    # the student's own statistics were tracked through training
    assert after['student_stats'] == n and after['student_stats_moved'] == n


def test_sync_bn_config_trains_in_one_process(tmp_path):
    """norm_cfg=SyncBN, no launcher: the Runner's revert_sync_batchnorm gives T_d
    carried _BatchNormXd's (not plain ones) and S plain ones; T_d(x) == S(x)."""
    cfg = write_cfg(tmp_path / 'cfg.py')
    work = tmp_path / 'one'
    run([sys.executable, osp.join(TOOLS, 'train.py'), cfg, '--work-dir', str(work)])
    check_exact_after_wrap(report(work), 'CarriedBatchNormXd', '_BatchNormXd')
    assert (work / 'student_latest.pth').is_file()


@pytest.mark.slow
@pytest.mark.parametrize('norm', ['BN', 'SyncBN'])
def test_sync_bn_torch_under_two_gloo_processes(tmp_path, norm):
    """cfg.sync_bn='torch' under DDP: T_d's carried norms become carried SyncBNs,
    S's SyncBNs; T_d(x) == S(x) after wrapping, training runs, and the batch
    statistics are synchronised (both ranks hold the same running statistics
    although each saw its own half of the batch)."""
    cfg = write_cfg(tmp_path / 'cfg.py', norm=norm, sync_bn='torch', batch_size=8)
    work = tmp_path / 'ddp'
    dist_train(cfg, work, 2, PORT=free_port())
    r0, r1 = report(work, 0), report(work, 1)
    for rep in (r0, r1):
        check_exact_after_wrap(rep, 'CarriedSyncBatchNorm', 'SyncBatchNorm')
        assert rep['before']['wrapped'] == 'MMDistributedDataParallel'
    b0, b1 = r0['after']['buffers'], r1['after']['buffers']
    assert b0.keys() == b1.keys() and any('student_running' in k for k in b0)
    for k in b0:
        assert b0[k] == pytest.approx(b1[k], rel=1e-4, abs=1e-6), k
