"""GPD two-stage detectors through tools/train.py on a tiny generated shapes
set, then tools/extract_student.py: a plain mmdet config + weights whose
mmdet test loop gives the run's student mAP and that mmdet's DetInferencer
loads, with the run's student detections.

* ``faster-rcnn_r18_fpn_shapes.py``: boxes (bbox mAP);
* ``mask-rcnn_r18_fpn_shapes.py``: the set's exact instance masks too (bbox
  and segm mAP, both reproduced by the extracted student).

Default: 6 train / 2 val 64² images, 3 epochs (seconds); the ``slow``
variant: 24 / 8 images, 30 epochs (mAP@0.5 > 0 asserted)."""
import copy
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
CLASSES = ('square', 'circle', 'triangle', 'cross')
#: config -> (plain mmdet type, metrics evaluated)
DETECTORS = {
    'faster-rcnn_r18_fpn_shapes': ('FasterRCNN', ('bbox', )),
    'mask-rcnn_r18_fpn_shapes': ('MaskRCNN', ('bbox', 'segm')),
}
#: (train images, val images, epochs)
SIZES = {'quick': (6, 2, 3), 'long': (24, 8, 30)}


def tiny_cfg(name, root, work, num_train=6, num_val=2, epochs=1):
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/gpd_det/{name}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = copy.deepcopy(cfg[key])
        loader.batch_size = 2
        loader.dataset.update(data_root=root, num_train=num_train,
                              num_val=num_val, img_size=64)
        cfg[key] = loader
    cfg.val_evaluator.metric.ann_file = osp.join(
        root, 'annotations/instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator
    # detections from step 1 (an untrained RPN / RoI head scores ~uniform)
    cfg.model.architecture.test_cfg.rcnn.score_thr = 0.0
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                         val_interval=epochs)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=epochs)
    cfg.work_dir = str(work)
    return cfg


def _train(tmp_path_factory, name, size):
    import train
    num_train, num_val, epochs = SIZES[size]
    root = str(tmp_path_factory.getbasetemp() /
               f'shapes_{num_train}_{num_val}_64_two_stage')
    work = tmp_path_factory.mktemp(f'{name}_{size}')
    cfg_path = str(work / 'gpd.py')
    tiny_cfg(name, root, work, num_train, num_val, epochs).dump(cfg_path)
    runner = train.main([cfg_path])
    scalars = runner.message_hub.log_scalars
    metrics = {k[len('val/'):]: v.current() for k, v in scalars.items()
               if k.startswith('val/')}
    return dict(name=name, cfg_path=cfg_path, work=work, runner=runner,
                metrics=metrics, epochs=epochs)


@pytest.fixture(scope='module', params=[
    pytest.param((n, 'quick'), id=f'{n}-quick') for n in DETECTORS] + [
    pytest.param((n, 'long'), id=f'{n}-long', marks=pytest.mark.slow)
    for n in DETECTORS])
def two_stage_run(request, tmp_path_factory):
    return _train(tmp_path_factory, *request.param)


def test_gpd_two_stage_trains_through_tools_train(two_stage_run):
    runner, metrics = two_stage_run['runner'], two_stage_run['metrics']
    kind, evaluated = DETECTORS[two_stage_run['name']]
    keys = set(runner.message_hub.log_scalars)
    terms = ['loss_student_rpn_cls', 'loss_student_cls',
             'loss_dynamic_teacher_rpn_cls', 'loss_dynamic_teacher_bbox',
             'loss_gap', 'loss_gap_roi', 'loss_feat_dynamic_to_student']
    if 'segm' in evaluated:
        terms += ['loss_student_mask', 'loss_dynamic_teacher_mask',
                  'loss_gap_mask']
    for term in terms:
        assert f'train/{term}' in keys, term
    assert torch.isfinite(torch.tensor(
        runner.message_hub.get_scalar('train/loss').current()))
    for key in ('gpd/bbox_mAP_student', 'gpd/bbox_mAP_dynamic_teacher'):
        assert key in metrics
    for what in evaluated:
        assert f'coco/{what}_mAP' in metrics
        assert f'dynamic_teacher/coco/{what}_mAP' in metrics
    td = runner.model.dynamic_teacher
    assert td.roi_head.bbox_roi_extractor.out_channels == 128
    if 'segm' in evaluated:  # the mask head widened, its logits not
        head = td.roi_head.mask_head
        assert head.convs[0].conv.out_channels == 128
        assert head.conv_logits.in_channels == 128
        assert head.conv_logits.out_channels == len(CLASSES)
    assert osp.isfile(two_stage_run['work'] / 'student_latest.pth')


