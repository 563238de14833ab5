"""tools/extract_student.py on a GPD detector: a plain mmdet config + weights
that mmdet's own test loop and DetInferencer use, with the run's student mAP."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO_ROOT
from ..models.test_gpd_det import shapes_run_cfg

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
NAME = 'retinanet_r18_fpn_shapes'
CLASSES = ('square', 'circle', 'triangle', 'cross')


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    """One epoch of GPD on 6 shapes images: (config file, work dir, metrics)."""
    from mmengine.runner import Runner
    root = str(tmp_path_factory.getbasetemp() / 'shapes_6_2_64')
    work = tmp_path_factory.mktemp('det_run')
    cfg = shapes_run_cfg(NAME, root, work)
    cfg_path = str(work / 'gpd.py')
    cfg.dump(cfg_path)
    runner = Runner.from_cfg(Config.fromfile(cfg_path))
    runner.train()
    metrics = {k[len('val/'):]: v.current()
               for k, v in runner.message_hub.log_scalars.items()
               if k.startswith('val/coco/') or k.startswith('val/gpd/')}
    return cfg_path, work, metrics


def test_extracted_detector_round_trips_through_mmdet(det_run, tmp_path):
    import extract_student
    cfg_path, work, run_metrics = det_run
    out = tmp_path / 'student'
    result = extract_student.main([cfg_path, str(work / 'epoch_1.pth'),
                                   '--out', str(out)])
    assert result['deviation'] <= 1e-5
    text = (out / 'student.py').read_text()
    assert 'mmgpd' not in text and "type='CocoDataset'" in text
    ckpt = torch.load(out / 'student.pth', weights_only=True)
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES

    # mmdet's own test loop (no mmgpd type in the config): the run's student mAP
    from mmengine.runner import Runner
    plain = Config.fromfile(str(out / 'student.py'))
    plain.work_dir = str(tmp_path / 'test')
    plain.load_from = str(out / 'student.pth')
    metrics = Runner.from_cfg(plain).test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert metrics[key] == pytest.approx(run_metrics[key], abs=1e-6)
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        run_metrics['gpd/bbox_mAP_student'], abs=1e-6)

    # DetInferencer: classes from the checkpoint, weights loaded, detections
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=str(out / 'student.py'),
                               weights=str(out / 'student.pth'), device='cpu',
                               show_progress=False)
    assert tuple(inferencer.model.dataset_meta['classes']) == CLASSES
    for key, value in inferencer.model.state_dict().items():
        assert torch.equal(value, ckpt['state_dict'][key]), key
    root = Config.fromfile(cfg_path).val_dataloader.dataset.data_root
    img = osp.join(root, 'val', sorted(__import__('os').listdir(
        osp.join(root, 'val')))[0])
    pred = inferencer(img, return_datasamples=True)['predictions'][0]
    assert len(pred.pred_instances) > 0
    assert int(pred.pred_instances.labels.max()) < len(CLASSES)
