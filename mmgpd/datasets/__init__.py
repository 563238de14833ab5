"""Datasets and transforms (registered in ``mmgpd.registry.DATASETS`` / ``TRANSFORMS``)."""
from .digits import DigitsDataset
from .shapes import ShapesDataset, generate_shapes

__all__ = ['DigitsDataset', 'ShapesDataset', 'generate_shapes']