def test_extracted_two_stage_round_trips_through_mmdet(two_stage_run,
                                                       tmp_path):
    import extract_student
    from mmengine.runner import Runner
    kind, evaluated = DETECTORS[two_stage_run['name']]
    work, run_metrics = two_stage_run['work'], two_stage_run['metrics']
    out = tmp_path / 'student'
    result = extract_student.main([
        two_stage_run['cfg_path'],
        str(work / f'epoch_{two_stage_run["epochs"]}.pth'), '--out', str(out)
    ])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and f"type='{kind}'" in text
    plain = Config.fromfile(str(out / 'student.py'))
    plain.work_dir = str(tmp_path / 'test')
    plain.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(plain).test()
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        run_metrics['gpd/bbox_mAP_student'], abs=1e-6)
    if two_stage_run['epochs'] >= 30:  # a run long enough to detect
        for what in evaluated:
            assert run_metrics[f'coco/{what}_mAP_50'] > 0
    # (the quick run's mAP may be 0: the detections themselves are compared
    # below, top 20 per image, scores / boxes / labels / masks)
    for what in evaluated:
        for key in (f'coco/{what}_mAP', f'coco/{what}_mAP_50',
                    f'coco/{what}_mAP_75'):
            assert metrics[key] == pytest.approx(run_metrics[key], abs=1e-6)
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES
    masks_seen = _same_detections(two_stage_run['runner'], out)
    if 'segm' in evaluated:
        assert masks_seen > 0  # compared masks that are not empty


def _same_detections(runner, out):
    """The GPD run's student (its predict, on the validation images) and the
    extracted plain detector loaded by mmdet's ``DetInferencer`` (config +
    weights, classes from the checkpoint) give the same detections: scores
    and boxes to 1e-4 / 1e-3, labels equal, masks (Mask R-CNN) pixel for pixel
    but for rounding flips at the 0.5 mask threshold (>= 99.9 % of the pixels
    of every mask). Returns how many compared masks are non-empty."""
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=str(out / 'student.py'),
                               weights=str(out / 'student.pth'), device='cpu',
                               show_progress=False)
    assert tuple(inferencer.model.dataset_meta['classes']) == CLASSES
    state = torch.load(out / 'student.pth', weights_only=True)['state_dict']
    for key, value in inferencer.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model = runner.model
    model.eval()
    masks_seen = 0
    for data in runner.val_dataloader:
        with torch.no_grad():
            gpd_samples = model.test_step(data)
        for sample in gpd_samples:
            ours = sample.pred_instances
            theirs = inferencer(sample.img_path, return_datasamples=True)[
                'predictions'][0].pred_instances
            k = min(20, len(ours))
            assert k > 0 and len(theirs) >= k
            torch.testing.assert_close(theirs.scores[:k], ours.scores[:k],
                                       atol=1e-4, rtol=0)
            torch.testing.assert_close(theirs.bboxes[:k], ours.bboxes[:k],
                                       atol=1e-3, rtol=0)
            assert torch.equal(theirs.labels[:k], ours.labels[:k])
            assert ('masks' in theirs) == ('masks' in ours)
            if 'masks' in ours:
                agree = (theirs.masks[:k] == ours.masks[:k]).float().mean(
                    (1, 2))
                assert agree.min() >= 0.999, agree
                masks_seen += int(ours.masks[:k].any(-1).any(-1).sum())
    return masks_seen
