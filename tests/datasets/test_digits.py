"""DigitsDataset (sklearn's embedded handwritten digits) and its base configs."""
import os

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmgpd.datasets import DigitsDataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DATASET_CFG = os.path.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                           'digits.py')
BASELINE_CFG = os.path.join(REPO_ROOT, 'configs', 'baselines',
                            'resnet_digits.py')
N_DIGITS = 1797


def _labels(ds):
    return np.array([ds.get_data_info(i)['gt_label'] for i in range(len(ds))])


@pytest.fixture(scope='module')
def train_set():
    return DigitsDataset(split='train')


@pytest.fixture(scope='module')
def test_set():
    return DigitsDataset(split='test')


def test_split_sizes_are_fixed_and_disjoint(train_set, test_set):
    assert len(train_set) == 1347 and len(test_set) == 450
    train_idx = train_set.get_source_indices()
    test_idx = test_set.get_source_indices()
    assert len(train_idx) + len(test_idx) == N_DIGITS
    assert not set(train_idx) & set(test_idx)
    assert set(train_idx) | set(test_idx) == set(range(N_DIGITS))
    # The same split on every call.
    np.testing.assert_array_equal(
        DigitsDataset(split='train').get_source_indices(), train_idx)
    np.testing.assert_array_equal(
        DigitsDataset(split='test').get_source_indices(), test_idx)


def test_splits_are_stratified(train_set, test_set):
    from sklearn.datasets import load_digits
    full = np.bincount(load_digits().target, minlength=10) / N_DIGITS
    for ds in (train_set, test_set):
        freq = np.bincount(_labels(ds), minlength=10) / len(ds)
        assert np.all(freq > 0)
        np.testing.assert_allclose(freq, full, atol=0.01)


def test_train_fraction_is_a_fixed_stratified_subset(train_set):
    sub = DigitsDataset(split='train', train_fraction=0.1)
    idx = sub.get_source_indices()
    assert 120 <= len(sub) <= 150
    assert set(idx) <= set(train_set.get_source_indices())
    counts = np.bincount(_labels(sub), minlength=10)
    assert counts.min() >= 12 and counts.max() <= 15
    # Fixed: the same subset every call ...
    np.testing.assert_array_equal(
        DigitsDataset(split='train', train_fraction=0.1).get_source_indices(),
        idx)
    # ... and another one for another seed.
    other = DigitsDataset(split='train', train_fraction=0.1, subset_seed=1)
    assert len(other) == len(sub)
    assert not np.array_equal(other.get_source_indices(), idx)
    # The test split is never subsampled.
    assert len(DigitsDataset(split='test', train_fraction=0.1)) == 450


def test_images_and_labels(train_set, test_set):
    for ds in (train_set, test_set):
        imgs = np.stack([ds.get_data_info(i)['img'] for i in range(len(ds))])
        assert imgs.dtype == np.uint8 and imgs.shape[1:] == (32, 32, 3)
        assert imgs.max() == 255 and imgs.min() == 0
        # Three identical channels, 4x4 nearest-neighbour blocks.
        assert np.array_equal(imgs[..., 0], imgs[..., 1])
        assert np.array_equal(imgs[..., 0], imgs[..., 2])
        assert np.array_equal(imgs[:, ::4, ::4].repeat(4, 1).repeat(4, 2),
                              imgs)
        labels = _labels(ds)
        assert set(labels.tolist()) == set(range(10))
        assert all(isinstance(ds.get_data_info(i)['gt_label'], int)
                   for i in range(3))
    assert train_set.metainfo['classes'] == tuple(str(i) for i in range(10))


def test_upscale_and_pixel_values_match_sklearn(test_set):
    from sklearn.datasets import load_digits
    images = load_digits().images
    info = test_set.get_data_info(0)
    expected = np.round(images[info['source_idx']] * 255 / 16)
    np.testing.assert_array_equal(info['img'][::4, ::4, 0], expected)
    small = DigitsDataset(split='test', upscale=1)
    assert small.get_data_info(0)['img'].shape == (8, 8, 3)


@pytest.mark.parametrize('kwargs, name', [
    (dict(split='val'), 'split'),
    (dict(split='Train'), 'split'),
    (dict(train_fraction=0.0), 'train_fraction'),
    (dict(train_fraction=1.5), 'train_fraction'),
    (dict(train_fraction=-0.1), 'train_fraction'),
    (dict(test_size=1.0), 'test_size'),
    (dict(upscale=0), 'upscale'),
])
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DigitsDataset(**kwargs)


def test_lazy_init():
    ds = DigitsDataset(split='test', lazy_init=True)
    assert not ds._fully_initialized
    assert len(ds) == 450


def test_builds_from_config_under_mmpretrain_scope():
    import torch
    from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
    from mmpretrain.structures import DataSample

    cfg = Config.fromfile(DATASET_CFG)
    assert cfg.dataset_type == 'mmgpd.DigitsDataset'
    assert 'default_scope' not in cfg
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        train = MMPRETRAIN_DATASETS.build(cfg.train_dataloader.dataset)
        test = MMPRETRAIN_DATASETS.build(cfg.test_dataloader.dataset)
        flipped = MMPRETRAIN_DATASETS.build(dict(
            type='mmgpd.DigitsDataset', split='test', pipeline=[
                dict(type='RandomCrop', crop_size=32, padding=2),
                dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                dict(type='PackInputs'),
            ]))
    assert isinstance(train, DigitsDataset) and len(train) == 1347
    assert isinstance(test, DigitsDataset) and len(test) == 450
    for ds in (train, test, flipped):
        sample = ds[0]
        assert isinstance(sample['inputs'], torch.Tensor)
        assert sample['inputs'].shape == (3, 32, 32)
        assert sample['inputs'].dtype == torch.uint8
        assert isinstance(sample['data_samples'], DataSample)
        assert 0 <= int(sample['data_samples'].gt_label) <= 9
    assert flipped[0]['data_samples'].flip is True


def test_dataset_config_statistics_match_the_data(train_set):
    cfg = Config.fromfile(DATASET_CFG)
    imgs = np.stack([train_set.get_data_info(i)['img']
                     for i in range(len(train_set))]).astype(np.float64)
    pre = cfg.data_preprocessor
    assert pre.num_classes == 10 and pre.to_rgb is False
    np.testing.assert_allclose(pre.mean, [imgs.mean()] * 3, atol=0.05)
    np.testing.assert_allclose(pre.std, [imgs.std()] * 3, atol=0.05)


def test_resnet_digits_baseline_trains_one_epoch(tmp_path):
    from mmengine.runner import Runner

    cfg = Config.fromfile(BASELINE_CFG)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.train_dataloader.dataset.type == 'mmgpd.DigitsDataset'
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.logger.interval = 50
    runner = Runner.from_cfg(cfg)
    # The dataset base's data_preprocessor reaches the model.
    mean = runner.model.data_preprocessor.mean.flatten().tolist()
    assert mean == pytest.approx([77.85] * 3)
    runner.train()
    metrics = runner.val_loop.run()
    assert 'accuracy/top1' in metrics
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    assert any(f.endswith('.pth') for f in os.listdir(tmp_path))
