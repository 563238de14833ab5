"""Test and benchmark helpers (like ``mmdet.testing``): the model zoo that the
reparameterization tests and ``benchmarks/`` share."""
from .zoo import (CLASSIFIERS, DETECTORS, FAMILIES, HEADS, TRANSFORMERS, build,
                  has_branch_convs, input_for, randomize_norms, ratios_for)

__all__ = [
    'CLASSIFIERS', 'DETECTORS', 'TRANSFORMERS', 'HEADS', 'FAMILIES', 'build',
    'input_for', 'randomize_norms', 'ratios_for', 'has_branch_convs'
]
