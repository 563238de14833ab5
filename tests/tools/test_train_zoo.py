"""GPD* trains through ``tools/train.py`` on digits with students from the
widened zoo (SE gates, ConvNeXt, Swin, ShuffleNetV2, DenseNet), and the
extracted students round-trip through ``tools/extract_student.py`` and
``mmpretrain.apis.get_model``."""
import os.path as osp
import sys

import pytest
import torch

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
QUICK = ['train_dataloader.dataset.indices=64', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=1', 'val_dataloader.dataset.indices=64',
         'train_dataloader.batch_size=16', 'val_dataloader.batch_size=16']
CONFIGS = ['mobilenet-v3-small_digits', 'convnext-atto_digits', 'swin-w4_digits',
           'shufflenet-v2_digits', 'densenet_digits']
ROUND_TRIP = ('mobilenet-v3-small_digits', 'convnext-atto_digits')


def _cfg(name):
    return osp.join(REPO_ROOT, 'configs/gpd', f'{name}.py')


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_gpd_trains_and_extracts(name, tmp_path):
    import train as train_tool
    torch.set_num_threads(1)
    runner = train_tool.main([_cfg(name), '--work-dir', str(tmp_path),
                              '--cfg-options', *QUICK])
    assert runner.epoch == 1
    assert (tmp_path / 'student_latest.pth').is_file()
    assert (tmp_path / 'epoch_1.pth').is_file()
    teacher = runner.model.distiller.dynamic_teacher
    assert teacher.gpd_plan.ratio == 2 and teacher.gpd_plan.widened
    if name not in ROUND_TRIP:
        return
    import extract_student as extract_tool
    from mmengine.config import Config
    from mmpretrain.apis import get_model

    from mmgpd.models.export import load_gpd
    out = tmp_path / 'student'
    result = extract_tool.main([_cfg(name), str(tmp_path / 'epoch_1.pth'),
                                '--out', str(out)])
    assert result['deviation'] <= 1e-5
    plain = get_model(str(out / 'student.py'),
                      pretrained=str(out / 'student.pth'))
    gpd, _ = load_gpd(Config.fromfile(_cfg(name)), str(tmp_path / 'epoch_1.pth'))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = gpd.student(x, mode='tensor')
        got = plain.eval()(x, mode='tensor')
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)
