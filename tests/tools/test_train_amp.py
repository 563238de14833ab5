"""tools/train.py --amp on the digits GPD config: ``mmgpd.AmpOptimWrapper``
(CPU autocast in bfloat16 without a GPU) trains with finite losses; T_d's
parameters stay fp32 and the loss scaler holds a finite scale."""
import os.path as osp
import sys

import pytest
import torch

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
CFG = osp.join(REPO_ROOT, 'configs/bench/digits_gpd.py')
# 3 iterations of 16 images, no validation, a log line per iteration
QUICK = ['--no-validate', '--cfg-options', 'train_dataloader.dataset.indices=48',
         'train_dataloader.batch_size=16', 'train_cfg.max_epochs=1',
         'default_hooks.logger.interval=1']


def test_amp_bf16_trains_gpd_on_cpu(tmp_path):
    import train as train_tool
    runner = train_tool.main([CFG, '--amp', '--amp-dtype', 'bfloat16',
                              '--work-dir', str(tmp_path), *QUICK])
    ow = runner.optim_wrapper
    assert type(ow).__name__ == 'AmpOptimWrapper'
    assert ow.cast_dtype == torch.bfloat16
    assert runner.iter == 3
    hub = runner.message_hub
    for key in ('loss', 'loss_student', 'loss_dynamic_teacher', 'loss_gap'):
        history = hub.get_scalar(f'train/{key}').data[0]
        assert len(history) == 3 and all(map(torch.isfinite,
                                             torch.tensor(history))), key
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())
    assert torch.isfinite(torch.tensor(ow.loss_scaler.get_scale()))


def test_amp_dtype_errors(tmp_path):
    import train as train_tool
    with pytest.raises(SystemExit, match='--amp-dtype needs --amp'):
        train_tool.main([CFG, '--amp-dtype', 'bfloat16',
                         '--work-dir', str(tmp_path)])
    if torch.cuda.is_available():
        return
    with pytest.raises(ValueError, match='optim_wrapper.dtype'):
        train_tool.main([CFG, '--amp', '--amp-dtype', 'float16',
                         '--work-dir', str(tmp_path), *QUICK])
