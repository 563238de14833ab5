"""The pinned OpenMMLab stack imports and runs on CPU (no download)."""
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope


def test_mmcv_nms_matches_torchvision_on_cpu():
    """mmcv's compiled NMS (mmcv._ext) runs on CPU and agrees with torchvision."""
    from mmcv.ops import nms
    from torchvision.ops import nms as tv_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.rand(200, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=g)
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # mmcv uses the "+0 offset" area convention, as torchvision does.
    expected = tv_nms(boxes, scores, 0.5)
    assert keep.device.type == 'cpu'
    assert 0 < len(keep) < 200
    assert torch.equal(keep.sort().values, expected.sort().values)
    assert torch.allclose(dets[:, 4], scores[keep])


def test_mmpretrain_resnet18_classifier_forward_on_cpu():
    """An mmpretrain ResNet-18 ImageClassifier from its own config runs all modes."""
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    cfg = get_config('mmpretrain::resnet/resnet18_8xb32_in1k.py')
    cfg.model.head.num_classes = 10
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        preds = model(x, mode='predict')
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert [p.pred_label.item() for p in preds] == logits.argmax(1).tolist()

    model.train()
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(7)]
    losses = model(x, samples, mode='loss')
    assert set(losses) == {'loss'}
    losses['loss'].backward()
    assert model.backbone.conv1.weight.grad is not None


def _synthetic_det_batch():
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    img = torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(
        img_shape=(128, 160), ori_shape=(128, 160), pad_shape=(128, 160),
        scale_factor=(1.0, 1.0), batch_input_shape=(128, 160)))
    gt = InstanceData()
    gt.bboxes = torch.tensor([[10., 20., 70., 90.], [80., 30., 150., 120.]])
    gt.labels = torch.tensor([1, 5])
    sample.gt_instances = gt
    return dict(inputs=[img], data_samples=[sample])


def test_mmdet_retinanet_r18_loss_and_predict_on_cpu():
    """mmdet RetinaNet-R18 (backbone init_cfg=None) computes losses and predicts."""
    from mmdet.registry import MODELS

    cfg = get_config('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None  # nothing may be downloaded
    # Untrained scores sit near the 0.01 prior: keep them so NMS has work to do.
    cfg.model.test_cfg.score_thr = 0.0
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()

    model.train()
    data = model.data_preprocessor(_synthetic_det_batch(), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    total = sum(v if torch.is_tensor(v) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()

    model.eval()
    data = model.data_preprocessor(_synthetic_det_batch(), training=False)
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4
    assert len(pred.bboxes) == len(pred.scores) == len(pred.labels) > 0
    assert len(pred.bboxes) <= cfg.model.test_cfg.max_per_img
    assert (pred.labels < 80).all()
