"""tools/train.py and tools/test.py (mmpretrain's CLI) on the digits GPD config."""
import json
import os.path as osp
import sys

import pytest

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
CFG = osp.join(REPO_ROOT, 'configs/gpd/resnet_digits.py')
QUICK = ['train_dataloader.dataset.indices=64', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=1', 'val_dataloader.dataset.indices=64']


def test_train_then_test_gpd(tmp_path):
    import test as test_tool
    import train as train_tool
    runner = train_tool.main([CFG, '--work-dir', str(tmp_path), '--cfg-options',
                              *QUICK])
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.is_file() and (tmp_path / 'student_latest.pth').is_file()
    val_acc = runner.message_hub.get_scalar('val/accuracy/top1').current()
    out = tmp_path / 'metrics.json'
    metrics = test_tool.main([CFG, str(ckpt), '--work-dir', str(tmp_path / 't'),
                              '--out', str(out), '--cfg-options',
                              'test_dataloader.dataset.indices=64'])
    assert metrics['accuracy/top1'] == pytest.approx(val_acc)
    assert json.loads(out.read_text())['accuracy/top1'] == pytest.approx(val_acc)
    # --resume picks up the full training checkpoint (compat loader)
    resumed = train_tool.main([CFG, '--work-dir', str(tmp_path), '--resume',
                               '--cfg-options', *QUICK[:1],
                               'train_cfg.max_epochs=2', 'train_cfg.val_interval=1',
                               QUICK[3]])
    assert resumed.epoch == 2


def test_missing_config_is_a_clear_error(tmp_path):
    import train as train_tool
    with pytest.raises(SystemExit, match='no_such.py'):
        train_tool.main([str(tmp_path / 'no_such.py')])
