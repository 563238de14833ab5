"""GPD* for mmdet's RetinaNet-RegNetX-800MF-FPN (a non-ResNet backbone) on the
generated shapes set through ``tools/train.py`` (3 iterations), then
``tools/extract_student.py`` on the config the run wrote, and the student in
plain mmdet: ``init_detector``, the GPD student's raw outputs, mmdet's own test
loop with the run's student mAP."""
import os.path as osp
import sys

import pytest
import torch

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
NAME = 'retinanet_regnetx-800MF_fpn_shapes'
CFG = osp.join(REPO_ROOT, 'configs/gpd_det', f'{NAME}.py')
CLASSES = ('square', 'circle', 'triangle', 'cross')


def quick_options(root):
    """6 train / 2 val 64x64 shapes images, batch 2, one epoch (3 iterations),
    detections from step 1 (score threshold 0)."""
    root = root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val.json'
    opts = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.logger.interval=1',
            'model.architecture.test_cfg.score_thr=0.0',
            f'val_evaluator.metric.ann_file={ann}',
            f'test_evaluator.metric.ann_file={ann}']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.batch_size=2',
                 f'{loader}.dataset.data_root={root}',
                 f'{loader}.dataset.num_train=6',
                 f'{loader}.dataset.num_val=2',
                 f'{loader}.dataset.img_size=64']
    return opts


def test_regnet_detector_trains_extracts_and_loads_in_mmdet(tmp_path_factory):
    import extract_student as extract_tool
    import train as train_tool
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmgpd.models.export import load_gpd
    from mmgpd.reparam import max_relative_deviation
    torch.set_num_threads(1)
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64')
    work = tmp_path_factory.mktemp('regnet_train')

    # 1. tools/train.py: 3 iterations of GPD*, validation of S and T_d
    runner = train_tool.main([CFG, '--work-dir', str(work), '--cfg-options',
                              *quick_options(root)])
    assert (runner.epoch, runner.iter) == (1, 3)
    hub = runner.message_hub
    assert torch.isfinite(torch.tensor(hub.get_scalar('train/loss').current()))
    assert {'train/loss_student_cls', 'train/loss_student_bbox',
            'train/loss_dynamic_teacher_cls', 'train/loss_gap',
            'train/loss_feat_dynamic_to_student', 'val/coco/bbox_mAP',
            'val/gpd/bbox_mAP_dynamic_teacher', 'val/gpd/gap_dynamic'
            } <= set(hub.log_scalars)
    run_map = hub.get_scalar('val/coco/bbox_mAP').current()
    teacher = runner.model.dynamic_teacher
    assert type(teacher.backbone).__name__ == 'RegNet'
    assert teacher.backbone.layer1[0].conv2.in_channels == 128  # 2 x 64
    assert (work / 'epoch_1.pth').is_file()
    assert (work / 'student_latest.pth').is_file()

    # 2. tools/extract_student.py on the config the run dumped
    dumped = str(work / f'{NAME}.py')
    out = work / 'student'
    result = extract_tool.main([dumped, str(work / 'epoch_1.pth'),
                                '--out', str(out)])
    assert result['deviation'] <= 1e-5
    assert 'mmgpd' not in (out / 'student.py').read_text()

    # 3. plain mmdet: the student's widths, weights and raw outputs
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES
    plain = init_detector(str(out / 'student.py'), str(out / 'student.pth'),
                          device='cpu')
    assert type(plain).__name__ == 'RetinaNet'
    assert type(plain.backbone).__name__ == 'RegNet'
    assert plain.backbone.layer1[0].conv2.in_channels == 64
    assert tuple(plain.dataset_meta['classes']) == CLASSES
    for key, value in plain.state_dict().items():
        assert torch.equal(value, ckpt['state_dict'][key]), key
    gpd, _ = load_gpd(Config.fromfile(dumped), str(work / 'epoch_1.pth'))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = gpd.student.eval()(x, mode='tensor')
        got = plain.eval()(x, mode='tensor')
    flat = [t for level in ref for t in level]
    assert max_relative_deviation([t for level in got for t in level],
                                  flat) <= 1e-5

    # mmdet's own test loop on the plain config: the run's student mAP
    test_cfg = Config.fromfile(str(out / 'student.py'))
    test_cfg.work_dir = str(work / 'test')
    test_cfg.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(test_cfg).test()
    assert metrics['coco/bbox_mAP'] == pytest.approx(run_map, abs=1e-6)
