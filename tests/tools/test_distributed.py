"""torch.distributed on CPU (gloo, loopback): dist_train.sh / dist_test.sh, resume."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ..conftest import REPO_ROOT

TOOLS = osp.join(REPO_ROOT, 'tools')
GPD_CFG = osp.join(REPO_ROOT, 'configs/gpd/resnet_digits.py')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def env(**extra):
    e = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
             MASTER_ADDR='127.0.0.1')
    e.pop('CUDA_VISIBLE_DEVICES', None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def write_cfg(path, batch_size, epochs=1, indices=64):
    path.write_text(f'''
_base_ = [{GPD_CFG!r}]
custom_imports = dict(imports=['tests.tools.dist_helpers'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='mmgpd.GPDHook'), dict(type='DumpRankState')]
train_dataloader = dict(batch_size={batch_size}, dataset=dict(indices={indices}))
val_dataloader = dict(dataset=dict(indices=64))
test_dataloader = dict(dataset=dict(indices=64))
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=True)
''')
    return str(path)


def run(cmd, timeout=600, **extra):
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env(**extra), capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def dist_train(cfg, work_dir, nproc, **extra):
    return run(['bash', osp.join(TOOLS, 'dist_train.sh'), cfg, str(nproc),
                '--work-dir', str(work_dir)], **extra)


def rank_state(work_dir, rank):
    return torch.load(osp.join(work_dir, f'rank{rank}.pth'))


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """2 processes × 16 images = a global batch of 32, 2 iterations."""
    tmp = tmp_path_factory.mktemp('ddp')
    cfg = write_cfg(tmp / 'cfg16.py', batch_size=16)
    dist_train(cfg, tmp / 'ddp', 2, PORT=free_port())
    return tmp, cfg


def test_two_processes_stay_in_sync_and_match_one_process(ddp_run):
    tmp, _ = ddp_run
    r0, r1 = rank_state(tmp / 'ddp', 0), rank_state(tmp / 'ddp', 1)
    assert r0['params'].keys() == r1['params'].keys()
    for k in r0['params']:  # gradients all-reduced: identical parameters
        assert torch.equal(r0['params'][k], r1['params'][k]), k
    # One process with the same global batch (32): the mean of the ranks'
    # first-iteration losses matches within 2 % (BN statistics are per rank:
    # 16 images each instead of 32).
    cfg32 = write_cfg(tmp / 'cfg32.py', batch_size=32)
    run([sys.executable, osp.join(TOOLS, 'train.py'), cfg32, '--work-dir',
         str(tmp / 'single')])
    single = rank_state(tmp / 'single', 0)
    ddp_loss = (r0['losses'][0] + r1['losses'][0]) / 2
    assert abs(ddp_loss - single['losses'][0]) <= 0.02 * single['losses'][0]
    assert len(r0['losses']) == len(single['losses']) == 2


def test_two_nodes_one_process_each(ddp_run, tmp_path):
    tmp, cfg = ddp_run
    port = free_port()
    procs = [subprocess.Popen(
        ['bash', osp.join(TOOLS, 'dist_train.sh'), cfg, '1', '--work-dir',
         str(tmp_path / 'nodes')], cwd=REPO_ROOT,
        env=env(NNODES=2, NODE_RANK=rank, PORT=port),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    n0, n1 = rank_state(tmp_path / 'nodes', 0), rank_state(tmp_path / 'nodes', 1)
    one_node = rank_state(tmp / 'ddp', 0)
    for k in n0['params']:  # the two nodes agree, and with 2 processes on 1 node
        assert torch.equal(n0['params'][k], n1['params'][k]), k
        assert torch.equal(n0['params'][k], one_node['params'][k]), k


def test_dist_test_matches_test(ddp_run, tmp_path):
    tmp, cfg = ddp_run
    ckpt = str(tmp / 'ddp' / 'epoch_1.pth')
    run([sys.executable, osp.join(TOOLS, 'test.py'), cfg, ckpt, '--work-dir',
         str(tmp_path / 'one'), '--out', str(tmp_path / 'one.json')])
    run(['bash', osp.join(TOOLS, 'dist_test.sh'), cfg, ckpt, '2', '--work-dir',
         str(tmp_path / 'two'), '--out', str(tmp_path / 'two.json')],
        PORT=free_port())
    one = json.loads((tmp_path / 'one.json').read_text())
    two = json.loads((tmp_path / 'two.json').read_text())
    assert one['accuracy/top1'] == pytest.approx(two['accuracy/top1'])


def test_sigkill_then_resume_reaches_the_same_weights(tmp_path):
    cfg = write_cfg(tmp_path / 'cfg.py', batch_size=16, epochs=4)
    train = [sys.executable, osp.join(TOOLS, 'train.py'), cfg, '--work-dir']
    run(train + [str(tmp_path / 'straight')])

    work = tmp_path / 'killed'
    proc = subprocess.Popen(train + [str(work)], cwd=REPO_ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = work / 'last_checkpoint'
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and last.read_text().strip().endswith('epoch_2.pth'):
            break
        time.sleep(0.02)
    assert proc.poll() is None, 'training finished before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / 'epoch_4.pth').exists()
    run(train + [str(work), '--resume'])
    straight = rank_state(tmp_path / 'straight', 0)
    resumed = rank_state(work, 0)
    # the resumed run trained epochs 3-4 only: 2 epochs × 4 iterations
    assert len(resumed['losses']) == 8 and len(straight['losses']) == 16
    assert straight['losses'][8:] == resumed['losses']
    for k in straight['params']:
        assert torch.equal(straight['params'][k], resumed['params'][k]), k
