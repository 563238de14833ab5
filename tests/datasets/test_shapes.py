"""The generated shapes detection set (mmgpd.ShapesDataset) and its base."""
import json
import os
import os.path as osp
import threading

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmgpd.datasets import ShapesDataset, generate_shapes
from mmgpd.datasets import shapes as shapes_mod
from mmgpd.datasets.shapes import SHAPES_CLASSES, render_shapes_image

from ..conftest import REPO_ROOT

BASE_CFG = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                    'shapes_det.py')
SMALL = dict(num_train=12, num_val=6)


def _tree(root):
    """``{relative path: bytes}`` of every file under ``root``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


def _mtimes(root):
    return {
        osp.relpath(osp.join(d, n), root): os.stat(osp.join(d, n)).st_mtime_ns
        for d, _, names in os.walk(root) for n in names
    }


def _load(root, split):
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def _leftovers(parent):
    return [e for e in os.listdir(parent) if '.tmp-' in e or '.old-' in e]


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes') / 'shapes')
    info = generate_shapes(root, **SMALL)
    assert info['generated'] is True
    return root


def test_layout_and_meta(shapes_root):
    tree = _tree(shapes_root)
    assert sorted(k for k in tree if k.startswith('train')) == [
        osp.join('train', f'{i:06d}.png') for i in range(1, 13)
    ]
    assert len([k for k in tree if k.startswith('val')]) == 6
    meta = json.loads(tree['meta.json'])
    assert meta['num_train'] == 12 and meta['num_val'] == 6
    assert meta['img_size'] == 128 and meta['seed'] == 0
    assert meta['classes'] == list(SHAPES_CLASSES)
    assert meta['version'] == shapes_mod.SHAPES_VERSION
    for split in ('train', 'val'):
        assert meta['num_instances'][split] == len(
            _load(shapes_root, split)['annotations'])
    assert _leftovers(osp.dirname(shapes_root)) == []


def test_generation_is_deterministic(shapes_root, tmp_path):
    other = generate_shapes(tmp_path / 'again', **SMALL)
    assert other['generated'] is True
    assert _tree(other['root']) == _tree(shapes_root)
    # Image i of a split does not depend on the split's size ...
    bigger = _tree(generate_shapes(tmp_path / 'big', num_train=13,
                                   num_val=6)['root'])
    for name, data in _tree(shapes_root).items():
        if name.endswith('.png'):
            assert bigger[name] == data
    # ... and another seed draws other images.
    reseeded = _tree(generate_shapes(tmp_path / 'seed1', seed=1,
                                     **SMALL)['root'])
    assert reseeded[osp.join('train', '000001.png')] != _tree(shapes_root)[
        osp.join('train', '000001.png')]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_boxes_are_tight_around_the_drawn_pixels(shapes_root, split):
    coco = _load(shapes_root, split)
    anns_by_img = {}
    for ann in coco['annotations']:
        anns_by_img.setdefault(ann['image_id'], []).append(ann)
    n_objects = set()
    for info in coco['images']:
        img = mmcv.imread(osp.join(shapes_root, split, info['file_name']),
                          channel_order='rgb')
        assert img.dtype == np.uint8 and img.shape == (128, 128, 3)
        assert (info['height'], info['width']) == (128, 128)
        anns = anns_by_img[info['id']]
        n_objects.add(len(anns))

        # 1. The masks the generator drew: the written PNG is that image and
        #    every box is the tight box of its mask.
        ref_img, objects = render_shapes_image(0, split, info['id'] - 1, 128)
        np.testing.assert_array_equal(img, ref_img)
        assert len(objects) == len(anns)
        for ann, obj in zip(anns, objects):
            rows, cols = np.nonzero(obj['mask'])
            assert ann['bbox'] == [
                cols.min(), rows.min(),
                cols.max() - cols.min() + 1,
                rows.max() - rows.min() + 1
            ]
            assert ann['area'] == obj['mask'].sum()
            assert ann['category_id'] == obj['label'] + 1
            assert (img[obj['mask']] == obj['color']).all()
            assert 14 <= max(ann['bbox'][2:]) <= 56
        # Shapes never touch (>= 2 px apart): nothing is occluded.
        for i, a in enumerate(objects):
            for b in objects[i + 1:]:
                assert not (shapes_mod._dilate(a['mask'], 1) & b['mask']).any()

        # 2. From the PNG alone: the shape's colour (the most common colour
        #    in its box) touches all four sides of the box and is absent
        #    from the lines just outside it.
        for ann in anns:
            x, y, w, h = ann['bbox']
            crop = img[y:y + h, x:x + w].reshape(-1, 3)
            colors, counts = np.unique(crop, axis=0, return_counts=True)
            color = colors[counts.argmax()]
            assert counts.max() == ann['area']
            inside = (img == color).all(-1)
            assert inside[y, x:x + w].any() and inside[y + h - 1,
                                                       x:x + w].any()
            assert inside[y:y + h, x].any() and inside[y:y + h,
                                                       x + w - 1].any()
            if y > 0:
                assert not inside[y - 1, x:x + w].any()
            if y + h < 128:
                assert not inside[y + h, x:x + w].any()
            if x > 0:
                assert not inside[y:y + h, x - 1].any()
            if x + w < 128:
                assert not inside[y:y + h, x + w].any()
    assert n_objects <= {1, 2, 3, 4} and len(n_objects) > 1


def test_coco_json_loads_in_pycocotools(shapes_root):
    from pycocotools.coco import COCO
    for split, n_img in (('train', 12), ('val', 6)):
        coco = COCO(osp.join(shapes_root, 'annotations',
                             f'instances_{split}.json'))
        assert sorted(coco.getImgIds()) == list(range(1, n_img + 1))
        assert coco.getCatIds() == [1, 2, 3, 4]
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
            SHAPES_CLASSES)
        anns = coco.loadAnns(coco.getAnnIds())
        assert len({a['id'] for a in anns}) == len(anns) >= n_img
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert all(isinstance(v, int) for v in ann['bbox'])
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert 0 < ann['area'] <= w * h and ann['iscrowd'] == 0
            assert ann['image_id'] in coco.imgs


def test_second_call_is_a_no_op(shapes_root, monkeypatch):
    def fail(*args):
        raise AssertionError('regenerated a complete set')

    monkeypatch.setattr(shapes_mod, '_write_split', fail)
    before = _mtimes(shapes_root)
    info = generate_shapes(shapes_root, **SMALL)
    assert info['generated'] is False and info['root'] == shapes_root
    assert _mtimes(shapes_root) == before
    # The dataset's own call too.
    ShapesDataset(data_root=shapes_root, lazy_init=True, **SMALL)
    assert _mtimes(shapes_root) == before


def test_leftover_temp_dirs_do_not_break_generation(tmp_path, shapes_root):
    root = tmp_path / 'shapes'
    # A killed run left a half-written temp dir (recent) and an old one.
    fresh = tmp_path / '.shapes.tmp-1234-dead'
    old = tmp_path / '.shapes.tmp-999-old'
    for leftover in (fresh, old):
        (leftover / 'annotations').mkdir(parents=True)
        (leftover / 'train').mkdir()
        (leftover / 'train' / '000001.png').write_bytes(b'trunc')
    os.utime(old, (0, 0))
    info = generate_shapes(root, **SMALL)
    assert info['generated'] is True
    assert _tree(root) == _tree(shapes_root)
    assert fresh.exists()  # might belong to a live generator: kept
    assert not old.exists()  # stale: removed


def test_other_parameters_replace_the_set(tmp_path):
    root = tmp_path / 'shapes'
    generate_shapes(root, num_train=3, num_val=2)
    assert len(os.listdir(root / 'train')) == 3
    info = generate_shapes(root, num_train=4, num_val=2)
    assert info['generated'] is True and info['num_train'] == 4
    assert len(os.listdir(root / 'train')) == 4
    assert _leftovers(tmp_path) == []


def test_refuses_to_replace_foreign_directories(tmp_path):
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'precious.txt').write_text('keep me')
    with pytest.raises(FileExistsError):
        generate_shapes(root, num_train=2, num_val=1)
    assert os.listdir(root) == ['precious.txt']
    # An empty directory is filled.
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert generate_shapes(empty, num_train=2, num_val=1)['generated']
    assert (empty / 'meta.json').is_file()


def test_losing_the_rename_race_discards_the_copy(tmp_path, monkeypatch,
                                                  shapes_root):
    """Another generator installs the set while this one is writing."""
    root = tmp_path / 'shapes'
    real_write_split = shapes_mod._write_split
    raced = []

    def write_split(tmp, split, *args):
        if not raced:
            raced.append(True)
            assert generate_shapes(root, **SMALL)['generated'] is True
        return real_write_split(tmp, split, *args)

    monkeypatch.setattr(shapes_mod, '_write_split', write_split)
    info = generate_shapes(root, **SMALL)
    assert raced and info['generated'] is False
    assert _tree(root) == _tree(shapes_root)
    assert _leftovers(tmp_path) == []


def test_concurrent_generators(tmp_path, shapes_root):
    root = tmp_path / 'shapes'
    results, errors = [], []

    def work():
        try:
            results.append(generate_shapes(root, **SMALL)['generated'])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 3 and any(results)
    assert _tree(root) == _tree(shapes_root)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('kwargs', [
    dict(num_train=0), dict(num_val=-1), dict(img_size=20),
    dict(seed=-1), dict(num_train=2.5), dict(seed=True)
])
def test_bad_parameters_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_shapes(tmp_path / 'x', **kwargs)
    assert not (tmp_path / 'x').exists()


def _gt_xyxy(coco):
    boxes = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        boxes.setdefault(ann['image_id'], []).append(
            ([x, y, x + w, y + h], ann['category_id'] - 1))
    return boxes


def test_dataset_builds_and_matches_the_json(shapes_root):
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmdet.structures import DetDataSample

    from mmgpd.registry import DATASETS
    assert DATASETS.get('ShapesDataset') is ShapesDataset
    assert ShapesDataset.PLAIN_TYPE == 'CocoDataset'
    gt = _gt_xyxy(_load(shapes_root, 'val'))
    cfg = dict(
        type='mmgpd.ShapesDataset', data_root=shapes_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), test_mode=True, **SMALL,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs')
        ])
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = MMDET_DATASETS.build(cfg)
    assert isinstance(ds, ShapesDataset) and len(ds) == 6
    assert ds.metainfo['classes'] == SHAPES_CLASSES
    assert len(ds.metainfo['palette']) == len(SHAPES_CLASSES)
    for i in range(len(ds)):
        sample = ds[i]
        assert sample['inputs'].shape == (3, 128, 128)
        data_sample = sample['data_samples']
        assert isinstance(data_sample, DetDataSample)
        boxes, labels = zip(*gt[data_sample.img_id])
        np.testing.assert_array_equal(
            data_sample.gt_instances.bboxes.tensor.numpy(),
            np.array(boxes, dtype=np.float32))
        np.testing.assert_array_equal(
            data_sample.gt_instances.labels.numpy(), labels)


def test_coco_metric_of_the_ground_truth_is_perfect(shapes_root):
    from mmdet.evaluation import CocoMetric
    ann_file = osp.join(shapes_root, 'annotations', 'instances_val.json')
    metric = CocoMetric(ann_file=ann_file, metric='bbox')
    metric.dataset_meta = dict(classes=SHAPES_CLASSES)
    gt = _gt_xyxy(_load(shapes_root, 'val'))
    samples = []
    for img_id, objs in gt.items():
        boxes, labels = zip(*objs)
        samples.append(dict(
            img_id=img_id, ori_shape=(128, 128),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32),
                scores=torch.ones(len(boxes)),
                labels=torch.tensor(labels))))
    metric.process({}, samples)
    results = metric.evaluate(len(samples))
    assert results['coco/bbox_mAP'] == 1.0
    assert results['coco/bbox_mAP_50'] == 1.0
    assert results['coco/bbox_mAP_75'] == 1.0


def _tiny_config(tmp_path, data_root):
    cfg_file = tmp_path / 'tiny_shapes.py'
    cfg_file.write_text(
        f'_base_ = [{BASE_CFG!r}, "mmdet::_base_/default_runtime.py"]\n'
        f'data_root = {data_root + "/"!r}\n'
        f'shapes = dict(num_train=12, num_val=6)\n'
        'train_dataloader = dict(dataset=dict(data_root=data_root, '
        '**shapes))\n'
        'val_dataloader = dict(dataset=dict(data_root=data_root, '
        '**shapes))\n'
        'test_dataloader = val_dataloader\n'
        'val_evaluator = dict(ann_file=data_root + '
        '"annotations/instances_val.json")\n'
        'test_evaluator = val_evaluator\n')
    return Config.fromfile(str(cfg_file))


def test_base_config_parses_and_builds(tmp_path, shapes_root):
    from mmdet.registry import DATASETS as MMDET_DATASETS
    base = Config.fromfile(BASE_CFG)
    assert base.dataset_type == 'mmgpd.ShapesDataset'
    assert base.data_root == 'data/shapes/'
    assert 'default_scope' not in base
    assert base.train_dataloader.batch_size == 8
    assert base.val_evaluator.ann_file == (
        'data/shapes/annotations/instances_val.json')
    assert base.test_evaluator == base.val_evaluator

    cfg = _tiny_config(tmp_path, shapes_root)
    assert cfg.default_scope == 'mmdet'
    assert cfg.train_dataloader.dataset.type == 'mmgpd.ShapesDataset'
    assert osp.isfile(cfg.val_evaluator.ann_file)
    with DefaultScope.overwrite_default_scope('mmdet'):
        train = MMDET_DATASETS.build(cfg.train_dataloader.dataset)
        val = MMDET_DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 12 and len(val) == 6
    for ds in (train, val):
        meta = ds[0]['data_samples'].metainfo
        assert meta['img_shape'] == (128, 128)
        assert meta['ori_shape'] == (128, 128)
        np.testing.assert_allclose(meta['scale_factor'], (1.0, 1.0))


def test_plain_cfg_builds_in_vanilla_mmdet(tmp_path, shapes_root):
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS as MMDET_DATASETS
    cfg = _tiny_config(tmp_path, shapes_root)
    for loader in ('train_dataloader', 'val_dataloader'):
        shapes_cfg = cfg[loader].dataset
        plain = ShapesDataset.plain_cfg(shapes_cfg)
        assert plain['type'] == 'CocoDataset'
        assert not set(ShapesDataset.SHAPES_KEYS) & set(plain)
        assert plain['metainfo']['classes'] == SHAPES_CLASSES
        assert len(plain['metainfo']['palette']) == len(SHAPES_CLASSES)
        for key in ('data_root', 'ann_file', 'data_prefix', 'pipeline'):
            assert plain[key] == shapes_cfg[key]
        assert plain.get('test_mode') == shapes_cfg.get('test_mode')
        assert plain.get('filter_cfg') == shapes_cfg.get('filter_cfg')
        assert shapes_cfg.type == 'mmgpd.ShapesDataset'  # input untouched
        # It survives a dump to a config file.
        dumped = tmp_path / f'plain_{loader}.py'
        Config(dict(dataset=plain)).dump(str(dumped))
        plain = Config.fromfile(str(dumped)).dataset

        with DefaultScope.overwrite_default_scope('mmdet'):
            vanilla = MMDET_DATASETS.build(plain)
            ours = MMDET_DATASETS.build(shapes_cfg)
        assert type(vanilla) is CocoDataset
        assert vanilla.metainfo['classes'] == ours.metainfo['classes']
        assert len(vanilla) == len(ours) > 0
        for i in range(len(ours)):
            assert vanilla.get_data_info(i) == ours.get_data_info(i)


def test_plain_cfg_spells_out_defaults():
    plain = ShapesDataset.plain_cfg(
        dict(type=ShapesDataset, generate=False, seed=3, img_size=64,
             metainfo=dict(palette=[(1, 2, 3)] * 4)))
    assert plain == dict(
        type='CocoDataset', data_root='data/shapes',
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=SHAPES_CLASSES, palette=[(1, 2, 3)] * 4))
    with pytest.raises(ValueError, match='ShapesDataset'):
        ShapesDataset.plain_cfg(dict(type='CocoDataset'))


# ---------------------------------------------------------------------------
# Instance masks
# ---------------------------------------------------------------------------
def test_mask_to_rle_by_hand():
    # column-major: columns (0, 1, 0), (1, 1, 0) -> 0 1 0 1 1 0
    mask = np.array([[0, 1], [1, 1], [0, 0]], dtype=bool)
    assert shapes_mod.mask_to_rle(mask) == dict(size=[3, 2],
                                                counts=[1, 1, 1, 2, 1])
    # a mask starting with a set pixel starts with an empty 0-run
    assert shapes_mod.mask_to_rle(np.ones((2, 2), bool)) == dict(
        size=[2, 2], counts=[0, 4])
    assert shapes_mod.mask_to_rle(np.zeros((2, 3), bool)) == dict(
        size=[2, 3], counts=[6])
    with pytest.raises(ValueError, match='2-D'):
        shapes_mod.mask_to_rle(np.zeros(4, bool))


#: Fraction of its tight box a shape of each class fills (square: all of it;
#: circle: ~pi/4; triangle: ~1/2; cross: arms of 24-40 % of the side, so
#: 2a - a^2 in 0.42-0.64 for a = arm / side, widened for pixel rounding).
FILL = dict(square=(1.0, 1.0), circle=(0.75, 0.84), triangle=(0.48, 0.56),
            cross=(0.34, 0.70))


@pytest.mark.parametrize('split', ['train', 'val'])
def test_masks_are_the_drawn_pixels(shapes_root, split):
    from pycocotools import mask as mask_utils
    coco = _load(shapes_root, split)
    anns_by_img = {}
    for ann in coco['annotations']:
        anns_by_img.setdefault(ann['image_id'], []).append(ann)
    fills = {name: [] for name in SHAPES_CLASSES}
    for info in coco['images']:
        _, objects = render_shapes_image(0, split, info['id'] - 1, 128)
        anns = anns_by_img[info['id']]
        for ann, obj in zip(anns, objects):
            seg = ann['segmentation']
            assert seg['size'] == [128, 128]
            rle = mask_utils.frPyObjects(seg, 128, 128)
            mask = mask_utils.decode(rle).astype(bool)
            np.testing.assert_array_equal(mask, obj['mask'])
            # the tight box of the mask is the gt box, its area the gt area
            rows, cols = np.nonzero(mask)
            assert ann['bbox'] == [int(cols.min()), int(rows.min()),
                                   int(np.ptp(cols)) + 1,
                                   int(np.ptp(rows)) + 1]
            assert ann['area'] == int(mask.sum()) == int(
                mask_utils.area(rle))
            x, y, w, h = ann['bbox']
            name = SHAPES_CLASSES[ann['category_id'] - 1]
            fills[name].append(ann['area'] / (w * h))
    for name, values in fills.items():
        lo, hi = FILL[name]
        assert all(lo <= v <= hi for v in values), (name, values)


def test_dataset_loads_masks_only_when_asked(shapes_root):
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmdet.structures.mask import BitmapMasks

    def build(with_mask):
        cfg = dict(
            type='mmgpd.ShapesDataset', data_root=shapes_root,
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'), **SMALL,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True,
                     with_mask=with_mask),
                dict(type='PackDetInputs')
            ])
        with DefaultScope.overwrite_default_scope('mmdet'):
            return MMDET_DATASETS.build(cfg)

    with_masks, boxes_only = build(True), build(False)
    for i in range(len(with_masks)):
        sample = with_masks[i]['data_samples']
        plain = boxes_only[i]['data_samples']
        _, objects = render_shapes_image(0, 'train', sample.img_id - 1, 128)
        masks = sample.gt_instances.masks
        assert isinstance(masks, BitmapMasks) and len(masks) == len(objects)
        np.testing.assert_array_equal(
            masks.to_ndarray().astype(bool),
            np.stack([o['mask'] for o in objects]))
        np.testing.assert_array_equal(sample.gt_instances.bboxes.tensor,
                                      plain.gt_instances.bboxes.tensor)
        # a box-only pipeline is what it was: no masks
        assert 'masks' not in plain.gt_instances


def test_coco_metric_of_the_ground_truth_masks_is_perfect(shapes_root):
    from mmdet.evaluation import CocoMetric
    ann_file = osp.join(shapes_root, 'annotations', 'instances_val.json')
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=SHAPES_CLASSES)
    samples = []
    for img_id in range(1, 7):
        _, objects = render_shapes_image(0, 'val', img_id - 1, 128)
        boxes = [[o['bbox'][0], o['bbox'][1], o['bbox'][0] + o['bbox'][2],
                  o['bbox'][1] + o['bbox'][3]] for o in objects]
        samples.append(dict(
            img_id=img_id, ori_shape=(128, 128),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32),
                scores=torch.ones(len(objects)),
                labels=torch.tensor([o['label'] for o in objects]),
                masks=torch.from_numpy(np.stack([o['mask']
                                                 for o in objects])))))
    metric.process({}, samples)
    results = metric.evaluate(len(samples))
    assert results['coco/segm_mAP'] == 1.0
    assert results['coco/bbox_mAP'] == 1.0
    # a mask off by its outer pixels is not perfect: the metric reads masks
    for s in samples:
        m = s['pred_instances']['masks'].numpy()
        s['pred_instances']['masks'] = torch.from_numpy(
            np.stack([x & ~shapes_mod._dilate(~x, 3) for x in m]))
    metric = CocoMetric(ann_file=ann_file, metric='segm')
    metric.dataset_meta = dict(classes=SHAPES_CLASSES)
    metric.process({}, samples)
    assert metric.evaluate(len(samples))['coco/segm_mAP'] < 1.0
