"""KCD + GPD and DPK + GPD per FPN level on the shapes set: tools/train.py (a
few iterations), tools/extract_student.py, and mmdet's own test loop on the
plain student."""
import copy
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..conftest import REPO_ROOT
from ..models.test_gpd_det import _no_download, shapes_run_cfg

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
LEVELS = ('fpn0', 'fpn1', 'fpn2', 'fpn3', 'fpn4')


@pytest.fixture(scope='module')
def det_teacher_ckpt(tmp_path_factory):
    """A (random-init) checkpoint of the baseline shapes detector (the static
    teacher these configs name)."""
    from mmgpd.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/baselines/'
                                   'retinanet_r18_fpn_shapes.py'))
    init_default_scope('mmdet')
    torch.manual_seed(1)
    teacher = MODELS.build(_no_download(copy.deepcopy(cfg.model)))
    teacher.init_weights()
    path = tmp_path_factory.mktemp('det_teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('method', ['kcd', 'dpk'])
def test_shapes_config_trains_extracts_and_tests_in_mmdet(
        method, det_teacher_ckpt, tmp_path_factory, tmp_path):
    import extract_student
    import train as train_tool
    from mmengine.runner import Runner
    name = f'retinanet_r18_fpn_shapes_{method}_gpd'
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64')
    work = tmp_path / 'run'
    cfg = shapes_run_cfg(name, root, work, det_teacher_ckpt)
    assert cfg.model.teacher_ckpt == det_teacher_ckpt
    cfg_path = str(tmp_path / f'{name}.py')
    cfg.dump(cfg_path)
    runner = train_tool.main([cfg_path, '--work-dir', str(work)])

    algorithm = runner.model
    hub = runner.message_hub
    keys = set(hub.log_scalars)
    for target in ('student', 'dynamic_teacher'):
        key = f'train/loss_{method}_to_{target}'
        assert key in keys
        assert torch.isfinite(torch.tensor(hub.get_scalar(key).current()))
        m = algorithm.distiller.methods[target]
        assert m.taps == LEVELS
        if method == 'kcd':  # one solved assignment per level, 64 <-> 64
            for level in LEVELS:
                match = m.matches[level]
                assert bool(match.solved)
                assert sorted(match.perm.tolist()) == list(range(64))
                assert f'kcd/{target}/{level}/matched_corr' in keys
        else:  # one encoder-decoder and π per level; T_d's side is C' wide
            width = 64 if target == 'student' else 128
            for level in LEVELS:
                assert m.blocks[level].embed_s.in_channels == width
                ratio = float(m.blocks[level].ratio)
                assert 0.0 <= ratio <= 0.95
                assert f'train/dpk_ratio_{level}_to_{target}' in keys
    assert {'train/loss_gap', 'train/loss_feat_dynamic_to_student'} <= keys
    run_metrics = {k[len('val/'):]: v.current() for k, v in hub.log_scalars.items()
                   if k.startswith('val/coco/') or k.startswith('val/gpd/')}
    assert 'gpd/bbox_mAP_static_teacher' in run_metrics

    out = tmp_path / 'student'
    result = extract_student.main([cfg_path, str(work / 'epoch_1.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and method.upper() not in text
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert not any('methods' in k or 'distiller' in k for k in ckpt['state_dict'])

    plain = Config.fromfile(str(out / 'student.py'))
    plain.work_dir = str(tmp_path / 'test')
    plain.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(plain).test()
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        run_metrics['gpd/bbox_mAP_student'], abs=1e-6)
    assert metrics['coco/bbox_mAP_50'] == pytest.approx(
        run_metrics['coco/bbox_mAP_50'], abs=1e-6)
