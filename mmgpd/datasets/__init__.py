"""Datasets and transforms (registered in ``mmgpd.registry.DATASETS`` / ``TRANSFORMS``)."""
from .digits import DigitsDataset

__all__ = ['DigitsDataset']
