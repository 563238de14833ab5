"""A GPD Faster R-CNN (configs/gpd_det/faster-rcnn_r18_fpn_shapes.py) through
tools/train.py on a tiny generated shapes set (6 train / 2 val 64² images, one
epoch), then tools/extract_student.py: a plain mmdet config + weights whose
mmdet test loop gives the run's student mAP."""
import copy
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
NAME = 'faster-rcnn_r18_fpn_shapes'
CLASSES = ('square', 'circle', 'triangle', 'cross')


def tiny_cfg(root, work):
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{NAME}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = copy.deepcopy(cfg[key])
        loader.batch_size = 2
        loader.dataset.update(data_root=root, num_train=6, num_val=2,
                              img_size=64)
        cfg[key] = loader
    cfg.val_evaluator.metric.ann_file = osp.join(
        root, 'annotations/instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator
    # detections from step 1 (an untrained RPN / RoI head scores ~uniform)
    cfg.model.architecture.test_cfg.rcnn.score_thr = 0.0
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1,
                         val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.work_dir = str(work)
    return cfg


@pytest.fixture(scope='module')
def two_stage_run(tmp_path_factory):
    import train
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64_two_stage')
    work = tmp_path_factory.mktemp('faster_run')
    cfg_path = str(work / 'gpd.py')
    tiny_cfg(root, work).dump(cfg_path)
    runner = train.main([cfg_path])
    scalars = runner.message_hub.log_scalars
    metrics = {k[len('val/'):]: v.current() for k, v in scalars.items()
               if k.startswith('val/')}
    return cfg_path, work, runner, metrics


def test_gpd_faster_rcnn_trains_through_tools_train(two_stage_run):
    _, work, runner, metrics = two_stage_run
    keys = set(runner.message_hub.log_scalars)
    for term in ('loss_student_rpn_cls', 'loss_student_cls',
                 'loss_dynamic_teacher_rpn_cls', 'loss_dynamic_teacher_bbox',
                 'loss_gap', 'loss_gap_roi', 'loss_feat_dynamic_to_student'):
        assert f'train/{term}' in keys, term
    assert torch.isfinite(torch.tensor(
        runner.message_hub.get_scalar('train/loss').current()))
    for key in ('gpd/bbox_mAP_student', 'gpd/bbox_mAP_dynamic_teacher',
                'coco/bbox_mAP'):
        assert key in metrics
    td = runner.model.dynamic_teacher
    assert td.roi_head.bbox_roi_extractor.out_channels == 128
    assert osp.isfile(work / 'student_latest.pth')


def test_extracted_faster_rcnn_round_trips_through_mmdet(two_stage_run,
                                                         tmp_path):
    import extract_student
    from mmengine.runner import Runner
    cfg_path, work, _, run_metrics = two_stage_run
    out = tmp_path / 'student'
    result = extract_student.main([cfg_path, str(work / 'epoch_1.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and "type='FasterRCNN'" in text
    plain = Config.fromfile(str(out / 'student.py'))
    plain.work_dir = str(tmp_path / 'test')
    plain.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(plain).test()
    assert run_metrics['coco/bbox_mAP_50'] > 0  # a comparison of something
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        run_metrics['gpd/bbox_mAP_student'], abs=1e-6)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert metrics[key] == pytest.approx(run_metrics[key], abs=1e-6)
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES
