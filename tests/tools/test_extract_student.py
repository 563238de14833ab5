"""tools/extract_student.py: plain students that vanilla mmpretrain / mmdet load."""
import copy
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
CFG = osp.join(REPO_ROOT, 'configs/gpd/resnet_digits.py')
BASE_DATA = osp.join(REPO_ROOT, 'configs/_base_/datasets/digits.py')


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
    """One short GPD run on digits: (work dir, the student's val accuracy)."""
    import train as train_tool
    work = tmp_path_factory.mktemp('gpd_run')
    runner = train_tool.main([
        CFG, '--work-dir', str(work), '--cfg-options',
        'train_dataloader.dataset.indices=128', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1'])
    acc = runner.message_hub.get_scalar('val/gpd/acc_student').current()
    return work, acc


def extract(*args):
    import extract_student
    return extract_student.main([str(a) for a in args])


def test_extracted_student_round_trips_through_mmpretrain(digits_run, tmp_path):
    work, gpd_acc = digits_run
    out = tmp_path / 'student'
    result = extract(CFG, work / 'epoch_1.pth', '--out', out)
    assert result['deviation'] <= 1e-5
    assert sorted(os.listdir(out)) == ['student.pth', 'student.py']
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and '_base_' not in text
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}

    # mmpretrain's own API builds it and predicts like the GPD run's student.
    from mmpretrain.apis import get_model

    from mmgpd.models.export import load_gpd
    model = get_model(str(out / 'student.py'), pretrained=str(out / 'student.pth'))
    gpd, _ = load_gpd(Config.fromfile(CFG), str(work / 'epoch_1.pth'))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = gpd.student(x, mode='tensor')
        got = model.eval()(x, mode='tensor')
    assert torch.equal(ref.argmax(1), got.argmax(1))
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)

    # mmpretrain's test loop with load_from reports the run's student accuracy.
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(out / 'student.py'))
    data = Config.fromfile(BASE_DATA)
    cfg.test_dataloader = data.test_dataloader  # the digits data is mmgpd's
    cfg.test_evaluator = data.test_evaluator
    cfg.test_cfg = dict()
    cfg.work_dir = str(tmp_path / 'test')
    cfg.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(cfg).test()
    assert metrics['accuracy/top1'] == pytest.approx(gpd_acc)


def test_dynamic_teacher_source_and_force(digits_run, tmp_path):
    work, _ = digits_run
    out = tmp_path / 'student'
    extract(CFG, work / 'epoch_1.pth', '--out', out)
    before = (out / 'student.pth').stat().st_mtime_ns
    with pytest.raises(SystemExit, match='exists'):
        extract(CFG, work / 'epoch_1.pth', '--out', out)
    assert (out / 'student.pth').stat().st_mtime_ns == before
    res = extract(CFG, work / 'epoch_1.pth', '--out', out, '--source',
                  'dynamic_teacher', '--force')
    assert res['deviation'] <= 1e-5
    meta = torch.load(out / 'student.pth', weights_only=True)['meta']
    assert meta['source'] == 'dynamic_teacher'


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.student')]


@pytest.mark.parametrize('case', ['not_a_checkpoint', 'truncated',
                                  'other_config', 'no_gpd_state', 'ema_missing'])
def test_bad_input_is_refused_and_nothing_is_written(case, digits_run, tmp_path):
    work, _ = digits_run
    ckpt, cfg, extra = work / 'epoch_1.pth', CFG, []
    if case == 'not_a_checkpoint':
        ckpt = tmp_path / 'notes.txt'
        ckpt.write_text('hello')
        match = 'not a readable PyTorch checkpoint'
    elif case == 'truncated':
        ckpt = tmp_path / 'cut.pth'
        ckpt.write_bytes((work / 'epoch_1.pth').read_bytes()[:5000])
        match = 'not a readable PyTorch checkpoint'
    elif case == 'other_config':
        other = Config.fromfile(CFG)
        other.model.distiller.ratio = 3
        cfg = tmp_path / 'ratio3.py'
        other.dump(str(cfg))
        match = 'does not match'
    elif case == 'no_gpd_state':
        ckpt = work / 'student_latest.pth'
        match = 'no GPD state'
    else:
        extra = ['--ema']
        match = 'no EMA'
    out = tmp_path / 'student'
    with pytest.raises(SystemExit, match=match):
        extract(cfg, ckpt, '--out', out, *extra)
    _assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize('backbone_type', ['ResNet', 'mmpretrain.ResNet'])
def test_backbone_initialises_an_mmdet_detector(backbone_type, tmp_path):
    """An ImageNet-style GPD student's backbone -> mmdet RetinaNet via init_cfg."""
    from mmengine.hub import get_config

    from mmgpd.registry import MODELS
    gpd_cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/gpd/resnet18_in1k_scratch.py'))
    gpd_cfg.model.distiller.branches = True
    init_default_scope('mmpretrain')
    gpd = MODELS.build(copy.deepcopy(gpd_cfg.model))
    cfg_path = tmp_path / 'gpd.py'
    gpd_cfg.dump(str(cfg_path))
    torch.save({'state_dict': gpd.state_dict(), 'meta': {}}, tmp_path / 'ckpt.pth')
    out = tmp_path / 'student'
    extract(cfg_path, tmp_path / 'ckpt.pth', '--out', out)
    student = torch.load(out / 'student.pth', weights_only=True)['state_dict']
    backbone = {k[len('backbone.'):]: v for k, v in student.items()
                if k.startswith('backbone.')}

    det = get_config('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py').model
    det.backbone = dict(type=backbone_type, depth=18, out_indices=(1, 2, 3),
                        init_cfg=dict(type='Pretrained', prefix='backbone.',
                                      checkpoint=str(out / 'student.pth')))
    if backbone_type == 'ResNet':
        det.backbone.update(norm_eval=True, style='pytorch')
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as DET_MODELS
    detector = DET_MODELS.build(det)
    detector.init_weights()
    loaded = detector.backbone.state_dict()
    weights = {k: v for k, v in loaded.items() if 'num_batches_tracked' not in k}
    assert set(weights) <= set(backbone)
    assert len(weights) == len([k for k in backbone if 'num_batches' not in k])
    for k, v in weights.items():
        assert torch.equal(v, backbone[k]), k


def test_ema_weights(tmp_path):
    """A run with mmengine's EMAHook: --ema gives the averaged student."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(CFG)
    cfg.work_dir = str(tmp_path / 'run')
    cfg.train_dataloader.dataset.indices = 192  # 3 iterations: EMA != raw
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.5, priority='NORMAL'),
                        dict(type='mmgpd.GPDHook')]
    Runner.from_cfg(cfg).train()
    ckpt = tmp_path / 'run' / 'epoch_1.pth'
    raw, ema = tmp_path / 'raw', tmp_path / 'ema'
    assert extract(CFG, ckpt, '--out', raw)['deviation'] <= 1e-5
    assert extract(CFG, ckpt, '--out', ema, '--ema')['deviation'] <= 1e-5
    w_raw = torch.load(raw / 'student.pth', weights_only=True)['state_dict']
    w_ema = torch.load(ema / 'student.pth', weights_only=True)['state_dict']
    key = 'backbone.conv1.weight'
    assert not torch.equal(w_raw[key], w_ema[key])
    full = torch.load(ckpt, weights_only=False)
    from mmgpd.models.export import training_state
    assert torch.equal(training_state(full, str(ckpt), ema=True)[
        'distiller.dynamic_teacher.backbone.conv1.weight'],
        full['state_dict']['distiller.dynamic_teacher.backbone.conv1.weight'])
