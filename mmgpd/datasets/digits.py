"""scikit-learn's handwritten digits as an mmpretrain-style dataset.

The data (1797 real 8x8 grayscale images with values 0..16, 10 classes) ship
inside scikit-learn, so this dataset needs no download and no ``data_root``:
it is the project's default, always-available dataset for tests, examples and
small-scale experiments.
"""
from typing import List, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset

from mmgpd.registry import DATASETS

__all__ = ['DigitsDataset']

#: The only random state the train/test split is ever drawn with.
SPLIT_RANDOM_STATE = 0


def _load_digits():
    """Return ``(images, labels)``: float64 ``(1797, 8, 8)`` in 0..16, int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _stratified_subset(labels: np.ndarray, fraction: float,
                       seed: int) -> np.ndarray:
    """Positions (sorted) of a stratified ``fraction`` of ``labels``.

    Every class keeps ``round(fraction * count)`` of its samples, at least
    one, chosen with ``np.random.RandomState(seed)``.
    """
    rng = np.random.RandomState(seed)
    keep = []
    for cls in np.unique(labels):
        positions = np.flatnonzero(labels == cls)
        n_keep = max(1, int(round(fraction * len(positions))))
        keep.append(rng.permutation(positions)[:n_keep])
    return np.sort(np.concatenate(keep))


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """scikit-learn's handwritten digits (``sklearn.datasets.load_digits``).

    The 1797 images are split once into a fixed, stratified train/test split
    (``random_state=0``), so the splits are the same on every machine. Images
    are upscaled by nearest neighbour (8x8 -> 32x32 with the default
    ``upscale=4``), their values scaled from 0..16 to 0..255 and repeated over
    three identical channels, so each sample is a ``uint8`` ``H x W x 3``
    ``img`` with an integer ``gt_label`` like mmpretrain's CIFAR datasets.

    Args:
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        test_size (float): Fraction of the 1797 images in the test split,
            in (0, 1). Defaults to 0.25 (1347 train / 450 test images).
        train_fraction (float): For a low-data regime, keep only a fixed,
            stratified subset of this fraction of the *training* split
            (each class keeps ``round(train_fraction * count)`` images, at
            least one). Must be in (0, 1]; ignored for ``split='test'``.
            Defaults to 1.0 (the whole training split).
        subset_seed (int): Seed of the ``train_fraction`` subset.
            Defaults to 0.
        upscale (int): Nearest-neighbour upscaling factor of the 8x8 images.
            Defaults to 4 (32x32 images).
        pipeline (Sequence): Processing pipeline. Defaults to ().
        test_mode (bool): Whether the dataset is used for testing.
            Defaults to False.
        lazy_init (bool): Whether to defer loading the data until first use.
            Defaults to False.
        **kwargs: Other keyword arguments of
            :class:`mmpretrain.datasets.BaseDataset` (e.g. ``metainfo``,
            ``indices``). ``ann_file`` and ``data_root`` are not needed.

    Raises:
        ValueError: If ``split``, ``test_size``, ``train_fraction`` or
            ``upscale`` has an invalid value.
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 test_size: float = 0.25,
                 train_fraction: float = 1.0,
                 subset_seed: int = 0,
                 upscale: int = 4,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(
                f"split must be 'train' or 'test', got {split!r}")
        if not 0.0 < float(test_size) < 1.0:
            raise ValueError(f'test_size must be in (0, 1), got {test_size!r}')
        if not 0.0 < float(train_fraction) <= 1.0:
            raise ValueError(
                f'train_fraction must be in (0, 1], got {train_fraction!r}')
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(
                f'upscale must be a positive integer, got {upscale!r}')
        self.split = split
        self.test_size = float(test_size)
        self.train_fraction = float(train_fraction)
        self.subset_seed = int(subset_seed)
        self.upscale = int(upscale)
        # The data live in memory: no annotation file, no data root.
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('data_root', '')
        super().__init__(
            pipeline=pipeline,
            test_mode=test_mode,
            lazy_init=lazy_init,
            **kwargs)

    def _split_indices(self, labels: np.ndarray) -> np.ndarray:
        """Sorted indices (into the 1797 images) of this dataset's samples."""
        from sklearn.model_selection import train_test_split

        train_idx, test_idx = train_test_split(
            np.arange(len(labels)),
            test_size=self.test_size,
            random_state=SPLIT_RANDOM_STATE,
            stratify=labels)
        if self.split == 'test':
            return np.sort(test_idx)
        train_idx = np.sort(train_idx)
        if self.train_fraction < 1.0:
            keep = _stratified_subset(labels[train_idx], self.train_fraction,
                                      self.subset_seed)
            train_idx = train_idx[keep]
        return train_idx

    def load_data_list(self) -> List[dict]:
        """Load the images and ground-truth labels of the split.

        Returns:
            list[dict]: One dict per sample with ``img`` (``np.uint8``,
            ``8*upscale x 8*upscale x 3``), ``gt_label`` (int) and
            ``source_idx`` (int, the index among sklearn's 1797 images).
        """
        images, labels = _load_digits()
        indices = self._split_indices(labels)

        imgs = np.round(images[indices] * (255.0 / 16.0))
        imgs = np.clip(imgs, 0, 255).astype(np.uint8)
        if self.upscale > 1:
            imgs = imgs.repeat(self.upscale, axis=1).repeat(
                self.upscale, axis=2)
        imgs = np.repeat(imgs[..., None], 3, axis=-1)  # N x H x W x 3

        return [
            dict(img=np.ascontiguousarray(img), gt_label=int(label),
                 source_idx=int(idx))
            for img, label, idx in zip(imgs, labels[indices], indices)
        ]

    def get_source_indices(self) -> np.ndarray:
        """Indices (among sklearn's 1797 images) of this dataset's samples."""
        return np.array(
            [self.get_data_info(i)['source_idx'] for i in range(len(self))],
            dtype=np.int64)

    def extra_repr(self) -> List[str]:
        """The extra repr information of the dataset."""
        return [
            f'Split: \t{self.split}',
            f'Test size: \t{self.test_size}',
            f'Train fraction: \t{self.train_fraction}',
            f'Upscale: \t{self.upscale}',
        ]
